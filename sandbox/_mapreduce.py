"""MapReduce inside a work child: mapfn's pairs as exact runs, partitions, reduce.

A map task's output travels as R pickled partitions of ``(key, value, repeat)`` runs: a
run stands for ``repeat`` copies of one value, so a word seen 500 times in a task is one
entry, not 500. The reduce side expands runs into the real list ``reducefn`` gets.
Values that compare equal but are not the same value (``1``, ``1.0``, ``True``;
``0.0``, ``-0.0``) reach ``reducefn`` as themselves. Called by `_runtime.WorkRole`.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from ._keys import partition_of, sorted_keys

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Keys whose partition a work child remembers (stable_hash is a BLAKE2b call).
PARTITION_CACHE = 1 << 20
#: Value types for which equal values of the same type are the same value, so counting
#: them loses nothing (not float: 0.0 == -0.0; not tuple: (1,) == (1.0,)).
EXACT_TYPES = frozenset({int, str, bytes, bool, type(None)})

Run = tuple[Any, Any, int]
_second = itemgetter(1)


def runs(items: list[Any], as_pair: Callable[[Any], tuple[Any, Any]]) -> list[Run]:
    """Every item mapfn yielded, as ``(key, value, repeat)`` runs (order not defined).

    Fast path, in C but for one step per distinct pair: count the items with Counter.
    Counting merges items that compare equal, which is exact only for value types whose
    equal values are the same value. So the fast path holds when every value is of one
    type in `EXACT_TYPES` (checked in C over the task's items), is split by type when
    there are several such types, and otherwise gives way to the plain path, which keeps
    every value as it came. ``as_pair`` checks one item and names a bad one.
    """
    try:
        types = set(map(type, map(_second, items)))
        if types <= EXACT_TYPES:
            if len(types) == 1:
                counts: Counter[Any] = Counter(items)
                return [(k, v, n) for (k, v), n in counts.items()]
            typed = Counter(zip(items, map(type, map(_second, items)), strict=True))
            return [(k, v, n) for ((k, v), _type), n in typed.items()]
    except (TypeError, IndexError, KeyError, ValueError):
        pass  # unhashable keys or values, or odd items: the plain path names them
    return [(*as_pair(item), 1) for item in items]


def combined(task_runs: list[Run], combinefn: Callable[[Any, list[Any]], Any]) -> list[Run]:
    """combinefn over each key's values: one run per key."""
    groups: dict[Any, list[Any]] = {}
    for k, v, n in task_runs:
        _extend(groups, k, v, n)
    return [(k, combinefn(k, vs), 1) for k, vs in groups.items()]


def partitioned(task_runs: list[Run], partitions: int, cache: dict[Any, int]) -> list[bytes]:
    """The runs split by key into ``partitions`` lists, each pickled once."""
    parts: list[list[Run]] = [[] for _ in range(partitions)]
    for run in task_runs:
        k = run[0]
        r = cache.get(k)
        if r is None:
            r = partition_of(k, partitions)
            if len(cache) < PARTITION_CACHE:
                cache[k] = r
        parts[r].append(run)
    return [pickle.dumps(part, PICKLE_PROTOCOL) for part in parts]


def reduced(parts: list[bytes], reducefn: Callable[[Any, list[Any]], Any]) -> bytes:
    """One partition from every map task, grouped, sorted by key and reduced, pickled."""
    groups: dict[Any, list[Any]] = {}
    for data in parts:
        for k, v, n in pickle.loads(data):
            known = groups.get(k)  # `_extend`, inlined: this runs once per run
            if known is None:
                groups[k] = [v] * n
            else:
                known += [v] * n
    return pickle.dumps([(k, reducefn(k, groups[k])) for k in sorted_keys(groups)],
                        PICKLE_PROTOCOL)


def length(source: Any) -> int | None:
    """``len(source)``, or None for a lazy source that has no length (or a broken one)."""
    try:
        n = len(source)
    except Exception:  # noqa: BLE001 - job code: no length is a fine answer
        return None
    return n if isinstance(n, int) and n > 0 else None


def _extend(groups: dict[Any, list[Any]], k: Any, v: Any, n: int) -> None:
    """Add ``n`` copies of value ``v`` to key ``k``'s list."""
    known = groups.get(k)
    if known is None:
        groups[k] = [v] * n
    elif n == 1:
        known.append(v)
    else:
        known += [v] * n
