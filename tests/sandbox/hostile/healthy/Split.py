"""The normal job run after every attack: count the primes below 100,000 in 10 ranges."""


def splitter():
    for lo in range(0, 100_000, 10_000):
        yield lo, lo + 10_000
