"""`octop2p doctor` through the real CLI: layers and why they are off, would it donate,
its port, the machine's interfaces; --json keeps a stable shape; the home is only read."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path
from subprocess import CompletedProcess, run

import pytest

from sandbox import ALL_LAYERS
from tests.conftest import ROOT, run_cli


def doctor_json(home: Path) -> dict:
    proc = run_cli("doctor", "--home", home, "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_shape(tmp_path: Path) -> None:
    report = doctor_json(tmp_path / "home")
    assert {"sandbox", "donate_ok", "interfaces", "port"} <= set(report)
    assert set(report["sandbox"]) == set(ALL_LAYERS)
    for status in report["sandbox"].values():
        assert set(status) == {"available", "detail"}
        assert isinstance(status["available"], bool) and status["detail"]
    every_layer = all(status["available"] for status in report["sandbox"].values())
    assert report["donate_ok"] is every_layer  # no override in a fresh home
    assert report["port"] == 7878  # the default, with no config.toml
    for interface in report["interfaces"]:
        assert set(interface) == {"index", "name", "addresses"}
    by_name = {interface["name"]: interface for interface in report["interfaces"]}
    assert by_name["lo"]["index"] == socket.if_nametoindex("lo")
    assert "127.0.0.1/8" in by_name["lo"]["addresses"]
    assert {name for _i, name in socket.if_nameindex()} <= set(by_name)


def test_reads_port_and_override_from_the_homes_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("listen_port = 17878\nunconfined_trusted_swarm = true\n")
    report = doctor_json(home)
    assert report["port"] == 17878
    assert report["unconfined_trusted_swarm"] is True
    assert report["donate_ok"] is True  # whatever this machine lacks, its owner said so


def test_a_missing_layer_is_shown_with_why_and_stops_donation(tmp_path: Path) -> None:
    """The CLI as installed, on a machine whose probe finds Landlock off."""
    code = textwrap.dedent("""
        import sys, sandbox
        real = sandbox.probe
        def probe():
            found = real()
            found["landlock"] = sandbox.LayerStatus(False, "LSM list lacks landlock")
            return found
        sandbox.probe = probe
        from octop2p.cli import main
        main(sys.argv[1:])
    """)

    def doctor(*args: str) -> CompletedProcess[str]:
        return run(
            [sys.executable, "-c", code, "doctor", "--home", str(tmp_path / "h"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    report = json.loads(doctor("--json").stdout)
    assert report["sandbox"]["landlock"] == {
        "available": False,
        "detail": "LSM list lacks landlock",
    }
    assert report["donate_ok"] is False
    human = doctor().stdout  # the report is the command's result
    assert "off  landlock  LSM list lacks landlock" in human
    assert "would donate  no: landlock missing" in human


def test_human_output(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('listen_host = "127.0.0.1"\nlisten_port = 17879\n')
    proc = run_cli("doctor", "--home", home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for layer in ALL_LAYERS:
        assert f" {layer} " in proc.stdout
    assert "would donate" in proc.stdout
    assert "127.0.0.1:17879" in proc.stdout
    assert "lo " in proc.stdout and "127.0.0.1/8" in proc.stdout
    assert proc.stderr == ""  # the report is the result: stdout (issue 14)


def test_the_home_is_only_read(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    doctor_json(home)
    assert not home.exists()


def test_a_bad_config_is_a_usage_error_naming_the_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("donate = true\nlisten_prot = 1\n")
    proc = run_cli("doctor", "--home", home, timeout=60)
    assert proc.returncode == 2
    assert "config.toml:2" in proc.stderr and "listen_port" in proc.stderr


def test_an_older_landlock_is_named_with_what_stands_in(tmp_path: Path) -> None:
    """A kernel before 6.12 (Landlock ABI 5): no signal scoping, seccomp stands in."""
    code = textwrap.dedent("""
        import sys
        from sandbox import _landlock
        _landlock.abi_status = lambda: (5, "")
        from octop2p.cli import main
        main(sys.argv[1:])
    """)

    def doctor(*args: str) -> CompletedProcess[str]:
        return run(
            [sys.executable, "-c", code, "doctor", "--home", str(tmp_path / "h"), *args],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )

    report = json.loads(doctor("--json").stdout)
    landlock = report["sandbox"]["landlock"]
    if not landlock["available"]:
        pytest.skip(f"no Landlock here: {landlock['detail']}")
    assert landlock["detail"].startswith("ABI 5: confines files, TCP bind/connect; ")
    [signals] = report["kernel_gaps"]  # ABI 5 lacks only the scopes of ABI 6
    assert "F_SETOWN" in signals and "Linux 6.12" in signals
    assert signals in landlock["detail"]
    human = doctor().stdout  # the report is a table on stdout
    assert "no signal scoping: seccomp refuses kill()" in human
    assert "other layers stand in for what it lacks" in human
    assert report["donate_ok"] is True  # seccomp covers the gap: fit to donate


def test_a_current_kernel_lacks_nothing_that_is_known(tmp_path: Path) -> None:
    from sandbox import _landlock

    abi = _landlock.abi_status()[0]
    report = doctor_json(tmp_path / "home")
    assert report["kernel_gaps"] == _landlock.gaps(abi)
    assert _landlock.gaps(7) == _landlock.gaps(6) == []
    assert [gap.split(":")[0] for gap in _landlock.gaps(2)] == [
        "no TRUNCATE right", "no TCP rules", "no IOCTL_DEV right", "no signal scoping"]
