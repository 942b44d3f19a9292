"""Structured concurrency reports failures as exception groups; users want the one that matters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from octop2p.errors import OctoError


def leaves(exc: BaseException) -> list[BaseException]:
    """Every non-group exception inside ``exc``, depth first."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def most_relevant(exc: BaseException) -> BaseException:
    """An interrupt first, then the first octop2p error, then whatever came first."""
    import trio  # only when a group is raised: `octop2p --version` needs no trio

    found = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)] or leaves(exc)
    for kind in (KeyboardInterrupt, OctoError):
        for leaf in found:
            if isinstance(leaf, kind):
                return leaf
    return found[0]


@contextmanager
def collapse_groups() -> Iterator[None]:
    """Re-raise an exception group as its most relevant member."""
    try:
        yield
    except BaseExceptionGroup as group:
        raise most_relevant(group) from None
