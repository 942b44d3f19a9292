"""Real octop2p nodes as separate processes, each in its own home, on 127.0.0.1 (or in a
network namespace a root-only test made)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from protocol import Connection, HandshakeComplete, NodeIdentity, Role, SwarmCode
from tests.conftest import run_cli


class NodeProcess:
    """`octop2p node` running in a home of its own; stopped by `stop()`."""

    def __init__(
        self, home: Path, *args: str, host: str = "127.0.0.1", prefix: Sequence[str] = ()
    ) -> None:
        """Start the node; ``prefix`` wraps the command (e.g. ``ip netns exec NS``)."""
        self.home = home
        self.host = host
        self.log = open(home.parent / f"{home.name}.log", "w+")
        self.proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "octop2p",
                "node",
                "--home",
                str(home),
                "--listen",
                f"{host}:0",
                "--json",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"node did not start: {self.log.read()}")
        first = json.loads(line)
        if "node" not in first:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"node did not start: {first.get('error', first)}")
        self.info = first["node"]
        self.port: int = self.info["port"]
        self.id: str = self.info["id"]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--home", str(self.home), timeout=timeout)

    def peers(self) -> list[dict]:
        proc = self.cli("peers", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["peers"]

    def wait_for_peers(
        self, n: int, timeout: float = 15, donating: bool | None = None
    ) -> list[dict]:
        deadline = time.monotonic() + timeout
        peers: list[dict] = []
        while time.monotonic() < deadline:
            peers = [
                p
                for p in self.peers()
                if p["trusted"] and (donating is None or p["donating"] == donating)
            ]
            if len(peers) >= n:
                return peers
            time.sleep(0.2)
        raise AssertionError(f"{self.id} saw {peers}, wanted {n} peers\n{self.read_log()}")

    def read_log(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()

    def processes(self) -> list[int]:
        """The node's process and every process it started (its sandbox's fork server
        calls setsid, so they are not all in the node's process group)."""
        return [self.proc.pid, *sorted(descendants(self.proc.pid))]

    def signal_all(self, sig: signal.Signals, pids: Sequence[int] = ()) -> None:
        """Signal the node and its children (or ``pids``, from `processes`): SIGSTOP and
        SIGCONT freeze and thaw the whole machine, as a closed laptop lid does."""
        for pid in pids or self.processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # it ended meanwhile

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to ``pid`` (children call setsid)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def make_swarm(tmp: Path, names: list[str]) -> list[Path]:
    """Homes for ``names``, all in one new swarm."""
    homes = [tmp / name for name in names]
    created = run_cli("swarm", "create", "--json", "--home", str(homes[0]))
    assert created.returncode == 0, created.stderr
    code = json.loads(created.stdout)["code"]
    for home in homes[1:]:
        joined = run_cli("swarm", "join", code, "--home", str(home))
        assert joined.returncode == 0, joined.stderr
    return homes


def member_socket(node: NodeProcess, rcvbuf: int = 0) -> tuple[socket.socket, Connection]:
    """A fresh swarm member (new identity, ``node``'s swarm) connected to ``node``, past
    the handshake: a blocking socket (10 s timeout) and its sans-I/O connection.
    ``rcvbuf`` shrinks the socket's receive buffer."""
    code = SwarmCode.parse(node.cli("swarm", "show").stdout.strip())
    conn = Connection(Role.INITIATOR, NodeIdentity.generate(), swarm_secret=code.secret)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((node.host, node.port))
    complete_handshake(s, conn)
    return s, conn


def complete_handshake(s: socket.socket, conn: Connection) -> None:
    """Run ``conn``'s handshake over the connected socket ``s``."""
    s.sendall(conn.data_to_send())
    event = None
    while not isinstance(event, HandshakeComplete):
        conn.receive_data(s.recv(65536))
        event = conn.next_event()
        s.sendall(conn.data_to_send())


def start_server(script: Path, home: Path, *args: str) -> tuple[subprocess.Popen[str], dict]:
    """`octop2p server SCRIPT --json` on 127.0.0.1; returns it and its first JSON line
    (``code``, ``port``, ``job``). The caller kills it."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "octop2p",
            "server",
            str(script),
            "--listen",
            "127.0.0.1:0",
            "--home",
            str(home),
            "--json",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, json.loads(server.stdout.readline())
