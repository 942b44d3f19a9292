"""Harmless: doubles its fragment."""


def process(fragment):
    return fragment * 2
