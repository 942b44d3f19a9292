"""MapReduce as the work children do it (map, partition, combine, reduce), against Counter.

This drives the runtime's WorkRole (and sandbox._mapreduce) in-process on generated
corpora; the networked and sandboxed path is covered by tests/integration.
"""

from __future__ import annotations

import pickle
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import _mapreduce
from sandbox._keys import partition_of
from sandbox._mapreduce import length, one_value
from sandbox._runtime import MAP_TASKS_WANTED, SplitRole, WorkRole

words = st.sampled_from(["the", "The", "sea", "SEA", "bee", "bread", "a", "ä", "naïve", "x" * 30])
documents = st.lists(
    st.lists(st.lists(words, max_size=12), max_size=8).map(
        lambda lines: "\n".join(" ".join(line) for line in lines)
    ),
    max_size=12,
)


def mapfn(key: str, value: str):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1


def make_role(partitions: int, combine: bool) -> WorkRole:
    role = WorkRole.__new__(WorkRole)
    role.mapfn = mapfn
    role.reducefn = lambda key, values: (key, sum(values))
    role.combinefn = (lambda key, values: sum(values)) if combine else None
    role.partitions = partitions
    role._partition_cache = {}
    return role


def run(role: WorkRole, docs: list[str], batch: int) -> dict[Any, Any]:
    items = [(f"doc{i}", text) for i, text in enumerate(docs)]
    tasks = [items[i : i + batch] for i in range(0, len(items), batch)]
    outputs = [role._map(task) for task in tasks]
    result: dict[Any, Any] = {}
    for r in range(role.partitions):
        reduced = pickle.loads(role._reduce([out[r] for out in outputs]))
        for key, pair in reduced:
            assert partition_of(key, role.partitions) == r  # each key in its own partition
            assert key not in result  # ...and in only one
            result[key] = pair
    return result


@settings(max_examples=80, deadline=None)
@given(docs=documents, partitions=st.integers(1, 7), batch=st.integers(1, 5), combine=st.booleans())
def test_wordcount_equals_counter(
    docs: list[str], partitions: int, batch: int, combine: bool
) -> None:
    expected = Counter(
        w.lower() for text in docs for line in text.splitlines() for w in line.split()
    )
    got = run(make_role(partitions, combine), docs, batch)
    assert got == {w: (w, n) for w, n in expected.items()}


def test_values_of_mixed_types_are_all_kept() -> None:
    """1, 1.0 and True are equal but distinct values; reducefn must see each one."""
    role = make_role(2, combine=False)
    role.mapfn = lambda k, v: iter([("k", 1), ("k", 1.0), ("k", True)])
    role.reducefn = lambda key, values: sorted(type(v).__name__ for v in values)
    out = run(role, ["x"], 1)
    assert out == {"k": ["bool", "float", "int"]}


def test_unhashable_values_work() -> None:
    role = make_role(3, combine=False)
    role.mapfn = lambda k, v: iter([(k, [1, 2]), (k, {"a": 1})])
    role.reducefn = lambda key, values: len(values)
    assert run(role, ["x", "y"], 1) == {"doc0": 2, "doc1": 2}


def test_bad_mapfn_output_names_the_rule() -> None:
    role = make_role(2, combine=False)
    role.mapfn = lambda k, v: iter(["not-a-pair-of-two"])
    try:
        role._map([("k", "v")])
    except Exception as exc:  # noqa: BLE001
        assert getattr(exc, "rule", None) == "mapfn output"
        assert "(key, value) pairs" in str(exc)
    else:
        raise AssertionError("mapfn yielding a non-pair must fail")


# Values that compare equal across types (1, 1.0, True; 0, 0.0, -0.0, False; (1,), (1.0,))
# and values of one type that repeat: reducefn must get each exactly as mapfn yielded it.
values = st.one_of(
    st.sampled_from([0, 1, 2, 0.0, -0.0, 1.0, True, False, None, "1", b"1", (1,), (1.0,)]),
    st.integers(-3, 3),
    st.floats(allow_nan=False, width=16),
)
keys = st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 3))
outputs = st.lists(st.lists(st.tuples(keys, values), max_size=30), min_size=1, max_size=6)


def exact(value: Any) -> tuple[str, str]:
    """A value as type and repr: tells 1 from 1.0 from True and 0.0 from -0.0."""
    return (type(value).__name__, repr(value))


@settings(max_examples=150, deadline=None)
@given(per_doc=outputs, partitions=st.integers(1, 5), batch=st.integers(1, 4),
       chunk=st.sampled_from([1, 2, 3, 7, _mapreduce.CHUNK]))
def test_reducefn_gets_every_value_exactly_as_yielded(
    per_doc: list[list[tuple[Any, Any]]], partitions: int, batch: int, chunk: int
) -> None:
    """Also with mapfn's pairs taken a few at a time, so that a task's value can change
    (or stop being one value) at any chunk of it."""
    saved, _mapreduce.CHUNK = _mapreduce.CHUNK, chunk
    try:
        check_every_value_kept(per_doc, partitions, batch)
    finally:
        _mapreduce.CHUNK = saved


def check_every_value_kept(per_doc: list[list[tuple[Any, Any]]], partitions: int,
                           batch: int) -> None:
    role = make_role(partitions, combine=False)
    role.mapfn = lambda key, value: iter(per_doc[int(key[3:])])
    seen: dict[Any, list[Any]] = {}

    def reducefn(key: Any, vals: Any) -> tuple[Any, int]:
        assert type(vals) is list  # a real list, not an iterator or a lazy view
        seen[key] = vals
        return key, len(vals)

    role.reducefn = reducefn
    run(role, ["x"] * len(per_doc), batch)
    expected: dict[Any, Counter[tuple[str, str]]] = {}
    for pairs in per_doc:
        for k, v in pairs:
            expected.setdefault(k, Counter())[exact(v)] += 1
    assert {k: Counter(map(exact, vs)) for k, vs in seen.items()} == expected


def test_values_of_one_inexact_type_are_kept_apart() -> None:
    """0.0 and -0.0 are the same type and equal, yet not the same value."""
    role = make_role(1, combine=False)
    role.mapfn = lambda k, v: iter([("k", 0.0), ("k", -0.0), ("k", 0.0)])
    role.reducefn = lambda key, values: sorted(map(repr, values))
    assert run(role, ["x"], 1) == {"k": ["-0.0", "0.0", "0.0"]}


def test_a_repeated_pair_travels_once() -> None:
    """A word yielded 10,000 times is one run in the partition, not 10,000 values."""
    role = make_role(1, combine=False)
    role.mapfn = lambda k, v: (("the", 1) for _ in range(10_000))
    (part,) = role._map([("doc", "")])
    assert len(part) < 100
    assert pickle.loads(role._reduce([part])) == [("the", ("the", 10_000))]


@pytest.mark.parametrize("values", [(1, True), (True, 1), (1, True, 1), (0, False), ("1", "1")])
def test_tasks_of_one_value_each_keep_their_values_apart(values: tuple[Any, ...]) -> None:
    """Each task yields one value for every pair (1 in one task, True in another): each
    travels as keys with repeats, and the reduce keeps the values apart."""
    per_task = [[("k", v)] * (i + 1) + [("j", v)] for i, v in enumerate(values)]
    role = make_role(2, combine=False)
    role.mapfn = lambda key, value: iter(per_task[int(key[3:])])
    role.reducefn = lambda key, vals: sorted(map(exact, vals))
    out = run(role, ["x"] * len(per_task), 1)
    assert out == {"j": sorted(map(exact, values)),
                   "k": sorted(exact(v) for i, v in enumerate(values) for _ in range(i + 1))}


def test_a_task_of_one_value_and_a_task_of_many_merge() -> None:
    role = make_role(1, combine=False)
    tasks = [[("a", 1), ("b", 1), ("a", 1)], [("a", 2), ("a", 1), ("c", None)], []]
    role.mapfn = lambda key, value: iter(tasks[int(key[3:])])
    role.reducefn = lambda key, values: sorted(map(exact, values))
    assert run(role, ["x"] * 3, 1) == {
        "a": sorted(map(exact, [1, 1, 2, 1])), "b": [exact(1)], "c": [exact(None)]}


def test_one_value_shortcut_takes_only_pairs_of_exact_values() -> None:
    """The shortcut counts keys in C; anything it cannot vouch for goes the plain way."""
    assert one_value([("a", 1), ("b", 1), ("a", 1)]) == (1, Counter({"a": 2, "b": 1}))
    assert one_value([("a", "x"), ("a", "x")]) == ("x", Counter({"a": 2}))
    for items in ([("a", 1), ("a", True)],  # equal, not the same value
                  [("a", 0.0), ("a", -0.0)],  # floats: never
                  [("a", 1), ("b", 2)],  # two values
                  [["a", 1], ["b", 1]],  # not tuples (still fine the plain way)
                  [("a", 1), ("b", 1, 2)],  # not pairs
                  [([1], 1)],  # an unhashable key
                  []):
        assert one_value(items) is None, items


def test_a_triple_among_pairs_of_one_value_names_the_rule() -> None:
    role = make_role(2, combine=False)
    role.mapfn = lambda k, v: iter([("a", 1), ("b", 1, 1)])
    try:
        role._map([("k", "v")])
    except Exception as exc:  # noqa: BLE001
        assert getattr(exc, "rule", None) == "mapfn output"
    else:
        raise AssertionError("a triple is not a (key, value) pair")


def test_a_task_whose_value_changes_after_its_first_chunk_keeps_every_value() -> None:
    """Past the first chunk of a task, `1` turns `True`, then `2`: the chunks counted
    as one value and the rest, taken the plain way, reduce to exactly what was yielded."""
    n = _mapreduce.CHUNK + 5
    pairs = [("k", 1)] * n + [("k", True), ("j", 2)] + [("k", 1)] * 3
    role = make_role(2, combine=False)
    role.mapfn = lambda k, v: iter(pairs)
    role.reducefn = lambda key, values: Counter(map(exact, values))
    assert run(role, ["x"], 1) == {"k": Counter({exact(1): n + 3, exact(True): 1}),
                                   "j": Counter({exact(2): 1})}


def test_a_bad_item_past_the_first_chunk_still_names_the_rule() -> None:
    role = make_role(2, combine=False)
    role.mapfn = lambda k, v: iter([("a", 1)] * (_mapreduce.CHUNK * 2) + [("b", 1, 1)])
    with pytest.raises(Exception, match="mapfn must yield") as info:
        role._map([("k", "v")])
    assert getattr(info.value, "rule", None) == "mapfn output"


def test_an_unhashable_key_past_the_first_chunk_fails_the_task() -> None:
    role = make_role(1, combine=False)
    role.mapfn = lambda k, v: iter([("a", 1)] * (_mapreduce.CHUNK + 1) + [(["b"], 1)])
    with pytest.raises(TypeError, match="unhashable"):
        run(role, ["x"], 1)


class CountedWord(str):
    """A str that counts how many of its kind are alive (and the most there were)."""

    alive = peak = 0

    def __new__(cls, text: str) -> CountedWord:
        cls.alive += 1
        cls.peak = max(cls.peak, cls.alive)
        return super().__new__(cls, text)

    def __del__(self) -> None:
        type(self).alive -= 1


def test_a_task_never_holds_all_of_its_pairs_at_once() -> None:
    """mapfn's pairs are counted as they come: a task of 20 chunks of pairs never has
    much more than a chunk of them alive (each key here counts its own lifetime)."""
    n = 20 * _mapreduce.CHUNK + 7
    role = make_role(2, combine=False)
    role.mapfn = lambda k, v: ((CountedWord(f"w{i % 3}"), 1) for i in range(n))
    role.reducefn = lambda key, values: len(values)
    CountedWord.alive = CountedWord.peak = 0
    assert run(role, ["x"], 1) == Counter(f"w{i % 3}" for i in range(n))
    assert CountedWord.peak <= 2 * _mapreduce.CHUNK + 3


def test_partitions_of_runs_still_reduce() -> None:
    """A partition as runs (the general form, and the only one a journal of an older
    chief holds) and a partition of keys with repeats reduce together."""
    role = make_role(1, combine=False)
    runs = pickle.dumps([("a", 1, 2), ("b", 2.0, 1)])
    (same,) = role._map([("doc", "A A b")])
    role.reducefn = lambda key, values: sorted(map(exact, values))
    assert pickle.loads(role._reduce([runs, same])) == [
        ("a", [exact(1)] * 4), ("b", sorted([exact(2.0), exact(1)]))]


def split_role(source: Any) -> SplitRole:
    role = SplitRole.__new__(SplitRole)
    role.fragment_bytes, role.max_fragments, role.count = 8 << 20, 10**6, 0
    role.source, role.items, role.exhausted = source, iter(source), False
    role.map_batch, role.source_keys = None, length(source)
    role.seen_keys = role.seen_bytes = 0
    return role


def task_sizes(role: SplitRole) -> list[int]:
    sizes = []
    while (data := role._next_fragment()) is not None:
        sizes.append(len(pickle.loads(data)))
    return sizes


class LazySource:
    """The guide's lazy DataSource shape: keys and values, no len()."""

    def __iter__(self):
        return iter(range(200))

    def __getitem__(self, key: int) -> str:
        return "w " * 50_000


def test_map_tasks_are_sized_to_a_known_source() -> None:
    """200 files of 100 KB: about MAP_TASKS_WANTED tasks, not one per 256 KB."""
    sizes = task_sizes(split_role({f"f{i}": "w " * 50_000 for i in range(200)}))
    assert sum(sizes) == 200
    assert MAP_TASKS_WANTED // 2 <= len(sizes) <= MAP_TASKS_WANTED * 2
    lazy = task_sizes(split_role(LazySource()))
    assert sum(lazy) == 200 and len(lazy) >= 60  # no length: small tasks, as before


def test_many_small_keys_still_spread_over_tasks() -> None:
    """1,000 numbers (each maybe costly in mapfn) are not one task."""
    sizes = task_sizes(split_role({i: i for i in range(1000)}))
    assert sum(sizes) == 1000 and len(sizes) >= MAP_TASKS_WANTED // 2
