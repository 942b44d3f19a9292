"""Wall time: sleep, holding a worker without using CPU (bounded: 20 s)."""

import time


def process(fragment):
    time.sleep(20)  # attack
    return fragment
