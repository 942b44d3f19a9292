"""Network without the socket module: the socket and connect syscalls through ctypes,
as C code or a compiled extension would make them."""

import ctypes
import os

from params import PORT

# socket, connect: x86_64 numbers, or aarch64's (asm-generic).
SYS_socket, SYS_connect = (198, 203) if os.uname().machine == "aarch64" else (41, 42)
AF_INET, SOCK_STREAM = 2, 1

libc = ctypes.CDLL(None, use_errno=True)


def raw_connect():
    """Connect to 127.0.0.1:PORT and send a few bytes; raise OSError on failure."""
    fd = libc.syscall(SYS_socket, AF_INET, SOCK_STREAM, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "the socket syscall failed")  # attack
    # struct sockaddr_in: family in host order, port in network order, address, padding.
    addr = AF_INET.to_bytes(2, "little") + PORT.to_bytes(2, "big") + bytes([127, 0, 0, 1, *[0] * 8])
    if libc.syscall(SYS_connect, fd, addr, len(addr)) < 0:
        raise OSError(ctypes.get_errno(), "the connect syscall failed")
    libc.write(fd, b"stolen", 6)
