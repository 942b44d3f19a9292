"""ptrace: attach to a bystander process (to read its memory or steer it)."""

import ctypes

from params import VICTIM_PID

PTRACE_ATTACH = 16
libc = ctypes.CDLL(None, use_errno=True)


def process(fragment):
    if libc.ptrace(PTRACE_ATTACH, VICTIM_PID, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"cannot trace {VICTIM_PID}")  # attack
    return fragment
