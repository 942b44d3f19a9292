"""Network from a worker's process(), by raw syscalls when WHERE says so."""

from params import WHERE
from rawnet import raw_connect


def process(fragment):
    if WHERE == "Process.py":
        raw_connect()
    return fragment * 2
