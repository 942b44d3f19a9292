"""How many reduce tasks a chief gives a MapReduce script that does not choose: two per
core that can work on it as it starts, its own slots and its donors' cores, as `octop2p
run` gives two per worker (a chief that did not donate used to pick two, whatever its
donors)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from octop2p.engine._limits import Limits
from octop2p.engine._package import load_job
from octop2p.net._hosted import MAX_PARTITIONS, NetworkJob
from protocol import NodeIdentity


def link(peer: str, cores: int, donating: bool = True) -> SimpleNamespace:
    return SimpleNamespace(peer_id=peer, cores=cores, donating=donating)


def job(examples: Path, links: list[SimpleNamespace], caught: str = "") -> NetworkJob:
    node = SimpleNamespace(
        identity=NodeIdentity.generate(), links=lambda: links,
        reputation=SimpleNamespace(quarantined=lambda peer: "wrong" if peer == caught else None))
    return NetworkJob(node, load_job(examples / "wordcount.py", Limits()))  # type: ignore[arg-type]


def test_two_reduce_tasks_per_core_that_can_work(examples: Path) -> None:
    assert job(examples, [])._partitions(0) == 2
    assert job(examples, [link("a", 1), link("b", 1)])._partitions(0) == 4  # as run -w 2
    assert job(examples, [link("a", 4)])._partitions(2) == 12


def test_peers_that_cannot_work_on_it_do_not_count(examples: Path) -> None:
    links = [link("a", 1), link("idle", 8, donating=False), link("caught", 8)]
    assert job(examples, links, caught="caught")._partitions(0) == 2


def test_a_peer_claiming_a_huge_machine_does_not_make_thousands(examples: Path) -> None:
    assert job(examples, [link("big", 10**6)])._partitions(0) == 128
    many = [link(str(i), 64) for i in range(10)]
    assert job(examples, many)._partitions(0) == MAX_PARTITIONS
