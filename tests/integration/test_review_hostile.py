"""Adversarial review: one hostile party (a job's child, a swarm member) must hurt at
most its own job or its own link, never the node. Real nodes on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import Hello, PackageRequest
from tests.conftest import EXAMPLES
from tests.integration.nodes import (
    NodeProcess,
    complete_handshake,
    make_swarm,
    member_socket,
    start_server,
)


@pytest.fixture
def chief_and_worker(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """A chief that does not donate and one donating worker with one core."""
    homes = make_swarm(tmp_path, ["chief", "w1"])
    nodes: list[NodeProcess] = []
    try:
        chief = NodeProcess(homes[0], "--no-discovery", "--no-donate")
        nodes.append(chief)
        nodes.append(NodeProcess(homes[1], "--no-discovery", "--donate", "--cores", "1",
                                 "--peer", chief.address))
        chief.wait_for_peers(1, donating=True)
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()


def _hostile_package(folder: Path, frame: str) -> Path:
    """A package whose process() writes ``frame`` straight onto its reply pipe."""
    folder.mkdir()
    (folder / "job.toml").write_text('name = "hostile"\n[limits]\nwall_seconds = 5\n')
    (folder / "Split.py").write_text("def splitter():\n    yield from range(2)\n")
    (folder / "Merge.py").write_text("def merger(result, results_dir):\n    pass\n")
    (folder / "Process.py").write_text(textwrap.dedent(f"""\
        import time
        from sandbox._wire import write_message

        def process(fragment):
            write_message(4, {frame})  # fd 4: the reply pipe to the node
            time.sleep(30)
        """))
    return folder


@pytest.mark.parametrize("frame", ['["result", [0], b"x"]', '["error"]', '["result"]'],
                         ids=["unhashable-seq", "error-without-seq", "result-without-seq"])
def test_hostile_child_reply_fails_the_job_not_the_worker_node(
        chief_and_worker, tmp_path: Path, frame: str) -> None:
    chief, worker = chief_and_worker
    job = _hostile_package(tmp_path / "job", frame)
    try:
        proc = chief.cli("submit", str(job), "-o", str(tmp_path / "out"), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the job hung; worker alive: {worker.proc.poll() is None}\n"
                    f"{worker.read_log()[-3000:]}")
    assert worker.proc.poll() is None, worker.read_log()[-3000:]
    assert proc.returncode == 1, proc.stderr
    assert "fragment 0" in proc.stderr, proc.stderr  # the job names its broken fragment


def test_member_that_stops_reading_does_not_stall_the_node(
        chief_and_worker, tmp_path: Path) -> None:
    """A member floods requests and never reads the answers: once the chief's send
    buffer to it is full, sends to that link must give up (and drop it) rather than hold
    its send lock forever, which stalled every job the chief started afterwards."""
    chief, _ = chief_and_worker
    s, conn = member_socket(chief, rcvbuf=4096)
    with s:
        s.sendall(conn.send(Hello(name="mute", software="x", cores=1, donating=True)))
        batch = b"".join(conn.send(PackageRequest(package=os.urandom(32), offset=0, length=1))
                         for _ in range(2000))
        s.settimeout(3)
        try:
            for _ in range(300):  # until the chief stops reading us: it is stuck sending
                s.sendall(batch)
        except TimeoutError:
            pass
        try:
            proc = chief.cli("submit", str(EXAMPLES / "primes"), "-o", str(tmp_path / "o"),
                             timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("a member that does not read stalled the chief's next job")
    assert proc.returncode == 0, proc.stderr + chief.read_log()[-3000:]


def _read_until(s, conn, kinds: tuple[type, ...]):  # noqa: ANN001, ANN202
    """The first message of one of ``kinds`` the peer sends (the socket has a timeout)."""
    from protocol import MessageReceived

    while True:
        event = conn.next_event()
        if event is None:
            data = s.recv(65536)
            assert data, "the node closed the connection"
            conn.receive_data(data)
        elif isinstance(event, MessageReceived) and isinstance(event.message, kinds):
            return event.message


def test_job_code_client_cannot_submit_jobs_to_the_server(tmp_path: Path) -> None:
    """`octop2p client --code` joins the server's one job (JOBS.md section 4): the code
    makes it a worker, not a swarm member; the server must not become chief of (and run
    the splitter, merger or final of) a job the client sends."""
    import io
    import socket
    import tarfile

    from protocol import (
        Connection,
        Envelope,
        EnvelopeKind,
        Error,
        ErrorCode,
        JobCode,
        JobKind,
        JobStatus,
        JobSubmit,
        NodeIdentity,
        Role,
    )

    server, first = start_server(EXAMPLES / "wordcount.py", tmp_path / "srv")
    try:
        identity = NodeIdentity.generate()
        conn = Connection(Role.INITIATOR, identity, job_code=JobCode.parse(first["code"]))
        with socket.create_connection(("127.0.0.1", first["port"]), timeout=10) as s:
            complete_handshake(s, conn)
            script = b"source = {'a': 'x'}\ndef mapfn(k, v):\n    yield k, 1\n" \
                     b"def reducefn(k, vs):\n    return k, len(vs)\n"
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo("mine.py")
                info.size = len(script)
                tar.addfile(info, io.BytesIO(script))
            envelope = Envelope.sign(identity, EnvelopeKind.PACKAGE, os.urandom(16), 0,
                                     buf.getvalue())
            s.sendall(conn.send(JobSubmit(package=envelope, kind=JobKind.SCRIPT, name="mine",
                                          script="mine.py", options={"name": "mine"})))
            reply = _read_until(s, conn, (JobStatus, Error))
    finally:
        server.kill()
        server.wait()
    assert isinstance(reply, Error), reply
    assert reply.code == ErrorCode.REFUSED


def test_chief_cannot_make_a_worker_run_more_jobs_than_it_has_cores(chief_and_worker) -> None:
    """Each job a worker takes gets at least one sandboxed child: a member offering many
    jobs at once must not get more of them running than the worker donates cores."""
    import time

    from protocol import Error, ErrorCode, JobInfo, JobKind

    _, worker = chief_and_worker  # donates 1 core
    s, conn = member_socket(worker)
    with s:
        for _ in range(4):
            s.sendall(conn.send(JobInfo(
                job_id=os.urandom(16), name="greedy", kind=JobKind.PACKAGE, script=None,
                package=os.urandom(32), package_size=10, submitter=b"\3" * 32,
                package_signature=b"\4" * 64, options={"name": "greedy"})))
        refusals = 0
        s.settimeout(1)
        deadline = time.monotonic() + 5
        while refusals < 3 and time.monotonic() < deadline:
            try:
                reply = _read_until(s, conn, (Error,))
            except TimeoutError:
                break
            refusals += reply.code == ErrorCode.REFUSED
        log = worker.read_log()
    assert log.count("working on job greedy") == 1, log[-3000:]
    assert refusals == 3


def test_workers_stop_a_job_once_it_failed_on_the_chief(chief_and_worker, tmp_path: Path) -> None:
    """When a job fails the chief tells its workers; before, a worker's sender task had
    already forgotten it, so the worker kept the job (and its sandboxed child) for good."""
    import time

    import trio

    from octop2p.net._control import ControlClient

    chief, worker = chief_and_worker
    job = tmp_path / "broken"
    job.mkdir()
    (job / "Split.py").write_text("def splitter():\n    yield from range(10)\n")
    (job / "Process.py").write_text("def process(x):\n    return {}[x]\n")
    (job / "Merge.py").write_text("def merger(r, d):\n    pass\n")
    assert chief.cli("submit", str(job)).returncode == 1

    async def running() -> list:
        return await ControlClient(worker.home / "control.sock").call("running")

    deadline = time.monotonic() + 8
    while (still := trio.run(running)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still == [], worker.read_log()[-3000:]
