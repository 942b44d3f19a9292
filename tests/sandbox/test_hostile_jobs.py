"""Hostile jobs through the real engine: every attack fails, is named, and the node goes on.

Each job in `hostile/` is a package that replaces one or more files of `hostile/_base`
(a harmless job) with an attack; the line that attacks ends in ``# attack``. The test
copies it into a temporary folder with a ``params.py`` (ports, paths, pids it needs),
runs it with the real `JobRunner` on one long-lived fork server with every sandbox layer
(the module's `node`, standing in for a node), and then proves the attack failed by its
effect on the world: a listener that hears nothing, a canary that appears nowhere in
what the job printed, wrote or reported, a file that does not exist, a process still
alive. Each also checks the error names the rule, the user's file and line, and the
limit where there is one; and after each attack the same fork server must still run a
normal job (`hostile/healthy`) to the right answer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from octop2p.engine._children import ForkServer, open_fork_server
from octop2p.engine._groups import collapse_groups
from octop2p.engine._limits import Limits
from octop2p.engine._local import local_runner, prepare
from octop2p.errors import JobFailed, JobRefused, OctoError
from sandbox import ALL_LAYERS
from tests.conftest import run_cli

from .confined import probed

HOSTILE = Path(__file__).resolve().parent / "hostile"
SECRET_ENV = "OCTOP2P_TEST_SECRET"
#: The right answer of `hostile/healthy`: the primes below 100,000.
PRIMES_BELOW_100K = 9592
WORKERS = 2


# --- the node under attack -----------------------------------------------------------


@dataclass
class Outcome:
    """What one job run produced, as the node saw it."""

    error: OctoError | None
    out: str  # everything job code printed, in every child
    results: dict[str, bytes]  # results_dir's files, by relative path
    seconds: float

    @property
    def failed(self) -> JobFailed | JobRefused:
        """The job's error; fails the test if the job succeeded."""
        assert isinstance(self.error, JobFailed | JobRefused), (
            f"the attack did not fail the job: {self.error!r}, printed {self.out!r}"
        )
        return self.error

    def text(self) -> str:
        """Every channel job code could leak through: output, results, error, traceback."""
        parts = [self.out, *(data.decode("utf-8", "replace") for data in self.results.values())]
        if self.error is not None:
            parts += [str(self.error), getattr(self.error, "traceback", "")]
        return "\n".join(parts)


def _fork_server_pid() -> int:
    """The pid of this process's fork server (children only ever see it as their parent)."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = f.read().rsplit(b")", 1)[1].split()[1].decode()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == me and b"_forkserver" in cmdline:
            return int(entry)
    raise AssertionError("no fork server runs under this process")


def _running(pid: int) -> bool:
    """True while `pid` exists and is neither a zombie nor stopped nor traced."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except FileNotFoundError:
        return False
    return fields["State"].split()[0] in ("S", "R") and fields["TracerPid"].strip() == "0"


class Node:
    """One fork server in a trio loop on a thread of its own: the node every attack hits.

    pytest-trio gives each test its own trio run, so a fork server shared by a whole
    module lives on this thread; tests hand it jobs with `run`.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.fs: ForkServer | None = None
        self.pid = 0  # the fork server's
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        async with open_fork_server() as fs:
            self.fs = fs
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(30), "the fork server did not start"
        self.pid = _fork_server_pid()

    def stop(self) -> None:
        if self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)

    def run(self, job: Path, *, limits: Limits | None = None, timeout: float = 60) -> Outcome:
        """Run the job at `job` as `octop2p run` would, on this node's fork server.

        `limits` are the node's (the most a job may ask for); the defaults if None.
        """
        return trio.from_thread.run(self._run, job, limits, timeout, trio_token=self._token)

    async def _run(self, job: Path, limits: Limits | None, timeout: float) -> Outcome:
        assert self.fs is not None
        printed: list[str] = []
        results: dict[str, bytes] = {}
        error: OctoError | None = None
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="octop2p-hostile-") as tmp:
            try:
                with trio.fail_after(timeout), collapse_groups():
                    spec = prepare(job, limits)  # refuses a bad package before anything runs
                    runner = local_runner(
                        spec,
                        self.fs,
                        workers=WORKERS,
                        work_dir=Path(tmp),
                        layers=ALL_LAYERS,
                        on_output=lambda where, text: printed.append(text),
                    )
                    results_dir = await runner.run()
            except OctoError as exc:
                error = exc
                results_dir = Path(tmp) / "results"
            for path in sorted(results_dir.rglob("*")):
                if path.is_file():
                    results[str(path.relative_to(results_dir))] = path.read_bytes()
        return Outcome(error, "".join(printed), results, time.monotonic() - started)

    def assert_healthy(self, tmp: Path) -> None:
        """The same fork server, still running, computes a normal job's right answer."""
        assert _running(self.pid), "the fork server died or was stopped"
        assert _fork_server_pid() == self.pid, "the fork server was replaced"
        outcome = self.run(package("healthy", tmp / "healthy-after"))
        assert outcome.error is None, outcome.error
        assert outcome.results == {"sum.txt": str(PRIMES_BELOW_100K).encode()}


@pytest.fixture(scope="module")
def secret() -> Iterator[str]:
    """A secret in the node's environment, set before its fork server starts."""
    token = "envsecret-" + secrets.token_hex(16)
    old = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = token
    yield token
    if old is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = old


@pytest.fixture(scope="module")
def node(secret: str) -> Iterator[Node]:
    """One fork server with every sandbox layer for the whole module."""
    missing = sorted(name for name, st in probed().items() if not st.available)
    if missing:
        pytest.skip(f"sandbox layers unavailable here: {', '.join(missing)}")
    node = Node()
    node.start()
    try:
        yield node
    finally:
        node.stop()
    assert not _running(node.pid), "the fork server outlived its node"


# --- jobs and proofs -----------------------------------------------------------------


def package(name: str, dest: Path, **params: object) -> Path:
    """`hostile/_base` overlaid with `hostile/<name>`, plus params.py, copied to `dest`."""
    shutil.copytree(HOSTILE / "_base", dest)
    shutil.copytree(HOSTILE / name, dest, dirs_exist_ok=True)
    lines = [f"{key} = {value!r}\n" for key, value in params.items()]
    (dest / "params.py").write_text('"""Values the test hands the job."""\n\n' + "".join(lines))
    return dest


def attack_line(job: Path, file: str) -> int:
    """The line of `file` marked ``# attack``: where the error must point."""
    for number, text in enumerate((job / file).read_text().splitlines(), start=1):
        if text.rstrip().endswith("# attack"):
            return number
    raise AssertionError(f"{file} marks no line with '# attack'")


@dataclass
class Attack:
    """One hostile job run on the shared node, and its outcome."""

    job: Path
    outcome: Outcome

    def assert_named(self, rule: str, file: str | None = None, *, limit: str | None = None) -> None:
        """The job failed naming `rule`, at the marked line of `file`, and `limit`."""
        error = self.outcome.failed
        text = str(error)
        assert error.rule == rule, text
        assert f"(rule: {rule})" in text, text
        if file is not None:
            where = f"{file}:{attack_line(self.job, file)}"
            assert text.startswith(where + ":"), f"expected {where}: {text}"
        if limit is not None:
            assert limit in text, text


def attack(
    node: Node, tmp: Path, name: str, *, limits: Limits | None = None, **params: object
) -> Attack:
    """Run the hostile job `name`, then check the node still computes right answers."""
    job = package(name, tmp / name, **params)
    outcome = node.run(job, limits=limits)
    assert os.environ[SECRET_ENV] not in outcome.text()  # whatever else the job did
    node.assert_healthy(tmp)
    return Attack(job, outcome)


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    """A TCP server on 127.0.0.1 that the test owns; no job may reach it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        yield server


def assert_silent(server: socket.socket) -> None:
    """`server` (TCP listener or UDP socket) never heard from anyone."""
    server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        if server.type == socket.SOCK_STREAM:
            server.accept()
        else:
            server.recv(1024)


# --- network ---------------------------------------------------------------------------


def test_tcp_connect(node: Node, tmp_path: Path, tcp_listener: socket.socket) -> None:
    hit = attack(node, tmp_path, "net_tcp", PORT=tcp_listener.getsockname()[1])
    assert_silent(tcp_listener)
    hit.assert_named("network", "Process.py")


def test_ipv6_connect(node: Node, tmp_path: Path) -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with listener:
        hit = attack(node, tmp_path, "net_inet6", PORT=listener.getsockname()[1])
        assert_silent(listener)
    hit.assert_named("network", "Process.py")


def test_udp_sendto(node: Node, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        hit = attack(node, tmp_path, "net_udp", PORT=udp.getsockname()[1])
        assert_silent(udp)
    hit.assert_named("network", "Process.py")


def test_unix_socket(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        hit = attack(node, tmp_path, "net_unix", SOCKET_PATH=str(path))
        assert_silent(listener)
    hit.assert_named("network", "Process.py")


@pytest.mark.parametrize("where", ["Process.py", "Split.py", "Merge.py"])
def test_raw_socket_syscall(
    node: Node, tmp_path: Path, tcp_listener: socket.socket, where: str
) -> None:
    """ctypes straight to the kernel, on a worker and in both chief-side children."""
    hit = attack(node, tmp_path, "net_raw", PORT=tcp_listener.getsockname()[1], WHERE=where)
    assert_silent(tcp_listener)
    hit.assert_named("network", "rawnet.py")
    assert f'{where}", line' in hit.outcome.failed.traceback  # called from that file


# --- processes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["proc_exec", "proc_fork", "proc_subprocess", "proc_system"])
def test_new_process(node: Node, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker.txt"
    hit = attack(node, tmp_path, name, MARKER=str(marker))
    assert not marker.exists(), marker.read_text()
    hit.assert_named("processes", "Process.py")


# --- files -----------------------------------------------------------------------------


def test_read_a_file_outside_the_job(node: Node, tmp_path: Path) -> None:
    canary = tmp_path / "outside" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text(token := "canary-" + secrets.token_hex(16))
    hit = attack(node, tmp_path, "file_canary", CANARY=str(canary))
    assert token not in hit.outcome.text()
    hit.assert_named("files", "Process.py", limit=f"tried to read {canary}")


def test_read_the_nodes_key_and_config(node: Node, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "node.key").write_bytes(key := secrets.token_hex(32).encode())
    (home / "config.toml").write_text(f"# {(tag := secrets.token_hex(16))}\ndonate = true\n")
    hit = attack(
        node,
        tmp_path,
        "file_node_home",
        KEY=str(home / "node.key"),
        CONFIG=str(home / "config.toml"),
    )
    assert key.decode() not in hit.outcome.text() and tag not in hit.outcome.text()
    hit.assert_named("files", "Process.py", limit="node.key")


def test_merger_writes_outside_results_dir(node: Node, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target, via_link = outside / "pwned.txt", outside / "via-link.txt"
    hit = attack(node, tmp_path, "file_write_outside", TARGET=str(target), VIA_LINK=str(via_link))
    assert sorted(outside.iterdir()) == []
    hit.assert_named("files", "Merge.py", limit=f"tried to write {target}")


def test_job_rewrites_its_own_code(node: Node, tmp_path: Path) -> None:
    before = (HOSTILE / "file_write_job" / "Process.py").read_text()
    hit = attack(node, tmp_path, "file_write_job")
    assert (hit.job / "Process.py").read_text() == before
    assert hit.outcome.results == {}  # no result came of it, tampered or not
    hit.assert_named("files", "Process.py", limit="tried to write")


def test_proc_self_mem(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "file_proc_mem")
    hit.assert_named("files", "Process.py", limit="/proc/self/mem")


def test_proc_environ_of_the_node(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "file_proc_environ", NODE_PID=os.getpid())
    with open("/proc/self/environ", "rb") as f:
        ours = [entry.decode() for entry in f.read().split(b"\0") if len(entry) > 12]
    assert ours, "this process has an environment to steal"
    leaked = [entry for entry in ours if entry in hit.outcome.text()]
    assert leaked == []
    hit.assert_named("files", "Process.py", limit=f"/proc/{os.getpid()}/environ")


# --- signals ---------------------------------------------------------------------------


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process of our uid that jobs must leave alone."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_kill_the_fork_server(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "sig_parent")  # attack() checks the fork server after
    assert f"parent {node.pid}" in hit.outcome.out  # it aimed at the right process
    hit.assert_named("processes", "Process.py", limit="signal")


def test_signal_other_processes(
    node: Node, tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    hit = attack(node, tmp_path, "sig_others", NODE_PID=os.getpid(), VICTIM_PID=bystander.pid)
    assert _running(bystander.pid) and bystander.poll() is None
    hit.assert_named("processes", "Process.py", limit="signal")


def test_ptrace(node: Node, tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    hit = attack(node, tmp_path, "sig_ptrace", VICTIM_PID=bystander.pid)
    assert _running(bystander.pid)  # and not traced: TracerPid is 0
    hit.assert_named("processes", "Process.py", limit="signal")


# --- bombs -----------------------------------------------------------------------------


def test_memory_bomb(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "bomb_memory")
    hit.assert_named("memory", "Process.py", limit="64 MB")


def test_cpu_bomb(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "bomb_cpu")
    hit.assert_named("cpu time", limit="1 s of CPU time")
    assert hit.outcome.seconds < 30  # three tries of a CPU-second each, not 3 x 20 s


def test_wall_time_bomb(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "bomb_wall")
    hit.assert_named("wall time", limit="wall_seconds = 1")
    assert hit.outcome.seconds < 15  # three tries of a second each, not 3 x 20 s of sleep


def test_thread_bomb(node: Node, tmp_path: Path, tcp_listener: socket.socket) -> None:
    hit = attack(node, tmp_path, "bomb_threads", PORT=tcp_listener.getsockname()[1])
    assert_silent(tcp_listener)
    hit.assert_named("threads", "Process.py", limit="limit of 1")


def test_recursion_bomb(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "bomb_recursion")
    hit.assert_named("recursion", "Process.py", limit="limit of 100")


def test_more_threads_than_allowed(node: Node, tmp_path: Path) -> None:
    """threads = 2 lets seccomp allow threads, so the chief counts them."""
    hit = attack(node, tmp_path, "threads_over", limits=Limits(threads=4))
    hit.assert_named("threads", limit="threads at once, more than this job's limit of 2")
    assert hit.outcome.seconds < 8  # stopped, not left to sleep its 10 s out


# --- oversize --------------------------------------------------------------------------


def test_huge_fragment(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "big_fragment")
    assert "PROCESS-SAW" not in hit.outcome.out
    hit.assert_named("fragment size", limit="limit is 1024")


def test_huge_result(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "big_result")
    assert "MERGER-SAW" not in hit.outcome.out
    hit.assert_named("result size", limit="limit is 4096")


def test_merger_writes_a_huge_file(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "big_merge_file")
    assert len(hit.outcome.results.get("huge.bin", b"")) <= 1 << 20
    hit.assert_named("merge output", "Merge.py", limit="limit of 1 MB")


def test_merger_writes_too_many_files(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "big_merge_files")
    assert all(len(data) <= 1 << 20 for data in hit.outcome.results.values())
    hit.assert_named("merge output", limit="merge_output_mb = 1")


def test_endless_splitter(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "endless_splitter")
    hit.assert_named("finite splitter", limit="more than 50 fragments")
    assert hit.outcome.seconds < 10


# --- code ------------------------------------------------------------------------------


def test_yield_outside_splitter_is_refused_before_anything_runs(node: Node, tmp_path: Path) -> None:
    hit = attack(node, tmp_path, "yield_outside")
    assert isinstance(hit.outcome.error, JobRefused)
    assert hit.outcome.out == ""  # Split.py prints as soon as it is imported
    hit.assert_named("only splitter yields", "Process.py")


def test_pickled_result_runs_code_only_in_a_sandboxed_child(
    node: Node, tmp_path: Path, tcp_listener: socket.socket
) -> None:
    marker = tmp_path / "unpickled.txt"
    flag = "OCTOP2P_TEST_UNPICKLED"
    payload = (
        "import os, socket\n"
        f"os.environ[{flag!r}] = str(os.getpid())\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {tcp_listener.getsockname()[1]}))\n"
        "except OSError:\n"
        "    pass\n"
        f"open({str(marker)!r}, 'w').write('unpickled by ' + str(os.getpid()))\n"
    )
    hit = attack(node, tmp_path, "pickle_payload", PAYLOAD=payload)
    # Not in the node: no marker, no variable set here, nothing heard.
    assert not marker.exists()
    assert flag not in os.environ
    assert_silent(tcp_listener)
    # In the merge child, which is where results are unpickled, and refused there.
    hit.assert_named("files", limit=f"tried to write {marker}")
    assert "(in merger)" in str(hit.outcome.failed)


# --- environment -----------------------------------------------------------------------


def test_environment_secrets(node: Node, tmp_path: Path, secret: str) -> None:
    assert os.environ[SECRET_ENV] == secret  # the node has it
    hit = attack(node, tmp_path, "env_secrets")
    assert "PYTHONHASHSEED" in hit.outcome.out  # the job did print its environment
    assert secret not in hit.outcome.text()
    hit.assert_named("files", "Process.py", limit="/proc/self/environ")


def test_environment_secrets_through_the_cli(tmp_path: Path) -> None:
    """The same job under `octop2p run`, whose process started with the secret."""
    token = "clisecret-" + secrets.token_hex(16)
    job = package("env_secrets", tmp_path / "env_secrets")
    proc = run_cli(
        "run", job, "-w", "1", "-o", tmp_path / "out", "--json", env={SECRET_ENV: token}, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    assert "PYTHONHASHSEED" in proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert f"Process.py:{attack_line(job, 'Process.py')}:" in proc.stderr
    assert '"rule": "files"' in proc.stdout
    assert not (tmp_path / "out").exists()
