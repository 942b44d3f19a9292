"""A job submitted with `--chief` outlives its link and its `submit` (docs/jobs.md,
"When things break"): a 30 s partition through a TCP proxy on 127.0.0.1, then the
submitter follows the job to its results; `kill -9` of `octop2p submit`, then `fetch`.
Results are compared byte for byte with those of `octop2p run`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.nodes import NodeProcess, make_swarm
from tests.integration.test_matrix import job, tree


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``port``; ``cut()`` drops every connection and refuses
    new ones (a partition), ``restore()`` lets them through again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@contextmanager
def _pair(tmp: Path, config: str = "") -> Iterator[tuple[NodeProcess, NodeProcess, Proxy]]:
    """A submitter (not donating) whose only way to its chief (donating one core) is a
    proxy: it dials the chief as a static peer through it, and redials when cut."""
    homes = make_swarm(tmp, ["sub", "chief"])
    (homes[0] / "config.toml").write_text(config)
    nodes: list[NodeProcess] = []
    proxy: Proxy | None = None
    try:
        chief = NodeProcess(homes[1], "--no-discovery", "--donate", "--cores", "1")
        nodes.append(chief)
        proxy = Proxy(chief.port)
        sub = NodeProcess(homes[0], "--no-discovery", "--no-donate",
                          "--peer", f"127.0.0.1:{proxy.port}")
        nodes.append(sub)
        sub.wait_for_peers(1)
        yield sub, chief, proxy
    finally:
        if proxy is not None:
            proxy.close()
        for node in nodes:
            node.stop()


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess, Proxy]]:
    with _pair(tmp_path) as nodes:
        yield nodes


def _slow_job(tmp: Path) -> Path:
    """30 fragments of 0.3 s each: about 10 s on the chief's one core."""
    return job(tmp, "slow", "    import time\n    time.sleep(0.3)\n    return i * i\n", n=30)


def _submit(sub: NodeProcess, chief: NodeProcess, package: Path, out: Path,
            log: Path) -> subprocess.Popen[str]:
    err = open(log, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "octop2p", "submit", str(package), "--chief", chief.id,
         "-o", str(out), "--home", str(sub.home)],
        stdout=subprocess.DEVNULL, stderr=err, text=True)


def _wait_running(chief: NodeProcess, timeout: float = 60) -> str:
    """The chief's job id, once some of its fragments are done (and not all)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = json.loads(chief.cli("jobs", "--json").stdout)["jobs"]
        if jobs and jobs[0]["state"] == "running" and jobs[0]["fragments_done"]:
            return jobs[0]["job"]
        time.sleep(0.3)
    raise AssertionError(f"no running job on the chief\n{chief.read_log()}")


def _wait_following(sub: NodeProcess, timeout: float = 30) -> None:
    """The submitter has heard from its chief that the job runs (under load, that event
    can come a moment after the chief's own record says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = json.loads(sub.cli("jobs", "--json").stdout)["jobs"]
        if jobs and jobs[0]["state"] == "running":
            return
        time.sleep(0.2)
    raise AssertionError(f"the submitter never saw its job run\n{sub.read_log()}")


def _expected(package: Path, tmp: Path) -> dict[str, bytes]:
    ran = run_cli("run", package, "-o", tmp / "run-out", "--workers", "2")
    assert ran.returncode == 0, ran.stderr
    return tree(tmp / "run-out")


def test_partition_of_30_s_then_the_submitter_gets_its_results(linked, tmp_path: Path) -> None:
    sub, chief, proxy = linked
    package = _slow_job(tmp_path)
    out, log = tmp_path / "out", tmp_path / "submit.err"
    proc = _submit(sub, chief, package, out, log)
    try:
        _wait_running(chief)
        _wait_following(sub)
        proxy.cut()
        time.sleep(30)
        # The chief ran on; the submitter still counts the job as alive.
        assert json.loads(chief.cli("jobs", "--json").stdout)["jobs"][0]["state"] == "done"
        mine = json.loads(sub.cli("jobs", "--json").stdout)["jobs"][0]
        assert mine["state"] == "running", mine
        assert proc.poll() is None
        proxy.restore()
        assert proc.wait(timeout=120) == 0, log.read_text() + sub.read_log()
    finally:
        if proc.poll() is None:
            proc.kill()
    said = log.read_text()
    line = f"lost the link to chief {chief.id[:7]}; waiting up to 600 s for it to come back"
    assert line in said, said
    assert line in sub.read_log()
    assert tree(out) == _expected(package, tmp_path)


def test_kill_9_of_submit_then_fetch(linked, tmp_path: Path) -> None:
    sub, chief, _ = linked
    package = _slow_job(tmp_path)
    out = tmp_path / "out"
    proc = _submit(sub, chief, package, out, tmp_path / "submit.err")
    job_id = _wait_running(chief)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not out.exists()
    deadline = time.monotonic() + 60
    while json.loads(sub.cli("status", job_id, "--json").stdout)["state"] != "done":
        assert time.monotonic() < deadline, sub.read_log()
        time.sleep(0.3)
    fetched = sub.cli("fetch", job_id[:12], "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert tree(out) == _expected(package, tmp_path)
    # The submitter's node keeps the job's record: a restart still lists and fetches it.
    sub.stop()
    again = NodeProcess(sub.home, "--no-discovery", "--no-donate")
    try:
        listed = json.loads(again.cli("jobs", "--json").stdout)["jobs"]
        assert [(j["job"], j["state"]) for j in listed] == [(job_id, "done")]
        refetched = again.cli("fetch", job_id, "-o", str(tmp_path / "again"))
        assert refetched.returncode == 0, refetched.stderr
        assert tree(tmp_path / "again") == tree(out)
    finally:
        again.stop()


def test_a_link_that_stays_down_fails_the_job_naming_the_setting(tmp_path: Path) -> None:
    with _pair(tmp_path, "reattach_seconds = 3\n") as (sub, chief, proxy):
        package = _slow_job(tmp_path)
        log = tmp_path / "submit.err"
        proc = _submit(sub, chief, package, tmp_path / "out", log)
        try:
            job_id = _wait_running(chief)
            proxy.cut()
            assert proc.wait(timeout=60) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
        said = log.read_text()
        assert "waiting up to 3 s for it to come back" in said, said
        assert "did not come back within 3 s (reattach_seconds in config.toml)" in said, said
        assert not (tmp_path / "out").exists()
        status = json.loads(sub.cli("status", job_id, "--json").stdout)
        assert status["state"] == "failed" and "reattach_seconds" in status["error"]
