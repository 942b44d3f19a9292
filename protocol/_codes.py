"""Text that people type or paste: the alphabet, the check characters, the swarm join code.

Codes are read off screens, dictated and pasted into terminals, so parsing forgives case,
spaces, dashes and the usual look-alikes (0 for O, 1 for I, 8 for B), and check characters
catch a typo before it turns into a confusing "peer refused" later on.

Node ids (in `_identity`) use the Syncthing scheme: base32 in groups, each group closed by a
Luhn mod 32 check character, which catches every single-character substitution. The join
code carries a 256-bit secret and so is long; it ends with a 32-bit checksum instead, which
catches any number of typos except with probability 2**-32.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from ._crypto import PERSON_JOIN_CODE, Rng, default_rng
from ._errors import CodeError, LocalProtocolError

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
# The characters base32 lacks, mapped to the letters people mean by them.
_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})
_SEPARATORS = re.compile(r"[\s\-_.:,/]+")


def normalize(text: str) -> str:
    """Upper-case `text`, drop separators and whitespace, and map look-alike digits."""
    return _SEPARATORS.sub("", text).upper().translate(_LOOKALIKES)


def b32encode(data: bytes) -> str:
    """Unpadded RFC 4648 base32."""
    return base64.b32encode(data).decode("ascii").rstrip("=")


def b32decode(text: str, size: int) -> bytes | None:
    """Decode unpadded base32 into exactly `size` bytes; None if `text` is not canonical."""
    if any(c not in _VALUE for c in text):
        return None
    try:
        data = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return None
    # Re-encoding rejects texts whose unused trailing bits are set: one id, one spelling.
    if len(data) != size or b32encode(data) != text:
        return None
    return data


def luhn32(text: str) -> str:
    """The Luhn mod 32 check character of `text` (characters of `ALPHABET`)."""
    total = 0
    factor = 2  # doubling starts at the rightmost character, as in decimal Luhn
    for char in reversed(text):
        addend = factor * _VALUE[char]
        total += addend // 32 + addend % 32
        factor = 3 - factor
    return ALPHABET[-total % 32]


def group(text: str, size: int, sep: str = "-") -> str:
    """Split `text` into groups of `size` characters joined by `sep`."""
    return sep.join(text[i : i + size] for i in range(0, len(text), size))


def bad_characters(text: str) -> str:
    """The characters of a normalized `text` that base32 cannot hold, for error messages."""
    return "".join(sorted({c for c in text if c not in _VALUE}))


_JOIN_PREFIX = "OCTO"
_JOIN_VERSION = 1
SWARM_ID_BYTES = 8
SWARM_SECRET_BYTES = 32
_JOIN_CHECK_BYTES = 4
# version + swarm id + secret + checksum = 45 bytes = exactly 72 base32 characters.
_JOIN_BYTES = 1 + SWARM_ID_BYTES + SWARM_SECRET_BYTES + _JOIN_CHECK_BYTES
_JOIN_CHARS = _JOIN_BYTES * 8 // 5


def _join_check(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_JOIN_CHECK_BYTES, person=PERSON_JOIN_CODE).digest()


@dataclass(frozen=True, repr=False)
class SwarmCode:
    """A swarm join code: the swarm's id and its 256-bit secret, as text people can paste.

    `str(code)` gives `OCTO-XXXXXX-...` (12 groups of 6); `SwarmCode.parse` accepts it in
    any case, with or without separators, and rejects a mistyped code. The repr hides the
    secret so that logging a code never leaks it.
    """

    swarm_id: bytes
    secret: bytes

    def __post_init__(self) -> None:
        if type(self.swarm_id) is not bytes or len(self.swarm_id) != SWARM_ID_BYTES:
            raise LocalProtocolError(f"a swarm id is {SWARM_ID_BYTES} bytes")
        if type(self.secret) is not bytes or len(self.secret) != SWARM_SECRET_BYTES:
            raise LocalProtocolError(f"a swarm secret is {SWARM_SECRET_BYTES} bytes")

    @classmethod
    def generate(cls, rng: Rng = default_rng) -> SwarmCode:
        """Make a new swarm: a random id and a random secret."""
        return cls(rng(SWARM_ID_BYTES), rng(SWARM_SECRET_BYTES))

    @classmethod
    def parse(cls, text: str) -> SwarmCode:
        """Read a join code typed or pasted by a person; raise `CodeError` if it is wrong."""
        chars = normalize(text)
        if chars.startswith(_JOIN_PREFIX):
            chars = chars[len(_JOIN_PREFIX) :]
        if len(chars) != _JOIN_CHARS:
            raise CodeError(
                f"a swarm join code has {_JOIN_CHARS} characters after 'OCTO', this one has "
                f"{len(chars)}: copy the whole code printed by `octop2p swarm create`"
            )
        if bad := bad_characters(chars):
            raise CodeError(f"a swarm join code cannot contain {bad!r}: check for typos")
        data = b32decode(chars, _JOIN_BYTES)
        if data is None or _join_check(data[:-_JOIN_CHECK_BYTES]) != data[-_JOIN_CHECK_BYTES:]:
            raise CodeError("this swarm join code has a typo (its checksum does not match)")
        if data[0] != _JOIN_VERSION:
            raise CodeError(
                f"this join code is format {data[0]}, this octop2p reads format "
                f"{_JOIN_VERSION}: update octop2p"
            )
        return cls(data[1 : 1 + SWARM_ID_BYTES], data[1 + SWARM_ID_BYTES : -_JOIN_CHECK_BYTES])

    def __str__(self) -> str:
        body = bytes([_JOIN_VERSION]) + self.swarm_id + self.secret
        return _JOIN_PREFIX + "-" + group(b32encode(body + _join_check(body)), 6)

    def __repr__(self) -> str:
        return f"SwarmCode(swarm_id={self.swarm_id.hex()}, secret=<hidden>)"
