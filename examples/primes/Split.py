"""Split [0, 10_000_000) into ranges of 100_000 numbers: 100 fragments.

The chief pulls fragments from splitter() lazily, one whenever a worker has
room, so a splitter may describe a huge input space without building it.
A fragment is just the pair (lo, hi): small, and enough for a worker to
recompute everything it needs.
"""

from __future__ import annotations

from collections.abc import Iterator

LIMIT = 10_000_000
STEP = 100_000


def splitter() -> Iterator[tuple[int, int]]:
    """Yield the half-open ranges [lo, hi) that together cover [0, LIMIT)."""
    for lo in range(0, LIMIT, STEP):
        yield (lo, min(lo + STEP, LIMIT))
