"""Causal-order merge: results leave in fragment order, whatever order they arrive in."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octop2p.engine._reorder import CausalBuffer


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(list(range(30))), memory=st.sampled_from([10, 100, 1 << 20]))
def test_ordered_release_under_any_arrival_order(order: list[int], memory: int) -> None:
    buf = CausalBuffer(ordered=True, memory_bytes=memory)
    released: list[tuple[int, bytes]] = []
    for seq in order:
        buf.add(seq, f"result-{seq}".encode() * 3)
        batch = buf.pop_ready(max_items=4)
        # Never releases a result before every earlier one.
        released.extend(batch)
        assert [s for s, _ in released] == list(range(len(released)))
    released.extend(buf.pop_ready())
    assert released == [(s, f"result-{s}".encode() * 3) for s in range(30)]
    assert len(buf) == 0
    buf.close()


def test_holds_a_later_result_until_the_earlier_ones() -> None:
    buf = CausalBuffer()
    buf.add(3, b"3")
    buf.add(1, b"1")
    assert buf.pop_ready() == []
    buf.add(0, b"0")
    assert buf.pop_ready() == [(0, b"0"), (1, b"1")]
    buf.add(2, b"2")
    assert buf.pop_ready() == [(2, b"2"), (3, b"3")]


def test_unordered_releases_on_arrival() -> None:
    buf = CausalBuffer(ordered=False)
    buf.add(5, b"5")
    buf.add(2, b"2")
    assert buf.pop_ready() == [(5, b"5"), (2, b"2")]


def test_spills_to_disk_beyond_memory_limit(tmp_path: Path) -> None:
    buf = CausalBuffer(memory_bytes=10_000, spill_dir=tmp_path)
    for seq in range(1, 101):
        buf.add(seq, bytes([seq % 256]) * 1000)
    assert buf.memory_used <= 10_000
    assert buf.spilled > 0
    assert any(tmp_path.iterdir())  # the spill file exists while results wait
    buf.add(0, b"first")
    out = buf.pop_ready(max_bytes=1 << 30)
    assert [s for s, _ in out] == list(range(101))
    assert out[50][1] == bytes([50]) * 1000
    buf.close()
    assert not any(tmp_path.iterdir())


def test_duplicate_is_refused() -> None:
    buf = CausalBuffer()
    buf.add(0, b"x")
    with pytest.raises(ValueError):
        buf.add(0, b"y")
