"""Memory: hold ever more 16 MB blocks (2 GB at the most, so the test stays bounded)."""


def process(fragment):
    held = []
    for _ in range(128):
        held.append(bytearray(16 << 20))  # attack
    return len(held)
