"""What a new user meets on the command line (issue 14), through the real `octop2p`
command in a subprocess: the message, the stream it goes to, the exit code, and exactly
one JSON object where --json is given."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT, run_cli
from tests.integration.nodes import NodeProcess, make_swarm

RUN_KEYS = {"job", "name", "state", "results", "fragments", "seconds", "workers"}


def _package(folder: Path, *, merge_print: bool = True, limits: str = "") -> Path:
    """A small package that prints from its splitter and its merger."""
    folder.mkdir()
    (folder / "Split.py").write_text(
        "def splitter():\n    print('splitting')\n    for i in range(3):\n        yield i\n"
    )
    (folder / "Process.py").write_text("def process(fragment):\n    return fragment * 2\n")
    body = "print('merged', result)" if merge_print else "pass"
    (folder / "Merge.py").write_text(f"def merger(result, results_dir):\n    {body}\n")
    if limits:
        (folder / "job.toml").write_text(f"[limits]\n{limits}\n")
    return folder


def _one_json(stdout: str) -> dict:
    """stdout must be exactly one JSON object (json.loads fails on "Extra data")."""
    return json.loads(stdout)


@pytest.fixture
def idle_node(tmp_path: Path):
    """A node in a swarm of its own that does not donate: nothing can run its jobs."""
    (home,) = make_swarm(tmp_path, ["a"])
    node = NodeProcess(home, "--no-discovery")
    yield node
    node.stop()


@pytest.fixture
def donor(tmp_path: Path):
    (home,) = make_swarm(tmp_path, ["d"])
    node = NodeProcess(home, "--no-discovery", "--donate", "--cores", "1")
    yield node
    node.stop()


def _submit(node: NodeProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "octop2p", "submit", *args, "--home", str(node.home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> str:
    """stderr of ``proc`` until a line matches ``pattern``."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no line matching {pattern!r} in:\n{seen}")


# --- item 1 and 4: submit is never silent; Ctrl-C leaves the job and says where it is --


def test_submit_says_what_it_waits_for_and_ctrl_c_leaves_the_job(idle_node) -> None:
    proc = _submit(idle_node, str(EXAMPLES / "primes"))
    try:
        started = time.monotonic()
        seen = _read_until(proc, r"^waiting: ", timeout=20)
        # Shared CI machines are slow to start Python; the check itself comes at 0.3 s.
        assert time.monotonic() - started < 15
        job = re.search(r"submitted primes as job ([0-9a-f]{32})", seen)
        assert job, seen
        assert "no donating worker in reach: switch donation on here " \
               "(`octop2p node --donate`) or ask a swarm member to" in seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130
    job_id = job.group(1)
    assert f"job {job_id} (primes) keeps running on the node" in err
    assert f"`octop2p fetch {job_id}`" in err and f"`octop2p cancel {job_id}`" in err
    assert out == ""
    status = idle_node.cli("status", job_id[:8], "--json")
    assert status.returncode == 0, status.stderr
    shown = _one_json(status.stdout)
    assert shown["state"] == "running"
    assert shown["waiting"].startswith("no donating worker in reach")
    table = idle_node.cli("jobs")
    assert table.stdout.splitlines()[0].split() == [
        "JOB", "NAME", "STATE", "PHASE", "FRAGMENTS", "WORKERS", "NOTE"]
    assert "waiting: no donating worker in reach" in table.stdout


class Terminal:
    """`octop2p submit` on a pseudo-terminal of its own (its controlling terminal, so a
    typed Ctrl-C reaches it as on a desktop): what it shows, with colours stripped."""

    ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")
    # Runs in the child: take the terminal as controlling terminal, then become octop2p.
    LAUNCH = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
              "os.execv(sys.executable, [sys.executable, '-m', 'octop2p', *sys.argv[1:]])")

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-c", self.LAUNCH, *args], stdin=slave,
                                     stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.seen = ""

    def read_until(self, pattern: str, timeout: float) -> re.Match[str]:
        """Read the screen until ``pattern`` shows (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(0.0, min(left, 0.5)))
            try:
                chunk = os.read(self.master, 65536) if ready else b""
            except OSError:  # EIO: the command ended and closed the terminal
                chunk = b""
            self.seen += self.ANSI.sub("", chunk.decode(errors="replace"))
            if left <= 0 or (not chunk and self.proc.poll() is not None):
                raise AssertionError(f"no {pattern!r} on the terminal:\n{self.seen[-3000:]}")
        return found

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> int:
        """Wait for the command (killed after 20 s); its exit code."""
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.proc.kill()
            os.close(self.master)


@pytest.mark.parametrize(("answer", "state"), [("cancel", "cancelled"), ("l", "running")])
def test_ctrl_c_on_a_terminal_asks_and_says_how_to_reach_the_job(donor, tmp_path: Path,
                                                                   answer: str,
                                                                   state: str) -> None:
    slow = _package(tmp_path / "slow", merge_print=False)
    (slow / "Split.py").write_text("def splitter():\n    yield from range(300)\n")
    (slow / "Process.py").write_text("import time\ndef process(f):\n    time.sleep(0.2)\n"
                                     "    return f\n")
    term = Terminal("submit", str(slow), "--home", str(donor.home))
    try:
        job = term.read_until(r"submitted slow as job ([0-9a-f]{32})", 30).group(1)
        term.read_until(r" [1-9]\d*/(\?|300) ", 30)  # the progress bar: a worker runs it
        term.type(b"\x03")  # Ctrl-C, as typed
        term.read_until(r"still running: \[c\]ancel it or \[l\]eave it running\?.*:", 20)
        term.type(answer.encode() + b"\n")
        verb = "cancelled" if state == "cancelled" else "keeps running on the node"
        term.read_until(rf"interrupted: job {job} \(slow\) {verb}", 20)
        term.read_until(rf"`octop2p status {job}`, `octop2p fetch {job}`, "
                        rf"`octop2p cancel {job}`", 5)
        assert term.close() == 130
    finally:
        term.proc.kill()
    deadline = time.monotonic() + 15
    while (shown := _one_json(donor.cli("status", job, "--json").stdout))["state"] != state:
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)
    if state == "running":  # it goes on without the command
        done = shown["fragments_done"]
        time.sleep(1.5)
        assert _one_json(donor.cli("status", job, "--json").stdout)["fragments_done"] > done
        assert donor.cli("cancel", job).returncode == 0


def test_submit_interrupted_with_json_is_one_object(idle_node) -> None:
    proc = _submit(idle_node, str(EXAMPLES / "primes"), "--json")
    try:
        _read_until(proc, r"^waiting: ", timeout=20)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130
    shown = _one_json(out)
    assert shown["state"] == "interrupted" and len(shown["job"]) == 32


# --- item 5 and 7: output contracts; submit prints what run prints ----------------------


def test_submit_prints_like_run_and_json_has_runs_keys(donor, tmp_path: Path) -> None:
    job = _package(tmp_path / "pk", limits="memory_mb = 999999")
    ran = run_cli("run", job, "-w", "1", "-o", tmp_path / "r1", "--json")
    sub = donor.cli("submit", str(job), "-o", str(tmp_path / "r2"), "--json")
    assert ran.returncode == 0 and sub.returncode == 0, sub.stderr
    ran_obj, sub_obj = _one_json(ran.stdout), _one_json(sub.stdout)
    assert set(ran_obj) == RUN_KEYS and set(sub_obj) == RUN_KEYS
    assert sub_obj["name"] == "pk" and sub_obj["fragments"] == 3 and sub_obj["seconds"] > 0
    for err in (ran.stderr, sub.stderr):
        assert "splitter: splitting" in err
        assert "merger: merged 4" in err
        assert "warning: limits.memory_mb = 999999 is above this node's limit" in err
    assert re.search(r"submitted pk as job [0-9a-f]{32}", sub.stderr)
    plain = donor.cli("submit", str(job), "-o", str(tmp_path / "r2"))
    assert plain.returncode == 0 and plain.stdout == ""  # merger prints: stderr only
    # A script's `final` prints go to stdout, as with run; with --json only the object.
    script = EXAMPLES / "wordcount.py"
    counted = donor.cli("submit", str(script), "-o", str(tmp_path / "w1"))
    local = run_cli("run", script, "-o", tmp_path / "w2", cwd=EXAMPLES)
    assert counted.returncode == 0 and counted.stdout.count("\n") > 100
    assert sorted(counted.stdout.splitlines()) == sorted(local.stdout.splitlines())
    quiet = donor.cli("submit", str(script), "-o", str(tmp_path / "w1"), "--json")
    assert set(_one_json(quiet.stdout)) == RUN_KEYS


@pytest.fixture
def chief_and_member(tmp_path: Path):
    """A chief that donates one core, and a member that does not, linked to it."""
    homes = make_swarm(tmp_path, ["chief", "member"])
    chief = NodeProcess(homes[0], "--no-discovery", "--donate", "--cores", "1")
    try:
        member = NodeProcess(homes[1], "--no-discovery", "--no-donate", "--peer", chief.address)
    except BaseException:
        chief.stop()
        raise
    try:
        member.wait_for_peers(1, donating=True)
        yield chief, member
    finally:
        member.stop()
        chief.stop()


def _as_run_shows(lines: list[str]) -> list[str]:
    return sorted(line for line in lines if re.match(r"(splitter|merger|warning): ", line))


def test_a_chief_submitter_sees_what_run_shows_as_it_comes(chief_and_member,
                                                           tmp_path: Path) -> None:
    chief, member = chief_and_member
    job = _package(tmp_path / "pk", limits="memory_mb = 999999")
    (job / "Process.py").write_text(  # the last fragment comes seconds after the others
        "import time\ndef process(fragment):\n    if fragment == 2:\n        time.sleep(3)\n"
        "    return fragment * 2\n")
    ran = run_cli("run", job, "-w", "1", "-o", tmp_path / "r1")
    assert ran.returncode == 0, ran.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "octop2p", "submit", str(job), "--chief", chief.id,
         "-o", str(tmp_path / "r2"), "--home", str(member.home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = [(time.monotonic(), line.rstrip("\n")) for line in proc.stderr]
    assert proc.wait(timeout=60) == 0, seen
    lines = [line for _, line in seen]
    # The same lines, with the same prefixes, as `run` shows (merges come in any order).
    assert _as_run_shows(lines) == _as_run_shows(ran.stderr.splitlines())
    assert {"splitter: splitting", "merger: merged 0", "merger: merged 4"} <= set(lines)
    assert any(line.startswith("warning: limits.memory_mb = 999999 is above this node's "
                               "limit") for line in lines), lines
    # Live: the merger's first print reached the submitter while the job still ran.
    first = next(at for at, line in seen if line.startswith("merger: "))
    done = next(at for at, line in seen if line.startswith("done: "))
    assert done - first > 2, seen


def test_failed_submit_json_is_one_object(donor, tmp_path: Path) -> None:
    job = tmp_path / "boom.py"
    job.write_text(
        "source = {'a': 'x'}\n\ndef mapfn(k, v):\n    yield v, 1\n\n"
        "def reducefn(k, vs):\n    return k, 1 / 0\n"
    )
    proc = donor.cli("submit", str(job), "--json", "-o", str(tmp_path / "o"))
    assert proc.returncode == 1
    shown = _one_json(proc.stdout)
    assert shown["state"] == "failed" and len(shown["job"]) == 32
    assert "ZeroDivisionError" in shown["error"]
    # The user's own file and line; no temporary folder, no engine frame.
    assert 'File "boom.py", line 7, in reducefn' in proc.stderr
    assert "/tmp" not in proc.stderr.split("error:")[0]
    assert "collections" not in proc.stderr and "JobCodeError" not in proc.stderr


def test_tables_go_to_stdout_with_a_header(tmp_path: Path) -> None:
    homes = make_swarm(tmp_path, ["a", "b"])
    a = NodeProcess(homes[0], "--no-discovery", "--donate", "--cores", "1")
    b = NodeProcess(homes[1], "--no-discovery", "--peer", a.address)
    try:
        b.wait_for_peers(1)
        a.wait_for_peers(1)
        peers = a.cli("peers")
        assert peers.returncode == 0
        lines = peers.stdout.splitlines()
        assert lines[0].split() == ["ID", "ADDRESS", "CORES", "DONATING", "TRUSTED", "NAME",
                                    "NOTE"]
        assert b.id in peers.stdout and "not donating" in peers.stdout
        donating = b.cli("peers")
        assert [line for line in donating.stdout.splitlines() if " donating " in line]
        # b dialled a: a shows b at the port b listens on, not its ephemeral source port.
        assert f"127.0.0.1:{b.port}" in peers.stdout
    finally:
        a.stop()
        b.stop()
    doctor = run_cli("doctor", "--home", homes[0])
    assert doctor.returncode == 0
    assert "sandbox layers" in doctor.stdout and "LAYER" in doctor.stdout
    assert "INDEX" in doctor.stdout and doctor.stderr == ""


# --- item 6: exit codes ----------------------------------------------------------------


def test_exit_codes_follow_the_readme(idle_node, tmp_path: Path) -> None:
    unknown = idle_node.cli("submit", str(EXAMPLES / "primes"), "--chief", "ZZZZZZZ", "--json")
    assert unknown.returncode == 69, unknown.stderr
    assert _one_json(unknown.stdout)["exit_code"] == 69
    for command in ("run", "submit"):
        missing = run_cli(command, tmp_path / "nope", "--home", idle_node.home)
        assert missing.returncode == 2
        assert "nope: no such file or folder" in missing.stderr
        assert "docs/jobs.md#a-split--process--merge-package" in missing.stderr
        no_parent = run_cli(command, EXAMPLES / "primes", "-o", tmp_path / "no" / "out",
                            "--home", idle_node.home)
        assert no_parent.returncode == 2
        assert f"the folder {tmp_path / 'no'} for -o" in no_parent.stderr
        assert not (tmp_path / "no").exists()
    sub = idle_node.cli("submit", str(EXAMPLES / "primes"), "--no-wait", "--json")
    job = _one_json(sub.stdout)["job"]
    fetched = idle_node.cli("fetch", job, "--json")
    assert fetched.returncode == 2
    assert f"job {job} is still running" in fetched.stderr
    assert _one_json(fetched.stdout)["exit_code"] == 2


# --- item 3: start-up errors -----------------------------------------------------------


def test_node_start_up_errors_are_one_line_naming_the_setting(tmp_path: Path) -> None:
    (home,) = make_swarm(tmp_path, ["a"])
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        busy = run_cli("node", "--home", home, "--no-discovery", "--listen",
                       f"127.0.0.1:{port}", timeout=60)
    finally:
        holder.close()
    assert busy.returncode == 2
    assert f"error: port {port} on 127.0.0.1 is already in use" in busy.stderr
    assert "--listen" in busy.stderr and "listen_port" in busy.stderr
    assert "Traceback" not in busy.stderr
    bad = run_cli("node", "--home", home, "--no-discovery", "--listen", "nonsense", timeout=60)
    assert bad.returncode == 2
    assert "cannot listen on 'nonsense'" in bad.stderr and "Traceback" not in bad.stderr
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        ro = run_cli("node", "--home", locked / "home", "--no-discovery", timeout=60)
        assert ro.returncode == 2
        assert "--home" in ro.stderr and "Traceback" not in ro.stderr


# --- item 9: swarm join, client, server ------------------------------------------------


def test_swarm_join_needs_force_to_leave_a_swarm(tmp_path: Path) -> None:
    a, b = make_swarm(tmp_path, ["a"]) + make_swarm(tmp_path / "other", ["b"])
    code_b = json.loads(run_cli("swarm", "show", "--json", "--home", b).stdout)["code"]
    before = run_cli("swarm", "show", "--home", a).stdout
    refused = run_cli("swarm", "join", code_b, "--home", a)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert run_cli("swarm", "show", "--home", a).stdout == before
    forced = run_cli("swarm", "join", code_b, "--force", "--home", a)
    assert forced.returncode == 0
    assert run_cli("swarm", "show", "--home", a).stdout.strip() == code_b


def test_client_without_a_code_off_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli("client", "localhost", "--home", tmp_path / "c")
    assert proc.returncode == 2
    assert "--code" in proc.stderr


def test_no_message_cites_jobs_md_and_every_docs_anchor_exists() -> None:
    anchors = set()
    for line in (ROOT / "docs" / "jobs.md").read_text().splitlines():
        if line.startswith("## "):
            title = re.sub(r"[^\w\- ]", "", line[3:].strip().lower())
            anchors.add(title.replace(" ", "-"))
    for folder in ("octop2p", "sandbox", "gui"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert "JOBS.md" not in text, path
            for anchor in re.findall(r"docs/jobs\.md#([\w-]+)", text):
                assert anchor in anchors, f"{path}: docs/jobs.md#{anchor}"
