"""Stable partitioning and ordering of MapReduce keys.

Python's ``hash()`` is salted per process, so two map children would scatter one key
into different partitions. ``stable_hash`` is the same in every process and on every
machine, and gives keys that compare equal (``1``, ``1.0``, ``True``) the same value.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

_PACK_I = struct.Struct(">q")


def _digest(tag: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(tag + data, digest_size=8).digest(), "big")


def stable_hash(key: Any) -> int:
    """A 64-bit hash of ``key`` that does not depend on the process or the machine."""
    if isinstance(key, str):
        return _digest(b"s", key.encode("utf-8", "surrogatepass"))
    if isinstance(key, (bytes, bytearray, memoryview)):
        return _digest(b"b", bytes(key))
    if isinstance(key, (bool, int)):
        return _hash_int(int(key))
    if isinstance(key, float):
        if math.isfinite(key) and key.is_integer():
            return _hash_int(int(key))  # 2.0 == 2 must land with 2
        return _digest(b"f", repr(key).encode())
    if key is None:
        return _digest(b"n", b"")
    if isinstance(key, tuple):
        h = hashlib.blake2b(b"t", digest_size=8)
        for item in key:
            h.update(stable_hash(item).to_bytes(8, "big"))
        return int.from_bytes(h.digest(), "big")
    if isinstance(key, frozenset):
        # Order-free: XOR of the members' hashes.
        acc = 0
        for item in key:
            acc ^= stable_hash(item)
        return _digest(b"z", acc.to_bytes(8, "big"))
    # Anything else: its repr is the best stable description we have.
    return _digest(b"r", f"{type(key).__module__}.{type(key).__qualname__}:{key!r}".encode())


def _hash_int(value: int) -> int:
    if -(1 << 63) <= value < (1 << 63):
        return _digest(b"i", _PACK_I.pack(value))
    return _digest(b"I", str(value).encode())


def partition_of(key: Any, partitions: int) -> int:
    """The reduce partition that ``key`` belongs to."""
    return stable_hash(key) % partitions


_TYPE_RANK = {bool: 0, int: 0, float: 0, str: 1, bytes: 2, tuple: 3}


def mixed_sort_key(key: Any) -> tuple[int, Any]:
    """A total order over keys of mixed types: numbers, then text, bytes, tuples, the rest."""
    rank = _TYPE_RANK.get(type(key))
    if rank is None:
        return (9, f"{type(key).__qualname__}:{key!r}")
    if rank == 3:
        return (3, tuple(mixed_sort_key(item) for item in key))
    if rank == 0 and isinstance(key, float) and math.isnan(key):
        return (0, math.inf)
    return (rank, key)


def sorted_keys(keys: Any) -> list[Any]:
    """Keys in their natural order, or in ``mixed_sort_key`` order when they do not compare."""
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=mixed_sort_key)
