"""A generator where a plain function belongs: refused before anything runs."""


def process(fragment):
    yield fragment  # attack
