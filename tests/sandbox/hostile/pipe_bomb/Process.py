"""The reply pipe: one 64 MiB frame of empty lists, 56 bytes each once decoded (4 GB)."""

import os

REPLY_FD = 4  # the child's reply pipe: job code can write on it as the runtime does


def process(fragment):
    lists = b"\xdd\x00\xff\xff\xff" + b"\x90" * 0xFFFFFF  # 16M empty lists
    body = b"\x94" + lists * 4
    frame = memoryview(len(body).to_bytes(4, "big") + body)
    while frame:
        frame = frame[os.write(REPLY_FD, frame) :]  # attack
    return fragment
