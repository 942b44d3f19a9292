"""Small crypto building blocks shared by the handshake, the channel and envelopes.

Everything is BLAKE2b (hashlib), X25519 and ChaCha20-Poly1305 (libsodium through
`nacl.bindings`). Each use of BLAKE2b carries its own personalization string, so that a
hash made for one purpose can never be mistaken for a hash made for another.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import nacl.bindings
import nacl.exceptions
import nacl.utils

from ._errors import LocalProtocolError, RemoteProtocolError
from ._hashes import HASH_BYTES as HASH_BYTES
from ._hashes import PERSON_CONTENT as PERSON_CONTENT
from ._hashes import content_hash as content_hash

#: A source of randomness: called with a byte count, returns that many random bytes.
Rng = Callable[[int], bytes]

#: The default randomness: libsodium's `randombytes_buf`.
default_rng: Rng = nacl.utils.random

KEY_BYTES = 32
X25519_BYTES = 32
AEAD_TAG_BYTES = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
_AEAD_NONCE = bytes(nacl.bindings.crypto_aead_chacha20poly1305_ietf_NPUBBYTES)

# BLAKE2b personalizations (at most 16 bytes each). Changing one changes the wire format.
PERSON_TRANSCRIPT = b"octop2p th v1"
PERSON_KDF = b"octop2p kdf v1"
PERSON_ENVELOPE = b"octop2p envelope"
PERSON_NODE_ID = b"octop2p node id"
PERSON_JOIN_CODE = b"octop2p joincode"


def transcript_hash(previous: bytes, data: bytes) -> bytes:
    """Chain one more handshake message into the transcript hash."""
    h = hashlib.blake2b(digest_size=HASH_BYTES, person=PERSON_TRANSCRIPT)
    h.update(previous)
    h.update(data)
    return h.digest()


def kdf(key: bytes, label: bytes, context: bytes = b"", size: int = KEY_BYTES) -> bytes:
    """Derive a subkey for one purpose (`label`) from a 32-byte key, bound to `context`.

    Keyed BLAKE2b is a PRF; the label is length-prefixed so that no (label, context) pair
    can collide with another.
    """
    h = hashlib.blake2b(digest_size=size, key=key, person=PERSON_KDF)
    h.update(len(label).to_bytes(1, "big"))
    h.update(label)
    h.update(context)
    return h.digest()


def x25519_keypair(rng: Rng) -> tuple[bytes, bytes]:
    """A fresh ephemeral X25519 key pair (private, public) from 32 bytes of `rng`."""
    private = rng(X25519_BYTES)
    if type(private) is not bytes or len(private) != X25519_BYTES:
        raise LocalProtocolError("rng(32) must return 32 bytes")
    return private, nacl.bindings.crypto_scalarmult_base(private)


def x25519(private: bytes, peer_public: bytes) -> bytes:
    """The X25519 shared secret; a low-order peer key (all-zero output) is the peer's fault."""
    try:
        return nacl.bindings.crypto_scalarmult(private, peer_public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise RemoteProtocolError("the peer's ephemeral key is invalid (low order)") from None


def aead_seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """Encrypt under a key used exactly once, so a zero nonce is safe."""
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, _AEAD_NONCE, key)


def aead_open(key: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
    """Decrypt and authenticate; None when the tag does not match."""
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
            ciphertext, ad, _AEAD_NONCE, key
        )
    except nacl.exceptions.CryptoError:
        return None


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison, for MACs."""
    return hmac.compare_digest(a, b)
