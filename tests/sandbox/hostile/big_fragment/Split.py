"""A fragment far larger than fragment_bytes."""


def splitter():
    yield b"x" * 100_000  # attack
