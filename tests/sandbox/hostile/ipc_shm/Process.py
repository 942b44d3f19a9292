"""IPC: list the host's SysV shared-memory segments, then attach the test's and read it."""

import ctypes
import os

from params import SHMID, SIZE

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
SHM_STAT, SHM_INFO = 13, 14


def listed():
    """Every segment id the kernel shows: SHM_INFO gives the highest index, SHM_STAT each."""
    buf = ctypes.create_string_buffer(256)
    highest = libc.shmctl(0, SHM_INFO, buf)
    return [i for i in (libc.shmctl(n, SHM_STAT, buf) for n in range(highest + 1)) if i >= 0]


def process(fragment):
    print("listed:", listed())
    address = libc.shmat(SHMID, None, 0)  # read-write, as the attack in the issue did
    if address is None or address == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))  # attack
    stolen = ctypes.string_at(address, SIZE)
    print(stolen)
    return stolen
