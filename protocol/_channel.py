"""The encrypted channel: one `crypto_secretstream_xchacha20poly1305` stream per direction.

Each record (one frame's body) is one secretstream message. The stream authenticates the
order of records, so a flipped bit, a replayed, reordered, dropped or truncated record
fails to decrypt, and any such failure ends the channel with a `RemoteProtocolError`.
Closing is authenticated too: the last record carries `TAG_FINAL`, so an attacker cannot
cut the stream short and pass it off as a clean close.

Keys and stream headers both come from the handshake (`SessionKeys`). libsodium's
`init_push` would draw a random header; `init_pull` with a derived header builds the same
state without randomness, which keeps this package free of randomness it is not handed
and lets known-answer tests pin the channel's bytes. Reusing a header is safe here
because every session has fresh keys.

The sender rekeys periodically by tagging a record `TAG_REKEY` (libsodium then replaces
the stream key on both sides, erasing the old one): forward secrecy within a session.
"""

from __future__ import annotations

from nacl import bindings as _b
from nacl import exceptions as _nacl_errors

from ._errors import LocalProtocolError, RemoteProtocolError
from ._handshake import SessionKeys

ABYTES: int = _b.crypto_secretstream_xchacha20poly1305_ABYTES
_TAG_MESSAGE: int = _b.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_REKEY: int = _b.crypto_secretstream_xchacha20poly1305_TAG_REKEY
_TAG_FINAL: int = _b.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_push = _b.crypto_secretstream_xchacha20poly1305_push
_pull = _b.crypto_secretstream_xchacha20poly1305_pull

#: Default rekey interval: whichever comes first, records or plaintext bytes.
REKEY_RECORDS = 2**16
REKEY_BYTES = 2**30


def _stream(key: bytes, header: bytes) -> _b.crypto_secretstream_xchacha20poly1305_state:
    state = _b.crypto_secretstream_xchacha20poly1305_state()
    _b.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    return state


class Channel:
    """Seals outgoing records and opens incoming ones, in order, for one session."""

    def __init__(
        self,
        keys: SessionKeys,
        *,
        rekey_records: int = REKEY_RECORDS,
        rekey_bytes: int = REKEY_BYTES,
    ) -> None:
        if rekey_records < 1 or rekey_bytes < 1:
            raise LocalProtocolError("rekey intervals must be positive")
        self._send = _stream(keys.send_key, keys.send_header)
        self._recv = _stream(keys.recv_key, keys.recv_header)
        self._rekey_records, self._rekey_bytes = rekey_records, rekey_bytes
        self._records_since_rekey = 0
        self._bytes_since_rekey = 0
        self.sent_final = False
        self.received_final = False
        #: How many times each side's stream key was replaced (for tests and stats).
        self.rekeys_sent = 0
        self.rekeys_received = 0

    def seal(self, plaintext: bytes, *, final: bool = False) -> bytes:
        """Encrypt one record (`final` closes this direction for good)."""
        if self.sent_final:
            raise LocalProtocolError("this channel is closed for sending")
        self._records_since_rekey += 1
        self._bytes_since_rekey += len(plaintext)
        tag = _TAG_MESSAGE
        if final:
            tag, self.sent_final = _TAG_FINAL, True
        elif (
            self._records_since_rekey >= self._rekey_records
            or self._bytes_since_rekey >= self._rekey_bytes
        ):
            tag = _TAG_REKEY
            self._records_since_rekey = self._bytes_since_rekey = 0
            self.rekeys_sent += 1
        return _push(self._send, plaintext, None, tag)

    def open(self, record: bytes) -> tuple[bytes, bool]:
        """Decrypt the next record: (plaintext, True if it is the peer's final record)."""
        if self.received_final:
            raise RemoteProtocolError("the peer sent data after closing its stream")
        try:
            plaintext, tag = _pull(self._recv, record)
        except (_nacl_errors.RuntimeError, _nacl_errors.ValueError):
            raise RemoteProtocolError(
                "a record failed to decrypt: it was altered, replayed, reordered or cut"
            ) from None
        if tag == _TAG_FINAL:
            self.received_final = True
            return plaintext, True
        if tag == _TAG_REKEY:
            self.rekeys_received += 1
        elif tag != _TAG_MESSAGE:
            raise RemoteProtocolError(f"a record carries the unexpected tag {tag}")
        return plaintext, False
