"""Hand out 50 batches of 200_000 random samples, each with its own seed.

A fragment is (seed, n). Seeding each batch explicitly keeps the whole job
deterministic: the same seeds give the same estimate, whichever worker runs
which batch and in whatever order the results come back.
"""

from __future__ import annotations

from collections.abc import Iterator

FRAGMENTS = 50
SAMPLES_PER_FRAGMENT = 200_000


def splitter() -> Iterator[tuple[int, int]]:
    """Yield (seed, samples) for each batch."""
    for seed in range(FRAGMENTS):
        yield (seed, SAMPLES_PER_FRAGMENT)
