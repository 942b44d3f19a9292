"""Recursion: recurse without end."""


def down(n):
    return down(n + 1) + 1  # attack


def process(fragment):
    return down(0)
