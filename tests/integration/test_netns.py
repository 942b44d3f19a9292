"""Discovery across two network namespaces joined by a veth pair (root only).

Loopback tests cannot show that mDNS works between machines: on 127.0.0.1 a node keeps
its adverts to loopback. Here each node runs in a network namespace of its own, as if
on its own machine, with a private address on a veth pair that exists only between the
two namespaces this test makes (10.231.0.1 and 10.231.0.2): no traffic leaves them.
Each node uses zeroconf's default interfaces, which inside its namespace are only `lo`
and its end of the veth. The control socket is a Unix socket in the node's home, so the
CLI reaches it from outside the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import NodeProcess, make_swarm

pytestmark = pytest.mark.root

SUBNET = "10.231.0"
PREFIX_LEN = 24
FRAGMENTS = 12


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _setup(spaces: tuple[str, str], veths: tuple[str, str]) -> str | None:
    """Make the namespaces and the veth pair between them; the first failure, if any."""
    steps: list[tuple[str, ...]] = [
        ("netns", "add", spaces[0]),
        ("netns", "add", spaces[1]),
        ("link", "add", veths[0], "type", "veth", "peer", "name", veths[1]),
    ]
    for i, (space, veth) in enumerate(zip(spaces, veths, strict=True)):
        steps += [
            ("link", "set", veth, "netns", space),
            ("-n", space, "addr", "add", f"{SUBNET}.{i + 1}/{PREFIX_LEN}", "dev", veth),
            ("-n", space, "link", "set", "lo", "up"),
            # mDNS is multicast: the veth must carry it (it does by default; say so).
            ("-n", space, "link", "set", veth, "multicast", "on", "up"),
        ]
    for step in steps:
        proc = _ip(*step)
        if proc.returncode != 0:
            return f"`ip {' '.join(step)}` failed: {proc.stderr.strip()}"
    return None


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh network namespaces joined by a veth pair; always removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and a veth pair")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (`ip`) to create network namespaces")
    tag = f"{os.getpid() % 100_000}"
    spaces = (f"octop2p-test-{tag}-a", f"octop2p-test-{tag}-b")
    veths = (f"o2p{tag}a", f"o2p{tag}b")  # interface names hold at most 15 characters
    try:
        failure = _setup(spaces, veths)
        if failure is not None:
            pytest.skip(f"cannot make network namespaces here: {failure}")
        yield spaces
    finally:
        # Deleting a namespace deletes the veth end inside it, and with it the pair.
        for space in spaces:
            _ip("netns", "del", space)
        _ip("link", "del", veths[0])  # only exists if setup stopped before moving it


def _job(root: Path) -> Path:
    job = root / "squares"
    job.mkdir()
    (job / "Split.py").write_text(f"def splitter():\n    yield from range({FRAGMENTS})\n")
    (job / "Process.py").write_text("def process(n):\n    return n * n\n")
    (job / "Merge.py").write_text(
        "def merger(result, results_dir):\n"
        "    with open(results_dir / 'squares.txt', 'a') as f:\n"
        "        f.write(f'{result}\\n')\n")
    return job


@pytest.mark.timeout(60)
def test_nodes_in_two_namespaces_find_each_other_by_mdns_and_share_a_job(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    homes = make_swarm(tmp_path, ["chief", "worker"])
    nodes: list[NodeProcess] = []
    try:
        # Discovery on (the default) and no --peer: only mDNS can bring them together.
        # The chief does not donate, so the job can only run on the other namespace.
        for i, (home, args) in enumerate([(homes[0], ("--no-donate",)),
                                          (homes[1], ("--donate", "--cores", "1"))]):
            nodes.append(NodeProcess(home, *args, host=f"{SUBNET}.{i + 1}",
                                     prefix=("ip", "netns", "exec", namespaces[i])))
        chief, worker = nodes
        seen = chief.wait_for_peers(1, donating=True, timeout=20)
        assert [p["id"] for p in seen] == [worker.id]
        assert seen[0]["address"].startswith(f"{SUBNET}.2:")
        assert [p["id"] for p in worker.wait_for_peers(1, timeout=10)] == [chief.id]

        out = tmp_path / "out"
        proc = chief.cli("submit", str(_job(tmp_path)), "-o", str(out), "--json", timeout=30)
        assert proc.returncode == 0, proc.stderr + chief.read_log() + worker.read_log()
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report["workers"] == {worker.id: FRAGMENTS}
        lines = (out / "squares.txt").read_text().split()
        assert lines == [str(n * n) for n in range(FRAGMENTS)]
    finally:
        for node in nodes:
            node.stop()
