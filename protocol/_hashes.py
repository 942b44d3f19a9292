"""Content hashes: BLAKE2b only, no libsodium, so that hashing a package or results loads
no crypto (`octop2p run` hashes its package for the manifest)."""

from __future__ import annotations

import hashlib

HASH_BYTES = 32
PERSON_CONTENT = b"octop2p content"


def content_hash(data: bytes) -> bytes:
    """The BLAKE2b-256 content hash by which packages and results are named and fetched."""
    return hashlib.blake2b(data, digest_size=HASH_BYTES, person=PERSON_CONTENT).digest()
