"""Count the primes in one range [lo, hi) with a segmented sieve of Eratosthenes.

A composite n < hi has a prime factor p <= sqrt(n), so sieving the segment
with the "base" primes up to isqrt(hi - 1) is enough. Both sieves cross off
multiples with bytearray slice assignment, which runs in C: a fragment of
100_000 numbers takes a few milliseconds in pure Python.
"""

from __future__ import annotations

from math import isqrt


def _base_primes(limit: int) -> list[int]:
    """All primes p <= limit (a plain sieve; limit is small, about 3_200)."""
    if limit < 2:
        return []
    is_prime = bytearray([1]) * (limit + 1)
    is_prime[0] = is_prime[1] = 0
    for p in range(2, isqrt(limit) + 1):
        if is_prime[p]:
            is_prime[p * p :: p] = bytes(len(range(p * p, limit + 1, p)))
    return [n for n in range(limit + 1) if is_prime[n]]


def process(fragment: tuple[int, int]) -> int:
    """Return how many primes lie in [lo, hi)."""
    lo, hi = fragment
    if hi <= lo:
        return 0
    size = hi - lo
    # segment[i] == 1 means "lo + i is still a prime candidate".
    segment = bytearray([1]) * size
    for n in range(lo, min(hi, 2)):  # 0 and 1 are not prime
        segment[n - lo] = 0
    for p in _base_primes(isqrt(hi - 1)):
        # First multiple of p to cross off: p*p (smaller multiples have a
        # smaller prime factor), or the first multiple of p at or above lo.
        start = max(p * p, -(-lo // p) * p)
        if start < hi:
            segment[start - lo :: p] = bytes(len(range(start - lo, size, p)))
    return segment.count(1)
