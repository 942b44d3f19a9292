"""Compute the escape times of one band of rows.

The result is (row_start, pixels): pixels holds one byte per pixel, row after
row, each the number of iterations before the orbit left the disc of radius 2
(MAX_ITER if it never did). Colouring is left to Merge.finalize, so workers
ship compact data and the palette can change without recomputing anything.
"""

from __future__ import annotations

from view import MAX_ITER, PIXEL_SIZE, WIDTH, X_MIN, Y_MIN


def _escape_time(cr: float, ci: float) -> int:
    """Iterations of z -> z*z + c, from z = 0, until |z| > 2; at most MAX_ITER."""
    # Points in the main cardioid or the period-2 bulb never escape. About a
    # quarter of this image lies there; skipping them saves most of the work.
    q = (cr - 0.25) ** 2 + ci * ci
    if q * (q + cr - 0.25) <= 0.25 * ci * ci or (cr + 1.0) ** 2 + ci * ci <= 0.0625:
        return MAX_ITER
    # Real arithmetic on (zr, zi) is faster than Python's complex type here,
    # and comparing |z|^2 with 4 avoids a square root.
    zr = zi = 0.0
    for n in range(MAX_ITER):
        zr2, zi2 = zr * zr, zi * zi
        if zr2 + zi2 > 4.0:
            return n
        zi = 2.0 * zr * zi + ci
        zr = zr2 - zi2 + cr
    return MAX_ITER


def process(fragment: tuple[int, int]) -> tuple[int, bytes]:
    """Return (row_start, escape times of rows row_start .. row_start+row_count-1)."""
    row_start, row_count = fragment
    pixels = bytearray()
    for row in range(row_start, row_start + row_count):
        # Sample each pixel at its centre; row 0 is the top of the image.
        ci = -(Y_MIN + (row + 0.5) * PIXEL_SIZE)
        pixels.extend(_escape_time(X_MIN + (col + 0.5) * PIXEL_SIZE, ci) for col in range(WIDTH))
    return row_start, bytes(pixels)
