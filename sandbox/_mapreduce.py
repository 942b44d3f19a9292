"""MapReduce inside a work child: mapfn's pairs as exact runs, partitions, reduce.

A map task's output travels as R pickled partitions of ``(key, value, repeat)`` runs: a
run stands for ``repeat`` copies of one value, so a word seen 500 times in a task is one
entry, not 500. When every pair of a task has one same value (the guide's ``yield word,
1``), a partition is ``(SAME, value, keys, repeats)`` instead: two flat lists, counted
in C, with nothing per pair in Python on either side; mapfn's pairs are checked and
counted a chunk at a time as they come, never all held at once. The reduce side expands
runs into the real list ``reducefn`` gets.
Values that compare equal but are not the same value (``1``, ``1.0``, ``True``;
``0.0``, ``-0.0``) reach ``reducefn`` as themselves. Called by `_runtime.WorkRole`.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import islice, repeat
from operator import itemgetter
from typing import Any

from ._keys import partition_of, sorted_keys

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Keys whose partition a work child remembers (stable_hash is a BLAKE2b call).
PARTITION_CACHE = 1 << 20
#: Value types for which equal values of the same type are the same value, so counting
#: them loses nothing (not float: 0.0 == -0.0; not tuple: (1,) == (1.0,)).
EXACT_TYPES = frozenset({int, str, bytes, bool, type(None)})

#: Marks a partition of keys that all carry one value: ``(SAME, value, keys, repeats)``.
SAME = "same"
#: mapfn's pairs are checked and counted this many at a time (`counted`).
CHUNK = 1024
_UNSET: Any = object()

Run = tuple[Any, Any, int]
_first = itemgetter(0)
_second = itemgetter(1)


def mapped(items: Iterable[Any], as_pair: Callable[[Any], tuple[Any, Any]],
           partitions: int, cache: dict[Any, int],
           combinefn: Callable[[Any, list[Any]], Any] | None) -> list[bytes]:
    """One map task's pairs (mapfn's output, read once) as ``partitions`` pickled
    partitions (see the module's doc)."""
    if combinefn is not None:
        return partitioned(combined(runs(list(items), as_pair), combinefn), partitions, cache)
    value, counts, rest = counted(items)
    if rest is None and counts:
        return _partitioned_keys(value, counts, partitions, cache)
    task_runs = [(k, value, n) for k, n in counts.items()]
    return partitioned(task_runs + runs(rest or [], as_pair), partitions, cache)


def counted(items: Iterable[Any]) -> tuple[Any, Counter[Any], list[Any] | None]:
    """mapfn's pairs counted by key, `CHUNK` at a time, while they all carry one value.

    Returns ``(value, counts, None)`` when every item is a ``(key, value)`` tuple of that
    one value; else the counts of the chunks before the first that is not, and ``rest``:
    that chunk and every item after it, for the plain path. A chunk is checked and
    counted while it is still in the CPU's cache, then freed: a task never holds all its
    pairs at once (90,000 tuples per task made every pass over them a cache miss).
    """
    items = iter(items)
    counts: Counter[Any] = Counter()
    value: Any = _UNSET
    while chunk := list(islice(items, CHUNK)):
        same = _chunk_value(chunk, value)
        if same is _UNSET:
            return value, counts, chunk + list(items)
        try:
            counts.update(map(_first, chunk))
        except TypeError:
            # An unhashable key, which fails the job on every path: the plain path takes
            # the chunk again and names it (what this chunk counted is never merged).
            return value, counts, chunk + list(items)
        value = same
    return value, counts, None


def one_value(items: list[Any]) -> tuple[Any, Counter[Any]] | None:
    """``(value, repeats of each key)`` when every item of ``items`` is a ``(key, value)``
    tuple and all values are one same value (see `counted`), else None."""
    value, counts, rest = counted(items)
    return (value, counts) if rest is None and counts else None


def _chunk_value(chunk: list[Any], value: Any) -> Any:
    """The one value every item of ``chunk`` carries, when each is a ``(key, value)``
    tuple and that value is ``value`` (any, if `_UNSET`); else `_UNSET`. Each check is one
    pass in C. Equal values of one type in `EXACT_TYPES` are the same value, so `1` and
    `True` (or `0.0` and `-0.0`, whose type is not there) never pass for each other."""
    if set(map(type, chunk)) != {tuple} or set(map(len, chunk)) != {2}:
        return _UNSET
    values = list(map(_second, chunk))
    first = values[0] if value is _UNSET else value
    if type(first) not in EXACT_TYPES or set(map(type, values)) != {type(first)}:
        return _UNSET
    return first if values.count(first) == len(values) else _UNSET


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
    where = _partitions_of(map(_first, task_runs), partitions, cache)
    return [pickle.dumps(part, PICKLE_PROTOCOL) for part in _split(task_runs, where, partitions)]


def _partitioned_keys(value: Any, counts: Counter[Any], partitions: int,
                      cache: dict[Any, int]) -> list[bytes]:
    """Keys that all carry ``value`` split into ``partitions``, each pickled once."""
    keys, repeats = list(counts), list(counts.values())
    where = _partitions_of(keys, partitions, cache)
    return [pickle.dumps((SAME, value, part_keys, part_repeats), PICKLE_PROTOCOL)
            for part_keys, part_repeats in zip(_split(keys, where, partitions),
                                               _split(repeats, where, partitions), strict=True)]


def _partitions_of(keys: Iterable[Any], partitions: int, cache: dict[Any, int]) -> list[int]:
    """Each key's partition: computed for keys new to ``cache`` (and kept there while it
    has room), then looked up in C."""
    if partitions == 1:
        return []
    keys = list(keys)
    new = {k: partition_of(k, partitions) for k in set(keys).difference(cache)}
    if len(cache) + len(new) <= PARTITION_CACHE:
        cache.update(new)
        return list(map(cache.__getitem__, keys))
    return [cache[k] if k in cache else new[k] for k in keys]


def _split(rows: list[Any], where: list[int], partitions: int) -> list[list[Any]]:
    """``rows`` by partition (``where`` gives each row's)."""
    if partitions == 1:
        return [rows]
    parts: list[list[Any]] = [[] for _ in range(partitions)]
    append = [part.append for part in parts]
    for row, r in zip(rows, where, strict=True):
        append[r](row)
    return parts


def reduced(parts: list[bytes], reducefn: Callable[[Any, list[Any]], Any]) -> bytes:
    """One partition from every map task, grouped, sorted by key and reduced, pickled."""
    blocks = [block for data in parts if (block := pickle.loads(data))]  # none empty
    same = _same_value(blocks)
    if same is not None:  # every task's pairs carried one value: sum the repeats
        value, totals = same
        out = [(k, reducefn(k, [value] * totals[k])) for k in sorted_keys(totals)]
        return pickle.dumps(out, PICKLE_PROTOCOL)
    groups: dict[Any, list[Any]] = {}
    for block in blocks:
        if type(block) is tuple:  # (SAME, value, keys, repeats): as runs
            block = zip(block[2], repeat(block[1], len(block[2])), block[3], strict=True)
        for k, v, n in block:
            known = groups.get(k)  # `_extend`, inlined: this runs once per run
            if known is None:
                groups[k] = [v] * n
            else:
                known += [v] * n
    return pickle.dumps([(k, reducefn(k, groups[k])) for k in sorted_keys(groups)],
                        PICKLE_PROTOCOL)


def _same_value(blocks: list[Any]) -> tuple[Any, dict[Any, int]] | None:
    """``(value, total repeats of each key)`` when every block is a `SAME` block of one
    same value (same type, equal), else None."""
    if not blocks or any(type(b) is not tuple for b in blocks):
        return None
    value = blocks[0][1]
    if any(type(b[1]) is not type(value) or b[1] != value for b in blocks):
        return None
    totals = dict(zip(blocks[0][2], blocks[0][3], strict=True))
    for block in blocks[1:]:
        get = totals.get
        for k, n in zip(block[2], block[3], strict=True):
            totals[k] = get(k, 0) + n
    return value, totals


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
