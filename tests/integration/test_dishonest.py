"""Results you can trust from machines you don't: a dishonest donor in a real swarm.

The dishonest donor is a swarm member the test drives with the protocol library: it
claims four cores, takes fragments, and returns wrong results for some of them (or
well-formed garbage at random), each signed with its own key, as a modified octop2p
would. The chief donates one core and an honest donor one more: three distinct nodes.
"""

from __future__ import annotations

import json
import pickle
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import (
    Envelope,
    EnvelopeKind,
    Fragment,
    Heartbeat,
    Hello,
    JobInfo,
    MessageReceived,
    NodeId,
    Result,
    WorkRequest,
)
from tests.integration.nodes import NodeProcess, make_swarm, member_socket

N = 60


class DishonestDonor(threading.Thread):
    """A member that computes i*i for fragment i, except when ``lie`` says otherwise."""

    def __init__(self, chief: NodeProcess, lie: str) -> None:
        super().__init__(daemon=True)
        self.sock, self.conn = member_socket(chief)
        self.identity = self.conn.identity
        self.lie = lie
        self.rng = random.Random(7)
        self.lies = 0
        self.stop = threading.Event()

    def answer(self, i: int) -> object:
        if self.lie == "some" and i % 3 == 0:
            self.lies += 1
            return -1
        if self.lie == "garbage" and self.rng.random() < 0.5:
            self.lies += 1
            return {"garbage": self.rng.random()}
        return i * i

    def send(self, *messages: object) -> None:
        self.sock.sendall(b"".join(self.conn.send(m) for m in messages))  # type: ignore[arg-type]

    def run(self) -> None:
        self.sock.settimeout(1)
        self.send(Hello(name="liar", software="octop2p 0.1.0", cores=4, donating=True))
        beat = time.monotonic()
        while not self.stop.is_set():
            if time.monotonic() - beat > 2:
                beat = time.monotonic()
                self.send(Heartbeat(seq=1, donating=True, free_cores=4))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.conn.receive_data(data)
            while (event := self.conn.next_event()) is not None:
                if isinstance(event, MessageReceived):
                    self.handle(event.message)

    def handle(self, message: object) -> None:
        if isinstance(message, JobInfo):
            self.send(WorkRequest(credits=8, job_id=message.job_id))
        elif isinstance(message, Fragment):
            env = message.envelope
            value = self.answer(pickle.loads(env.payload))
            result = Envelope.sign(self.identity, EnvelopeKind.RESULT, env.job_id, env.seq,
                                   pickle.dumps(value), ref=env.digest)
            self.send(Result(envelope=result), WorkRequest(credits=1, job_id=env.job_id))


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    homes = make_swarm(tmp_path, ["chief", "honest"])
    nodes: list[NodeProcess] = []
    try:
        nodes.append(NodeProcess(homes[0], "--no-discovery", "--donate", "--cores", "1"))
        nodes.append(NodeProcess(homes[1], "--no-discovery", "--donate", "--cores", "1",
                                 "--peer", nodes[0].address))
        nodes[0].wait_for_peers(1, donating=True)
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()


def squares(tmp: Path, toml: str) -> Path:
    job = tmp / "squares"
    job.mkdir()
    (job / "Split.py").write_text(f"def splitter():\n    yield from range({N})\n")
    (job / "Process.py").write_text("def process(i):\n    return i * i\n")
    (job / "Merge.py").write_text(
        "def merger(result, results_dir):\n"
        "    with open(results_dir / 'squares.txt', 'a') as f:\n"
        "        f.write(f'{result}\\n')\n")
    (job / "job.toml").write_text(toml)
    return job


@pytest.mark.parametrize("lie", ["some", "garbage"])
@pytest.mark.parametrize("toml", ["redundancy = 2\n", 'verify = "adaptive"\n'],
                         ids=["redundancy-2", "adaptive"])
def test_a_dishonest_donor_is_outvoted_and_quarantined(swarm, tmp_path: Path, lie: str,
                                                       toml: str) -> None:
    chief, honest = swarm
    liar = DishonestDonor(chief, lie)
    liar.start()
    try:
        chief.wait_for_peers(2, donating=True)
        out = tmp_path / "out"
        proc = chief.cli("submit", str(squares(tmp_path, toml)), "-o", str(out), "--json",
                         timeout=180)
        assert proc.returncode == 0, proc.stderr + chief.read_log()[-3000:]
    finally:
        liar.stop.set()
        liar.join(timeout=5)
    expected = "".join(f"{i * i}\n" for i in range(N))
    assert (out / "squares.txt").read_text() == expected  # byte-identical to honest work
    assert liar.lies > 0, "the liar never got to lie: the test proves nothing"
    liar_id = str(NodeId.from_public_key(liar.identity.public_key))
    peers = {p["id"]: p for p in json.loads(chief.cli("peers", "--json").stdout)["peers"]}
    quarantined = [p for p in peers.values() if p.get("quarantined")]
    assert len(quarantined) == 1, peers
    assert "wrong result" in quarantined[0]["reason"]
    assert quarantined[0]["id"] == liar_id
    # The signed manifest names, for each fragment, the nodes whose results agreed: never
    # the liar, and with redundancy 2 always two of them.
    manifest = json.loads((out / "manifest.json").read_text())
    voted = [voters for _kind, _seq, _digest, voters in manifest["fragments"]]
    assert len(voted) == N and all(liar_id not in v for v in voted), voted[:5]
    if toml.startswith("redundancy"):
        assert all(len(v) == 2 and set(v) <= {chief.id, honest.id} for v in voted)
    # Its votes never outweighed the honest nodes: the report names who did the work.
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["workers"]) >= {chief.id, honest.id}, report
    # The owner forgives it.
    forgiven = chief.cli("peers", "--forgive", liar_id, "--json")
    assert forgiven.returncode == 0 and json.loads(forgiven.stdout) == {"forgiven": liar_id}
    again = json.loads(chief.cli("peers", "--json").stdout)["peers"]
    assert not any(p.get("quarantined") for p in again)

