"""Stable MapReduce partitioning: the same in every process, equal keys together."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from sandbox._keys import partition_of, sorted_keys, stable_hash

keys = st.recursive(
    st.one_of(
        st.text(), st.binary(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()
    ),
    lambda inner: st.tuples(inner, inner),
    max_leaves=5,
)


@given(st.integers(-(10**30), 10**30))
def test_equal_numbers_land_together(n: int) -> None:
    assert stable_hash(n) == stable_hash(float(n)) or float(n) != n
    if n in (0, 1):
        assert stable_hash(bool(n)) == stable_hash(n)


@given(keys, st.integers(1, 64))
def test_partition_in_range_and_deterministic(key: object, r: int) -> None:
    assert 0 <= partition_of(key, r) < r
    assert partition_of(key, r) == partition_of(key, r)


def test_same_across_processes_despite_hash_salt() -> None:
    """Python's hash() differs per process; stable_hash must not."""
    code = (
        "from sandbox._keys import stable_hash; "
        "print([stable_hash(k) for k in ['the', b'x', (1, 'a'), 2.5]])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outs) == 1


@given(st.lists(keys, max_size=30))
def test_sorted_keys_is_total_even_for_mixed_types(ks: list) -> None:
    once = sorted_keys(ks)
    assert sorted_keys(once) == once
    assert len(once) == len(ks)
