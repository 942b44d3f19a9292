"""Cut the image into horizontal bands of ROWS_PER_FRAGMENT rows.

A fragment is (row_start, row_count): two small ints, all a worker needs,
because the window and the depth are fixed in view.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from view import HEIGHT, ROWS_PER_FRAGMENT


def splitter() -> Iterator[tuple[int, int]]:
    """Yield (row_start, row_count) for each band, top to bottom."""
    for row_start in range(0, HEIGHT, ROWS_PER_FRAGMENT):
        yield (row_start, min(ROWS_PER_FRAGMENT, HEIGHT - row_start))
