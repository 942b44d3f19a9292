"""The node's home: location, modes, lock, identity, swarm, pinned peers, atomic writes."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from octop2p import _home
from octop2p._home import (
    HOME_ENV,
    Home,
    HomeError,
    HomeLocked,
    NoSwarm,
    PinConflict,
    default_home,
    toml_string,
    write_atomic,
)
from protocol import NodeId, NodeIdentity, SwarmCode


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def loose_umask() -> Iterator[None]:
    # The modes must not depend on the user's umask.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --- where the home is -------------------------------------------------------------------


def test_locate_prefers_flag_then_env_then_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert default_home() == Path(platformdirs.user_data_dir("octop2p", appauthor=False))
    assert Home.locate().path == default_home()
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env"))
    assert Home.locate().path == tmp_path / "env"
    assert Home.locate(tmp_path / "flag").path == tmp_path / "flag"


def test_making_a_home_touches_nothing(home: Home) -> None:
    assert home.config_path.parent == home.path
    assert not home.path.exists()


def test_create_makes_0700_folders(home: Home, loose_umask: None) -> None:
    home.create()
    home.create()  # idempotent
    for folder in (home.path, home.jobs_dir, home.packages_dir):
        assert mode(folder) == 0o700


def test_existing_open_home_is_left_alone_with_a_warning(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    home.path.mkdir(mode=0o755)
    os.chmod(home.path, 0o755)
    with caplog.at_level(logging.WARNING, logger="octop2p._home"):
        home.create()
        home.create()
    assert mode(home.path) == 0o755
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "chmod 700" in caplog.records[0].message


def test_uncreatable_home_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(HomeError, match="cannot create the node's home .*--home"):
        Home(tmp_path / "file" / "home").create()


# --- lock ----------------------------------------------------------------------------------


def test_second_lock_fails_naming_the_home_and_pid(home: Home) -> None:
    with home.lock() as lock:
        assert lock.held
        assert mode(home.lock_path) == 0o600
        assert home.lock_path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(HomeLocked) as info:
            Home(home.path).lock()
        assert str(home.path) in str(info.value)
        assert f"pid {os.getpid()}" in str(info.value)
        assert "--home" in str(info.value)
    assert not lock.held
    assert home.lock_path.read_text() == ""
    home.lock().release()  # free again


LOCK_AND_WAIT = """
import sys
from pathlib import Path
from octop2p._home import Home, HomeLocked
try:
    lock = Home(Path(sys.argv[1])).lock()
except HomeLocked as exc:
    print(exc)
    sys.exit(3)
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_holds_across_processes_and_dies_with_its_holder(home: Home) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", LOCK_AND_WAIT, str(home.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(HomeLocked, match=f"pid {child.pid}"):
            home.lock()
        second = subprocess.run(
            [sys.executable, "-c", LOCK_AND_WAIT, str(home.path)],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 3
        assert "is using the home" in second.stdout
    finally:
        child.kill()  # no release: the kernel drops a dead process's flock
        child.wait()
    home.lock().release()


# --- atomic writes -------------------------------------------------------------------------


def test_write_atomic_replaces_with_mode_set_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loose_umask: None
) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        seen.append(mode(Path(src)))
        assert Path(src).read_bytes() == b"new"
        real_replace(src, dst)

    monkeypatch.setattr(_home.os, "replace", spy)
    write_atomic(target, b"new")
    assert seen == [0o600]
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")

    def crash(src: str, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_home.os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


@given(st.text())
def test_toml_string_round_trips(text: str) -> None:
    assert tomllib.loads(f"x = {toml_string(text)}")["x"] == text


# --- identity --------------------------------------------------------------------------------


def test_identity_is_made_once_0600_and_reloaded(home: Home, loose_umask: None) -> None:
    first = home.load_or_create_identity()
    assert mode(home.key_path) == 0o600
    assert mode(home.path) == 0o700
    again = Home(home.path).load_or_create_identity()
    assert again.node_id == first.node_id
    assert again.public_key == first.public_key


def test_concurrent_first_starts_agree_on_one_identity(home: Home) -> None:
    home.create()
    ids: list[NodeId] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        ids.append(Home(home.path).load_or_create_identity().node_id)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert NodeIdentity.from_bytes(home.key_path.read_bytes()).node_id == ids[0]
    assert [p.name for p in home.path.iterdir() if p.name.endswith(".tmp")] == []


def test_damaged_key_is_refused_not_replaced(home: Home) -> None:
    home.load_or_create_identity()
    damaged = home.key_path.read_bytes().replace(b"seed: ", b"seed: 00")
    home.key_path.write_bytes(damaged)
    with pytest.raises(HomeError, match="will not make a new identity") as info:
        home.load_or_create_identity()
    assert str(home.key_path) in str(info.value)
    assert home.key_path.read_bytes() == damaged


def test_loosened_key_file_is_tightened(home: Home, caplog: pytest.LogCaptureFixture) -> None:
    node_id = home.load_or_create_identity().node_id
    os.chmod(home.key_path, 0o644)
    with caplog.at_level(logging.WARNING, logger="octop2p._home"):
        assert home.load_or_create_identity().node_id == node_id
    assert mode(home.key_path) == 0o600
    assert "made it 0600" in caplog.text


# --- swarm -----------------------------------------------------------------------------------


def test_swarm_round_trip_0600_and_replace(home: Home) -> None:
    assert home.swarm() is None
    code = SwarmCode.generate()
    home.save_swarm(code)
    assert home.swarm() == code
    assert mode(home.swarm_path) == 0o600
    data = tomllib.loads(home.swarm_path.read_text())
    assert data == {"id": code.swarm_id.hex(), "code": str(code)}
    other = SwarmCode.generate()
    home.save_swarm(other)
    assert home.swarm() == other


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('id = "00"\n', "no join code"),
        ('code = "OCTO-AAAA"\n', "damaged"),
        ("code = \n", "not valid TOML"),
    ],
)
def test_damaged_swarm_file(home: Home, text: str, problem: str) -> None:
    home.create()
    home.swarm_path.write_text(text)
    with pytest.raises(HomeError, match=problem):
        home.swarm()


def test_swarm_id_must_match_the_code(home: Home) -> None:
    code = SwarmCode.generate()
    home.create()
    home.swarm_path.write_text(f'id = "{"00" * 8}"\ncode = "{code}"\n')
    with pytest.raises(HomeError, match="does not match"):
        home.swarm()


# --- pinned peers ----------------------------------------------------------------------------


def test_pinning_needs_a_swarm(home: Home) -> None:
    peer = NodeIdentity.generate()
    with pytest.raises(NoSwarm, match="swarm join"):
        home.pin(peer.node_id, peer.public_key)


def test_pin_on_first_contact(home: Home) -> None:
    home.save_swarm(SwarmCode.generate())
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    assert home.pinned() == {}
    assert home.pin(a.node_id, a.public_key) is True
    assert home.pin(a.node_id, a.public_key) is False
    assert home.pin(b.node_id, b.public_key) is True
    assert Home(home.path).pinned() == {a.node_id: a.public_key, b.node_id: b.public_key}


def test_pin_refuses_a_key_that_is_not_the_ids(home: Home) -> None:
    home.save_swarm(SwarmCode.generate())
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    with pytest.raises(ValueError, match="is not the key of node"):
        home.pin(a.node_id, b.public_key)


def test_known_id_with_another_key_is_refused(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    # An id is a 128-bit hash of the key, so this takes a collision; stand one in.
    home.save_swarm(SwarmCode.generate())
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    home.pin(a.node_id, a.public_key)
    monkeypatch.setattr(NodeId, "from_public_key", classmethod(lambda cls, key: a.node_id))
    with pytest.raises(PinConflict, match="delete its line") as info:
        home.pin(a.node_id, b.public_key)
    assert info.value.peer_id == a.node_id
    assert home.pinned() == {a.node_id: a.public_key}


def test_pins_are_kept_per_swarm(home: Home) -> None:
    first, second = SwarmCode.generate(), SwarmCode.generate()
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    home.save_swarm(first)
    home.pin(a.node_id, a.public_key)
    home.save_swarm(second)
    assert home.pinned() == {}
    home.pin(b.node_id, b.public_key)
    home.save_swarm(first)
    assert home.pinned() == {a.node_id: a.public_key}
    text = home.peers_path.read_text()
    assert text.startswith("# Swarm members pinned on first contact")
    assert first.swarm_id.hex() in text and second.swarm_id.hex() in text


def test_forgetting_a_peer_by_deleting_its_line(home: Home) -> None:
    home.save_swarm(SwarmCode.generate())
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    home.pin(a.node_id, a.public_key)
    home.pin(b.node_id, b.public_key)
    lines = home.peers_path.read_text().splitlines()
    home.peers_path.write_text("\n".join(x for x in lines if str(a.node_id) not in x))
    assert home.pinned() == {b.node_id: b.public_key}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('"not-an-id" = "00"', "node id"),
        ('"{id}" = "{other}"', "is not that node's key"),
        ('"{id}" = "zz"', "is not that node's key"),
    ],
)
def test_damaged_peers_file_names_itself(home: Home, entry: str, problem: str) -> None:
    code = SwarmCode.generate()
    home.save_swarm(code)
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    line = entry.format(id=a.node_id, other=b.public_key.hex())
    home.peers_path.write_text(f'[swarm."{code.swarm_id.hex()}"]\n{line}\n')
    with pytest.raises(HomeError, match=problem) as info:
        home.pinned()
    assert str(home.peers_path) in str(info.value)
