"""A splitter that never stops in practice (bounded at ten million, to keep tests finite)."""


def splitter():
    yield from range(10**7)
