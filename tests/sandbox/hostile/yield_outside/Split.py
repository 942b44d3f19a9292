"""Prints a marker as soon as it is imported or pulled: neither may happen."""

print("SPLIT-WAS-IMPORTED")


def splitter():
    print("SPLITTER-RAN")
    yield 1
