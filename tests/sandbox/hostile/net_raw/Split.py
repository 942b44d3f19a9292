"""Network from the chief-side splitter, by raw syscalls when WHERE says so."""

from params import WHERE
from rawnet import raw_connect


def splitter():
    if WHERE == "Split.py":
        raw_connect()
    yield from range(4)
