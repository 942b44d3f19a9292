"""The harmless parts every hostile job starts from; each attack replaces one file."""


def splitter():
    yield from range(4)
