"""Collect the bands in results_dir/escape_times.raw, then write mandelbrot.png.

The raw file is the merge state: one byte per pixel, row after row. It lives in
results_dir, not in memory, because the merge process may be restarted between
two calls. finalize() colours it, writes the PNG and deletes it.

The PNG is written with zlib and struct only: the 8-byte signature, then the
IHDR, IDAT and IEND chunks, each as length, type, data and CRC-32.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from view import HEIGHT, MAX_ITER, WIDTH

RAW_NAME = "escape_times.raw"
PNG_NAME = "mandelbrot.png"


def merger(result: tuple[int, bytes], results_dir: Path) -> None:
    """Write one band at its place in the raw file."""
    row_start, pixels = result
    raw = results_dir / RAW_NAME
    # Bands arrive in order, so this is an append; writing at the band's own
    # offset also makes merging the same band twice harmless.
    with raw.open("r+b" if raw.exists() else "wb") as f:
        f.seek(row_start * WIDTH)
        f.write(pixels)


def _palette() -> tuple[bytes, bytes, bytes]:
    """Red, green and blue tables for bytes.translate: escape time -> channel."""
    red, green, blue = bytearray(256), bytearray(256), bytearray(256)
    for n in range(MAX_ITER):  # n == MAX_ITER (inside the set) stays black
        # Most pixels escape within a few iterations; the square root gives
        # them more of the colour range. The Bernstein polynomials run from
        # dark blue through light blue to yellow as t goes from 0 to 1.
        t = (n / MAX_ITER) ** 0.5
        red[n] = int(9 * (1 - t) * t**3 * 255)
        green[n] = int(15 * (1 - t) ** 2 * t**2 * 255)
        blue[n] = int(8.5 * (1 - t) ** 3 * t * 255)
    return bytes(red), bytes(green), bytes(blue)


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, and the CRC-32 of type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_rgb(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG file from width * height * 3 bytes, row after row."""
    stride = width * 3
    # Each scanline starts with its filter type; 0 means "none".
    scanlines = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    # Bit depth 8, colour type 2 (RGB), compression 0, filter 0, no interlace.
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(scanlines, 9))
        + _chunk(b"IEND", b"")
    )


def finalize(results_dir: Path) -> None:
    """Colour the escape times, write mandelbrot.png and drop the raw file."""
    raw = results_dir / RAW_NAME
    times = raw.read_bytes()
    if len(times) != WIDTH * HEIGHT:
        raise ValueError(f"{RAW_NAME} holds {len(times)} pixels, expected {WIDTH * HEIGHT}")
    # bytes.translate maps every pixel through a 256-entry table in C; three
    # tables give the three channels, interleaved by slice assignment.
    red, green, blue = _palette()
    rgb = bytearray(len(times) * 3)
    rgb[0::3] = times.translate(red)
    rgb[1::3] = times.translate(green)
    rgb[2::3] = times.translate(blue)
    (results_dir / PNG_NAME).write_bytes(_png_rgb(WIDTH, HEIGHT, bytes(rgb)))
    raw.unlink()
