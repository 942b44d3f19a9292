"""Prints a marker if a fragment ever reaches it."""


def process(fragment):
    print("PROCESS-SAW-A-FRAGMENT")
    return len(fragment)
