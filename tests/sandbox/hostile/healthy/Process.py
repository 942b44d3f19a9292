"""How many primes lie in [lo, hi): a plain sieve up to hi, counted in the range."""


def process(fragment):
    lo, hi = fragment
    sieve = bytearray([1]) * hi
    sieve[:2] = b"\0\0"
    for p in range(2, int(hi**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, hi, p)))
    return sum(sieve[lo:hi])
