"""Real nodes in their own homes on 127.0.0.1: a chief, donating workers, one swarm."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, run_cli
from tests.integration.nodes import NodeProcess, make_swarm, member_socket, start_server


@pytest.fixture
def swarm_of_three(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess, NodeProcess]]:
    """A chief that does not donate, and two donating workers that know it (static peers)."""
    homes = make_swarm(tmp_path, ["chief", "w1", "w2"])
    nodes: list[NodeProcess] = []
    try:
        chief = NodeProcess(homes[0], "--no-discovery", "--no-donate")
        nodes.append(chief)
        for home in homes[1:]:
            nodes.append(
                NodeProcess(
                    home, "--no-discovery", "--donate", "--cores", "1", "--peer", chief.address
                )
            )
        chief.wait_for_peers(2, donating=True)
        yield nodes[0], nodes[1], nodes[2]
    finally:
        for node in nodes:
            node.stop()


def test_static_peers_job_right_answer_and_both_workers_take_part(
    swarm_of_three, tmp_path: Path
) -> None:
    chief, w1, w2 = swarm_of_three
    out = tmp_path / "out"
    proc = chief.cli("submit", str(EXAMPLES / "primes"), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr + chief.read_log()
    assert int((out / "count.txt").read_text()) == 664579
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["state"] == "done"
    # The chief does not donate: every fragment was computed by one of the two workers.
    assert set(report["workers"]) == {w1.id, w2.id}
    assert sum(report["workers"].values()) == 100
    status = json.loads(chief.cli("status", report["job"], "--json").stdout)
    assert status["fragments_done"] == status["fragments_total"] == 100
    assert status["workers"] == report["workers"]


def test_mapreduce_across_nodes_matches_local_run(swarm_of_three, tmp_path: Path) -> None:
    chief, _, _ = swarm_of_three
    net = chief.cli("submit", str(EXAMPLES / "wordcount_lazy.py"), "-o", str(tmp_path / "n"))
    local = run_cli("run", EXAMPLES / "wordcount_lazy.py", "-o", tmp_path / "l")
    assert net.returncode == 0 and local.returncode == 0, net.stderr + local.stderr
    assert net.stdout == local.stdout and net.stdout.count("\n") > 100


def test_killed_worker_mid_job_still_byte_identical(tmp_path: Path) -> None:
    """kill -9 of a worker while it holds fragments: the job completes, same bytes."""
    job = tmp_path / "slowjob"
    job.mkdir()
    # 80 fragments of 0.15 s on two workers: several seconds, so the kill lands mid-job
    # even when each `status` poll (a fresh CLI process) is slow.
    (job / "Split.py").write_text("def splitter():\n    for i in range(80):\n        yield i\n")
    (job / "Process.py").write_text(
        "import time, hashlib\n"
        "def process(i):\n"
        "    time.sleep(0.15)\n"
        "    return hashlib.sha256(str(i).encode()).hexdigest()\n"
    )
    (job / "Merge.py").write_text(
        "def merger(result, results_dir):\n"
        "    with open(results_dir / 'all.txt', 'a') as f:\n"
        "        f.write(result + '\\n')\n"
    )
    reference = run_cli("run", job, "-w", "2", "-o", tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr

    homes = make_swarm(tmp_path, ["chief", "victim", "survivor"])
    chief = NodeProcess(homes[0], "--no-discovery", "--no-donate")
    victim = NodeProcess(
        homes[1], "--no-discovery", "--donate", "--cores", "1", "--peer", chief.address
    )
    survivor = NodeProcess(
        homes[2], "--no-discovery", "--donate", "--cores", "1", "--peer", chief.address
    )
    try:
        chief.wait_for_peers(2, donating=True)
        submitted = chief.cli("submit", str(job), "--no-wait", "--json")
        job_id = json.loads(submitted.stdout)["job"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the victim has done some work
            status = json.loads(chief.cli("status", job_id, "--json").stdout)
            if status["workers"].get(victim.id, 0) >= 2:
                break
            time.sleep(0.1)
        assert status["state"] == "running", status
        victim.kill()
        deadline = time.monotonic() + 60
        while status["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = json.loads(chief.cli("status", job_id, "--json").stdout)
        assert status["state"] == "done", (status.get("error"), status)
        fetched = chief.cli("fetch", job_id, "-o", str(tmp_path / "net"))
        assert fetched.returncode == 0, fetched.stderr
        assert status["workers"].get(survivor.id, 0) > 0
    finally:
        for node in (chief, victim, survivor):
            node.stop()
    ref = (tmp_path / "ref" / "all.txt").read_bytes()
    assert (tmp_path / "net" / "all.txt").read_bytes() == ref
    assert ref.count(b"\n") == 80


def test_garbage_and_half_open_connections_do_not_stop_the_node(
    swarm_of_three, tmp_path: Path
) -> None:
    chief, _, _ = swarm_of_three
    idle = [socket.create_connection(("127.0.0.1", chief.port)) for _ in range(20)]
    for i in range(10):
        with socket.create_connection(("127.0.0.1", chief.port)) as s:
            s.sendall(hashlib.sha256(str(i).encode()).digest() * 50)  # not a handshake
            s.settimeout(5)
            try:
                while s.recv(4096):  # the node answers with a refusal, then closes
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    with socket.create_connection(("127.0.0.1", chief.port)) as s:
        s.sendall(b"\xff\xff\xff\xff")  # a 4 GB length prefix: costs the node nothing
    proc = chief.cli("submit", str(EXAMPLES / "montecarlo_pi"), "-o", str(tmp_path / "pi"))
    assert proc.returncode == 0, proc.stderr
    assert len(chief.peers()) == 2  # the real peers are still linked
    for s in idle:
        s.close()


def test_server_and_client_with_the_seed_wordcount(tmp_path: Path) -> None:

    server, first = start_server(
        EXAMPLES / "wordcount.py", tmp_path / "srv", "-o", str(tmp_path / "out")
    )
    try:
        code, port = first["code"], first["port"]
        client = run_cli(
            "client",
            f"127.0.0.1:{port}",
            "--code",
            code,
            "--cores",
            "1",
            "--home",
            str(tmp_path / "cli"),
            timeout=60,
        )
        assert client.returncode == 0, client.stderr
        stdout, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, stderr
    local = run_cli("run", EXAMPLES / "wordcount.py", "-o", tmp_path / "local")
    # --json: JSON lines only ("serving" came first), the job's output is in output.txt.
    done = json.loads(stdout)
    assert done["event"] == "done" and done["state"] == "done"
    output = (tmp_path / "out" / "output.txt").read_text()
    assert output == local.stdout and output.count("\n") > 100


def test_wrong_code_client_gets_nothing(tmp_path: Path) -> None:

    server, first = start_server(EXAMPLES / "wordcount.py", tmp_path / "srv")
    try:
        real = first["code"].replace("-", "")
        # A well-formed code (right check digit) that is not the server's.
        from protocol import JobCode

        wrong = str(JobCode(str((int(real[:11]) + 1) % 10**11).zfill(11)))
        client = run_cli(
            "client",
            f"127.0.0.1:{first['port']}",
            "--code",
            wrong,
            "--home",
            str(tmp_path / "cli"),
            timeout=60,
        )
        assert client.returncode == 69
        assert not any((tmp_path / "cli").rglob("*.py"))  # no job code reached it
    finally:
        server.kill()
        server.wait()


def test_submit_to_another_chief(swarm_of_three, tmp_path: Path) -> None:
    """`submit --chief ID`: the named node, which donates, is chief of the job."""
    chief, _, w2 = swarm_of_three
    # The node called "chief" here only submits; w2 (donating, linked to it) is chief.
    proc = chief.cli(
        "submit",
        str(EXAMPLES / "primes"),
        "--chief",
        w2.id,
        "-o",
        str(tmp_path / "out"),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr + w2.read_log()
    assert int((tmp_path / "out" / "count.txt").read_text()) == 664579
    jobs = json.loads(w2.cli("jobs", "--json").stdout)["jobs"]
    assert len(jobs) == 1 and jobs[0]["state"] == "done"
    assert jobs[0]["workers"] == {w2.id: 100}  # its own donated core
    assert json.loads(chief.cli("jobs", "--json").stdout)["jobs"][0]["state"] == "done"
    # A short prefix of the id is refused: an attacker could grind a key to match it.
    proc = chief.cli("submit", str(EXAMPLES / "primes"), "--chief", w2.id[:7])
    assert proc.returncode == 2 and "full node id" in proc.stderr, proc.stderr


def test_node_that_does_not_donate_is_chief_only_of_its_own_jobs(swarm_of_three) -> None:
    """Consent: being chief runs the job's splitter and merger, which is computing for
    the submitter; a node whose owner does not donate refuses."""
    chief, w1, _ = swarm_of_three  # this chief does not donate
    proc = w1.cli("submit", str(EXAMPLES / "primes"), "--chief", chief.id)
    assert proc.returncode == 1
    assert "not switched donation on" in proc.stderr
    assert json.loads(chief.cli("jobs", "--json").stdout)["jobs"] == []


def test_submit_to_another_chief_refused_job_names_rule(swarm_of_three, tmp_path: Path) -> None:
    chief, w1, _ = swarm_of_three
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Split.py").write_text("def splitter():\n    yield 1\n")
    (bad / "Process.py").write_text("def process(x):\n    return x\n")
    (bad / "Merge.py").write_text("def merger(r, d):\n    yield r\n")
    proc = w1.cli("submit", str(bad), "--chief", chief.id)
    assert proc.returncode == 1
    assert "Merge.py:2" in proc.stderr and "yield" in proc.stderr


def test_failing_network_job_reports_traceback_and_chief_keeps_serving(
    swarm_of_three, tmp_path: Path
) -> None:
    chief, _, _ = swarm_of_three
    job = tmp_path / "broken"
    job.mkdir()
    (job / "Split.py").write_text("def splitter():\n    for i in range(10):\n        yield i\n")
    (job / "Process.py").write_text("def process(x):\n    return {}[x]\n")
    (job / "Merge.py").write_text("def merger(r, d):\n    pass\n")
    proc = chief.cli("submit", str(job))
    assert proc.returncode == 1
    assert "KeyError" in proc.stderr and 'Process.py", line 2, in process' in proc.stderr
    again = chief.cli("submit", str(EXAMPLES / "primes"), "-o", str(tmp_path / "ok"))
    assert again.returncode == 0, again.stderr + chief.read_log()
    assert int((tmp_path / "ok" / "count.txt").read_text()) == 664579


def test_thread_limit_on_a_remote_worker(tmp_path: Path) -> None:
    homes = make_swarm(tmp_path, ["chief", "w"])
    for home in homes:  # by default a node allows one thread per job; these allow 4
        (home / "config.toml").write_text("[limits]\nthreads = 4\n")
    chief = NodeProcess(homes[0], "--no-discovery", "--no-donate")
    worker = NodeProcess(
        homes[1], "--no-discovery", "--donate", "--cores", "1", "--peer", chief.address
    )
    job = tmp_path / "threads"
    job.mkdir()
    (job / "Split.py").write_text("def splitter():\n    yield 1\n")
    (job / "Process.py").write_text(
        "import threading, time\n"
        "def process(x):\n"
        "    ts = [threading.Thread(target=time.sleep, args=(2,)) for _ in range(20)]\n"
        "    for t in ts:\n"
        "        t.start()\n"
        "    for t in ts:\n"
        "        t.join()\n"
        "    return x\n"
    )
    (job / "Merge.py").write_text("def merger(r, d):\n    pass\n")
    (job / "job.toml").write_text("[limits]\nthreads = 2\n")
    try:
        chief.wait_for_peers(1, donating=True)
        proc = chief.cli("submit", str(job), timeout=90)
    finally:
        chief.stop()
        worker.stop()
    assert proc.returncode == 1
    # Stopped either when starting a thread failed, or by the worker's thread count.
    assert "limit of 2" in proc.stderr and "(on worker " in proc.stderr
    assert proc.stderr.count("(rule: threads)") == 1


def test_peer_that_resets_after_the_handshake_does_not_stop_the_node(
    swarm_of_three, tmp_path: Path
) -> None:
    import struct

    chief, _, _ = swarm_of_three
    for _ in range(3):
        s, _conn = member_socket(chief)
        # Hang up hard (RST), with the chief's Hello unread, once the chief is reading.
        time.sleep(0.5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    proc = chief.cli("submit", str(EXAMPLES / "primes"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr + chief.read_log()
    assert chief.proc.poll() is None


def test_member_sending_nonsense_options_loses_only_its_link(
    swarm_of_three, tmp_path: Path
) -> None:
    """A swarm member is trusted to be in the swarm, not to be correct: a JobInfo whose
    options break the rules closes that one link; the node goes on."""
    from protocol import JobInfo, JobKind

    _, w1, _ = swarm_of_three  # w1 donates, so it takes JobInfo
    s, conn = member_socket(w1)
    with s:
        info = JobInfo(
            job_id=b"\1" * 16,
            name="x",
            kind=JobKind.PACKAGE,
            script=None,
            package=b"\2" * 32,
            package_size=10,
            submitter=b"\3" * 32,
            package_signature=b"\4" * 64,
            options={"name": "x", "limits": {"memory_mb": -5}},
        )
        s.sendall(conn.send(info))
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
    assert w1.proc.poll() is None
    assert "closing the link" in w1.read_log() or "refus" in w1.read_log()
    proc = w1.cli("peers", "--json")
    assert proc.returncode == 0


def _fast_then_slow(tmp_path: Path) -> Path:
    """200 instant fragments, then 100 of 0.2 s. After the instant ones a donor's credit
    window has grown, so many slow fragments queue in its inbox: their leases must not
    run out while they wait there (wall_seconds = 2 makes leases short)."""
    job = tmp_path / "fastslow"
    job.mkdir()
    (job / "Split.py").write_text("def splitter():\n    yield from range(300)\n")
    (job / "Process.py").write_text(
        "import time\n"
        "def process(i):\n"
        "    if i >= 200:\n"
        "        time.sleep(0.2)\n"
        "    return i\n"
    )
    (job / "Merge.py").write_text(
        "def merger(result, results_dir):\n"
        "    with open(results_dir / 'sum.txt', 'a') as f:\n"
        "        f.write(f'{result}\\n')\n"
    )
    (job / "job.toml").write_text("[limits]\nwall_seconds = 2\n")
    return job


@pytest.mark.parametrize("donors", [1, 2])
def test_fast_then_slow_fragments_finish(tmp_path: Path, donors: int) -> None:
    homes = make_swarm(tmp_path, ["chief", *[f"w{i}" for i in range(donors)]])
    nodes = [NodeProcess(homes[0], "--no-discovery", "--no-donate")]
    try:
        for home in homes[1:]:
            nodes.append(NodeProcess(home, "--no-discovery", "--donate", "--cores", "1",
                                     "--peer", nodes[0].address))
        nodes[0].wait_for_peers(donors, donating=True)
        out = tmp_path / "out"
        proc = nodes[0].cli("submit", str(_fast_then_slow(tmp_path)), "-o", str(out),
                            timeout=240)
        assert proc.returncode == 0, proc.stderr + nodes[0].read_log()
        assert (out / "sum.txt").read_text() == "".join(f"{i}\n" for i in range(300))
    finally:
        for node in nodes:
            node.stop()
