"""How much two CPU-bound processes at once really get on this machine.

    python bench/parallelism.py

Runs the same pure-Python loop in one process, then in two processes at once, and prints
the aggregate speed-up (2.0 on two real cores). Every "2 workers" figure in
docs/performance.md is bounded by it.
"""

from __future__ import annotations

import multiprocessing
import time


def spin(_: int = 0) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(2 * 10**7):
        total += i
    return time.perf_counter() - started


def main() -> None:
    alone = spin()
    with multiprocessing.Pool(2) as pool:
        started = time.perf_counter()
        each = pool.map(spin, [0, 1])
        both = time.perf_counter() - started
    print(f"one process alone        {alone:6.2f} s")
    print(f"two at once, each        {each[0]:6.2f} s, {each[1]:6.2f} s (wall {both:.2f} s)")
    print(f"aggregate speed-up       {2 * alone / both:6.2f}x  (2.00x on two real cores)")


if __name__ == "__main__":
    main()
