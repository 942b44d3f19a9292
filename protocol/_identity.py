"""Node identities: an Ed25519 key, and the short node id people compare and type.

The node id is the first 128 bits of a BLAKE2b hash of the public key, written in base32
as four groups of seven characters, Syncthing style: each half of the id ends with a Luhn
mod 32 check character, so a mistyped id is caught when it is read, before any network
traffic. 128 bits keep a second key with the same id out of reach (2**128 work).

The key is stored as a few lines of text that the node writes to a file of mode 0600;
this module only turns the key into bytes and back, it does no file I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ._codes import b32decode, b32encode, bad_characters, group, luhn32, normalize
from ._crypto import PERSON_NODE_ID, Rng, default_rng
from ._errors import CodeError, KeyFileError, LocalProtocolError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32
NODE_ID_BYTES = 16
_HALF = 13  # 26 base32 characters of digest, in two halves of 13 plus a check each
_ID_CHARS = 2 * (_HALF + 1)


@dataclass(frozen=True, order=True)
class NodeId:
    """The id of a node: a hash of its public key, shown as `XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX`.

    Compare ids with `==`; keep them in sets (the pinned set of the handshake). Make one
    from a key with `NodeId.from_public_key`, or from text with `NodeId.parse`.
    """

    digest: bytes

    def __post_init__(self) -> None:
        if type(self.digest) is not bytes or len(self.digest) != NODE_ID_BYTES:
            raise LocalProtocolError(f"a node id digest is {NODE_ID_BYTES} bytes")

    @classmethod
    def from_public_key(cls, public_key: bytes) -> NodeId:
        """The id of the node whose Ed25519 public key is `public_key`."""
        h = hashlib.blake2b(public_key, digest_size=NODE_ID_BYTES, person=PERSON_NODE_ID)
        return cls(h.digest())

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Read an id typed by a person; raise `CodeError` naming the typo if it is wrong."""
        chars = normalize(text)
        if len(chars) != _ID_CHARS:
            raise CodeError(
                f"a node id has {_ID_CHARS} letters and digits (4 groups of 7), "
                f"{text.strip()!r} has {len(chars)}"
            )
        if bad := bad_characters(chars):
            raise CodeError(f"a node id cannot contain {bad!r}: check {text.strip()!r}")
        halves = chars[: _HALF + 1], chars[_HALF + 1 :]
        for number, half in enumerate(halves, 1):
            if luhn32(half[:-1]) != half[-1]:
                where = "first" if number == 1 else "second"
                raise CodeError(
                    f"node id {text.strip()!r} has a typo in its {where} half "
                    "(the check character does not match)"
                )
        digest = b32decode(halves[0][:-1] + halves[1][:-1], NODE_ID_BYTES)
        if digest is None:
            raise CodeError(f"{text.strip()!r} is not a node id (its last group is invalid)")
        return cls(digest)

    def __str__(self) -> str:
        body = b32encode(self.digest)
        first, second = body[:_HALF], body[_HALF:]
        return group(first + luhn32(first) + second + luhn32(second), 7)

    def __repr__(self) -> str:
        return f"NodeId({str(self)!r})"

    @property
    def short(self) -> str:
        """The first group of the id: enough to tell peers apart in a log line."""
        return str(self)[:7]


class NodeIdentity:
    """A node's Ed25519 key pair: what it signs handshakes and envelopes with.

    `NodeIdentity.generate()` makes a new one; `to_bytes()` / `from_bytes()` store it
    (the caller writes the file, mode 0600). The repr shows the id, never the key.
    """

    __slots__ = ("_signing_key", "_secret", "public_key", "node_id")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != SEED_BYTES:
            raise LocalProtocolError(f"an identity seed is {SEED_BYTES} bytes")
        self._signing_key = nacl.signing.SigningKey(seed)
        #: The 32-byte Ed25519 public key.
        self.public_key: bytes = bytes(self._signing_key.verify_key)
        # libsodium's 64-byte secret key, signed with directly: a node signs every
        # fragment it sends, and the wrapper objects cost a tenth of the signature.
        self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)[1]
        #: This node's id, derived from `public_key`.
        self.node_id: NodeId = NodeId.from_public_key(self.public_key)

    @classmethod
    def generate(cls, rng: Rng = default_rng) -> NodeIdentity:
        """A new identity from 32 bytes of `rng`."""
        return cls(rng(SEED_BYTES))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_BYTES]

    _HEADER = "octop2p node key v1"

    def to_bytes(self) -> bytes:
        """The identity as a few lines of text, to be stored in a file of mode 0600."""
        seed = bytes(self._signing_key).hex()
        return f"{self._HEADER}\nseed: {seed}\nid: {self.node_id}\n".encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeIdentity:
        """Load what `to_bytes` wrote; raise `KeyFileError` if it is damaged."""
        try:
            lines = data.decode("ascii").splitlines()
        except UnicodeDecodeError:
            raise KeyFileError("the node key file is not text: it is damaged") from None
        if len(lines) != 3 or lines[0] != cls._HEADER:
            raise KeyFileError(f"this is not an octop2p node key (expected {cls._HEADER!r})")
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        try:
            identity = cls(bytes.fromhex(fields["seed"]))
        except (KeyError, ValueError, LocalProtocolError):
            raise KeyFileError("the node key file has no valid seed: it is damaged") from None
        if fields.get("id") != str(identity.node_id):
            # The id line is redundant on purpose: it catches a flipped bit in the seed.
            raise KeyFileError("the node key does not match the id stored beside it: damaged")
        return identity

    def __repr__(self) -> str:
        return f"NodeIdentity({self.node_id})"


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if `signature` is `public_key`'s Ed25519 signature of `message`."""
    # libsodium directly (what VerifyKey.verify calls, without its wrappers): this runs
    # for every envelope received. The lengths are checked here, as VerifyKey would.
    if (type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES
            or type(signature) is not bytes or len(signature) != SIGNATURE_BYTES):
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True
