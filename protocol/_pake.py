"""One-time job codes for `octop2p server` / `octop2p client HOST --code CODE`.

A job code is twelve digits, `1234-5678-9012`: eleven random digits (36 bits) and a Luhn
check digit that catches a mistyped digit, or swapped neighbours (but 09/90), before
connecting. It is
short enough to read aloud, so it must not be offline-guessable: it is never sent, hashed
or used as a key directly. Instead it is the password of a SPAKE2 exchange (the `spake2`
package) run inside the handshake; the SPAKE2 key replaces the swarm secret there. A
passive observer learns nothing about the code, and an active attacker can test exactly
one guess per handshake, which the server limits (see `MAX_FAILED_ATTEMPTS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._crypto import Rng, default_rng
from ._errors import CodeError, LocalProtocolError, RemoteProtocolError

_RANDOM_DIGITS = 11
#: Suggested limit of failed handshakes before a server retires its code: an attacker's
#: chance of guessing in that many tries stays below 1 in 10**9.
MAX_FAILED_ATTEMPTS = 20
#: Length of a SPAKE2 message on the wire (side byte + an Ed25519 group element).
PAKE_MESSAGE_BYTES = 33
# Fixed identities bind the exchange to this protocol and these roles.
_ID_CLIENT = b"octop2p job code client"
_ID_SERVER = b"octop2p job code server"
_SEPARATORS = re.compile(r"[\s\-_.:,/]+")


def _luhn10(digits: str) -> str:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


@dataclass(frozen=True, repr=False)
class JobCode:
    """A one-time code that admits a client to one job, printed as `1234-5678-9012`."""

    digits: str  #: the eleven random digits (without the check digit)

    def __post_init__(self) -> None:
        if type(self.digits) is not str or not re.fullmatch(r"[0-9]{11}", self.digits):
            raise LocalProtocolError(f"a job code holds {_RANDOM_DIGITS} digits")

    @classmethod
    def generate(cls, rng: Rng = default_rng) -> JobCode:
        """A fresh random code."""
        # 8 random bytes reduced mod 10**11: the bias (below 10**-8) gives no useful edge.
        value = int.from_bytes(rng(8), "big") % 10**_RANDOM_DIGITS
        return cls(f"{value:0{_RANDOM_DIGITS}d}")

    @classmethod
    def parse(cls, text: str) -> JobCode:
        """Read a code a person typed; raise `CodeError` if it is malformed or mistyped."""
        digits = _SEPARATORS.sub("", text)
        if not re.fullmatch(r"[0-9]{12}", digits):
            raise CodeError(
                f"a job code is 12 digits like 1234-5678-9012, not {text.strip()!r}: "
                "copy it from the `octop2p server` output"
            )
        if _luhn10(digits[:-1]) != digits[-1]:
            raise CodeError(f"job code {text.strip()!r} has a typo (its check digit is wrong)")
        return cls(digits[:-1])

    def __str__(self) -> str:
        full = self.digits + _luhn10(self.digits)
        return f"{full[:4]}-{full[4:8]}-{full[8:]}"

    def __repr__(self) -> str:
        return "JobCode(<hidden>)"


class PakeExchange:
    """One side of the SPAKE2 exchange keyed by a job code (client = handshake initiator)."""

    def __init__(self, code: JobCode, *, client: bool, rng: Rng) -> None:
        password = code.digits.encode("ascii")
        import spake2  # only a job-code handshake needs it (pure Python, slow to import)

        side = spake2.SPAKE2_A if client else spake2.SPAKE2_B
        self._spake = side(password, idA=_ID_CLIENT, idB=_ID_SERVER, entropy_f=rng)
        #: This side's message, to be sent to the peer.
        self.message: bytes = self._spake.start()

    def finish(self, peer_message: bytes) -> bytes:
        """The 32-byte shared key; equal on both sides only if both used the same code."""
        if len(peer_message) != PAKE_MESSAGE_BYTES:
            raise RemoteProtocolError("the peer's job-code (SPAKE2) message has the wrong size")
        try:
            key: bytes = self._spake.finish(peer_message)
        except Exception as e:  # spake2 raises ValueError, its own errors and asserts
            raise RemoteProtocolError(
                f"the peer's job-code (SPAKE2) message is invalid ({type(e).__name__})"
            ) from None
        return key
