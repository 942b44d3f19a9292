"""Environment: print os.environ, libc's environ, then the process's initial environment."""

import ctypes
import os


def process(fragment):
    print(dict(os.environ))
    environ = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
    i = 0
    while environ[i]:
        print(environ[i])
        i += 1
    with open("/proc/self/environ", "rb") as f:  # attack
        print(f.read())
    return fragment
