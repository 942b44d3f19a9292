"""Throw n random points into the unit square; count those in the quarter circle.

The quarter disc x^2 + y^2 <= 1 covers pi/4 of the unit square, so
4 * inside / samples estimates pi.
"""

from __future__ import annotations

import random


def process(fragment: tuple[int, int]) -> int:
    """Return how many of the batch's n points fall inside the quarter circle."""
    seed, n = fragment
    # A private generator seeded per batch: never the shared module-level one,
    # whose state would depend on what else ran in this process before.
    uniform = random.Random(seed).random
    inside = 0
    for _ in range(n):
        x, y = uniform(), uniform()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside
