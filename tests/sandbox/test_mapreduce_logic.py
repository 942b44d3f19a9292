"""MapReduce as the work children do it (map, partition, combine, reduce), against Counter.

This drives the runtime's WorkRole in-process on generated corpora; the networked and
sandboxed path is covered by tests/integration.
"""

from __future__ import annotations

import pickle
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox._keys import partition_of
from sandbox._runtime import WorkRole

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
