"""A result far larger than fragment_bytes (results are held to the same limit)."""


def process(fragment):
    return b"x" * 1_000_000  # the runtime measures it after process() returns
