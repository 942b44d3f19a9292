"""Policy: checked where it is made, and unchanged by a trip through msgpack."""

from __future__ import annotations

import msgpack
import pytest

from sandbox import ALL_LAYERS, Policy, SandboxError, clean_environ


def test_round_trip_through_msgpack() -> None:
    policy = Policy(read_paths=("/srv/job",), write_paths=("/srv/results",),
                    memory_bytes=1 << 29, cpu_seconds=60, fsize_bytes=1 << 20, nofile=32,
                    stack_bytes=8 << 20, max_threads=2, layers=ALL_LAYERS - {"netns"})
    wire = msgpack.packb(policy.to_dict(), use_bin_type=True)
    assert Policy.from_dict(msgpack.unpackb(wire, raw=False)) == policy


def test_defaults_round_trip_and_missing_keys_take_defaults() -> None:
    assert Policy.from_dict(Policy().to_dict()) == Policy()
    assert Policy.from_dict({}) == Policy()
    assert Policy().layers == ALL_LAYERS and Policy().max_threads == 1


def test_layers_travel_in_apply_order() -> None:
    assert Policy().to_dict()["layers"] == [
        "userns", "netns", "landlock", "rlimits", "nnp", "seccomp"]


@pytest.mark.parametrize("data, match", [
    ({"layers": ["landlock", "chroot"]}, "unknown layer"),
    ({"read_paths": ["job"]}, "absolute paths"),
    ({"read_paths": "/srv/job"}, "list of paths"),
    ({"nofile": True}, "whole number"),
    ({"max_threads": 0}, "1 or more"),
    ({"cpu_seconds": "60"}, "whole number"),
    ({"color": "blue"}, "unknown key"),
    ({"layers": "seccomp"}, "must be a list"),
])
def test_bad_policies_are_refused(data: dict[str, object], match: str) -> None:
    with pytest.raises(SandboxError, match=match):
        Policy.from_dict(data)


def test_policy_is_checked_where_it_is_made() -> None:
    with pytest.raises(SandboxError, match="absolute"):
        Policy(write_paths=("results",))


def test_clean_environ_is_the_whole_environment() -> None:
    env = clean_environ(3)
    assert env["HOME"] == "/nonexistent" and env["PATH"] == "/usr/bin:/bin"
    assert env["LANG"] == "C.UTF-8" and env["PYTHONHASHSEED"] == "0"
    assert {env[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")} \
        == {"3"}
    assert all(isinstance(v, str) for v in env.values())
    assert clean_environ(0)["OMP_NUM_THREADS"] == "1"
