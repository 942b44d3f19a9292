"""CPU: spin (bounded: a few hundred million additions, ~20 s, if no limit stopped it)."""


def process(fragment):
    total = 0
    for i in range(400_000_000):  # attack
        total += i
    return total
