"""Threads: start threads (threads = 1 by default) that would call the test's listener."""

import socket
import threading

from params import PORT


def call_home():
    socket.create_connection(("127.0.0.1", PORT), timeout=2).sendall(b"from a thread")


def process(fragment):
    workers = [threading.Thread(target=call_home) for _ in range(8)]
    for worker in workers:
        worker.start()  # attack
    for worker in workers:
        worker.join()
    return fragment
