"""Nodes cooperate only inside their swarm; discovery by real mDNS on loopback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from protocol import (
    Connection,
    HandshakeComplete,
    NodeIdentity,
    PackageRequest,
    RemoteProtocolError,
    Role,
    SwarmCode,
)
from tests.conftest import EXAMPLES, run_cli
from tests.integration.nodes import NodeProcess, make_swarm, start_server


def test_discovery_on_loopback_finds_three_nodes_and_runs_a_job(tmp_path: Path) -> None:
    homes = make_swarm(tmp_path, ["chief", "w1", "w2"])
    nodes = [NodeProcess(homes[0], "--no-donate")]
    try:
        nodes += [NodeProcess(h, "--donate", "--cores", "1") for h in homes[1:]]
        chief = nodes[0]
        peers = chief.wait_for_peers(2, donating=True, timeout=20)  # found by mDNS alone
        assert {p["id"] for p in peers} == {nodes[1].id, nodes[2].id}
        proc = chief.cli("submit", str(EXAMPLES / "primes"), "-o", str(tmp_path / "o"), "--json")
        assert proc.returncode == 0, proc.stderr
        assert int((tmp_path / "o" / "count.txt").read_text()) == 664579
        assert set(json.loads(proc.stdout.splitlines()[-1])["workers"]) == {
            nodes[1].id,
            nodes[2].id,
        }
    finally:
        for node in nodes:
            node.stop()


def _attack(port: int, secret: bytes) -> tuple[bool, bytes]:
    """Connect with another swarm's secret; try to get through; report what came back."""
    conn = Connection(Role.INITIATOR, NodeIdentity.generate(), swarm_secret=secret)
    received = b""
    completed = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(conn.data_to_send())
        try:
            while True:
                data = s.recv(65536)
                received += data
                conn.receive_data(data)
                event = conn.next_event()
                s.sendall(conn.data_to_send())
                if isinstance(event, HandshakeComplete):
                    completed = True
                    # Through the door: ask for a package (it must never get here).
                    s.sendall(conn.send(PackageRequest(package=b"\0" * 32, offset=0, length=1)))
                if not data:
                    break
        except (TimeoutError, RemoteProtocolError, ConnectionResetError):
            pass
    return completed, received


def test_other_swarm_refused_at_every_door(tmp_path: Path) -> None:
    homes = make_swarm(tmp_path, ["chief", "member"])
    outsider_home = tmp_path / "outsider"
    assert run_cli("swarm", "create", "--home", str(outsider_home)).returncode == 0
    chief = NodeProcess(homes[0], "--no-discovery", "--no-donate")
    member = NodeProcess(
        homes[1], "--no-discovery", "--donate", "--cores", "1", "--peer", chief.address
    )
    # The outsider donates eagerly and dials the chief: it must get no work and no code.
    outsider = NodeProcess(
        outsider_home, "--no-discovery", "--donate", "--cores", "1", "--peer", chief.address
    )
    try:
        chief.wait_for_peers(1, donating=True)
        proc = chief.cli("submit", str(EXAMPLES / "primes"), "-o", str(tmp_path / "o"), "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout.splitlines()[-1])
        assert set(report["workers"]) == {member.id}  # the outsider posed as a worker in vain
        assert outsider.id not in {p["id"] for p in chief.peers()}
        assert not any((outsider_home / "packages").glob("*"))  # no package ever reached it
        assert any((homes[1] / "packages").glob("*"))  # ...while the member got it
        assert "refused a connection" in chief.read_log() or "handshake" in chief.read_log()

        # Submit, work and download doors, tried directly with another swarm's secret:
        completed, _ = _attack(chief.port, SwarmCode.generate().secret)
        assert not completed
        jobs = json.loads(chief.cli("jobs", "--json").stdout)["jobs"]
        assert len(jobs) == 1  # nothing was submitted by the outsider
        assert member.id in {p["id"] for p in chief.peers()}  # the chief still serves
    finally:
        for node in (chief, member, outsider):
            node.stop()


def test_no_swarm_secret_crosses_the_wire(tmp_path: Path) -> None:
    """What an outsider receives during a refused handshake holds no trace of the secret."""
    homes = make_swarm(tmp_path, ["chief"])
    code = SwarmCode.parse(run_cli("swarm", "show", "--home", str(homes[0])).stdout.strip())
    chief = NodeProcess(homes[0], "--no-discovery")
    try:
        _, received = _attack(chief.port, SwarmCode.generate().secret)
        assert received  # the chief did answer the handshake...
        assert code.secret not in received and code.swarm_id not in received
    finally:
        chief.stop()


def test_a_member_that_does_not_donate_runs_nothing(tmp_path: Path) -> None:
    """Consent: inside the swarm, a node whose owner has not switched donation on gets no
    package and no fragment, though it is linked and trusted."""
    homes = make_swarm(tmp_path, ["chief", "donor", "bystander"])
    chief = NodeProcess(homes[0], "--no-discovery", "--no-donate")
    donor = NodeProcess(
        homes[1], "--no-discovery", "--donate", "--cores", "1", "--peer", chief.address
    )
    bystander = NodeProcess(homes[2], "--no-discovery", "--no-donate", "--peer", chief.address)
    try:
        chief.wait_for_peers(2)
        proc = chief.cli("submit", str(EXAMPLES / "primes"), "--json", "-o", str(tmp_path / "o"))
        assert proc.returncode == 0, proc.stderr
        assert set(json.loads(proc.stdout.splitlines()[-1])["workers"]) == {donor.id}
        assert not any((homes[2] / "packages").glob("*"))
        assert "working on job" not in bystander.read_log()
    finally:
        for node in (chief, donor, bystander):
            node.stop()


def test_job_code_is_retired_after_too_many_wrong_guesses(tmp_path: Path) -> None:
    """SPAKE2 allows one guess per handshake; after MAX_FAILED_ATTEMPTS the server stops
    accepting even the right code, so online guessing cannot succeed."""

    from protocol import MAX_FAILED_ATTEMPTS, JobCode

    server, first = start_server(EXAMPLES / "wordcount.py", tmp_path / "srv")
    try:
        port, right = first["port"], JobCode.parse(first["code"])
        assert _handshake(
            port, Connection(Role.INITIATOR, NodeIdentity.generate(), job_code=right)
        )  # the code works at first
        for guess in range(MAX_FAILED_ATTEMPTS):
            wrong = JobCode(str((int(right.digits) + 1 + guess) % 10**11).zfill(11))
            conn = Connection(Role.INITIATOR, NodeIdentity.generate(), job_code=wrong)
            assert not _handshake(port, conn)
        # The code is retired: the server says so and stops, so even the right code is
        # refused (no one is listening any more).
        assert server.wait(timeout=30) == 1
        assert server.stderr is not None
        err = server.stderr.read()
        assert f"{MAX_FAILED_ATTEMPTS} wrong codes were tried, so this code is retired" in err
        assert "start `octop2p server` again for a new code" in err
        assert server.stdout is not None
        assert json.loads(server.stdout.read())["exit_code"] == 1  # one object at the end
        conn = Connection(Role.INITIATOR, NodeIdentity.generate(), job_code=right)
        with pytest.raises(ConnectionRefusedError):
            _handshake(port, conn)
    finally:
        server.kill()
        server.wait()


def _handshake(port: int, conn: Connection) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(conn.data_to_send())
        try:
            while True:
                data = s.recv(65536)
                conn.receive_data(data)
                event = conn.next_event()
                s.sendall(conn.data_to_send())
                if isinstance(event, HandshakeComplete):
                    return True
                if not data:
                    return False
        except (RemoteProtocolError, ConnectionResetError, TimeoutError):
            return False
