"""Threads: 50 sleeping threads where the job allows 2 (bounded: they sleep 10 s).

Small stacks, so that memory_mb does not stop them first: only the thread count may.
"""

import threading
import time


def process(fragment):
    threading.stack_size(256 * 1024)
    workers = [threading.Thread(target=time.sleep, args=(10,)) for _ in range(50)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return fragment
