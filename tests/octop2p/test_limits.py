"""Limits and JobOptions: defaults, capping, dict round trips, job.toml and script options."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from octop2p.engine._limits import (
    OPTION_KEYS,
    RULE_OPTIONS,
    JobOptions,
    Limits,
    OptionError,
    read_job_toml,
    read_script_options,
    toml_key_line,
)
from octop2p.errors import JobRefused

LIMIT_NAMES = [f.name for f in dataclasses.fields(Limits)]

limits_st = st.builds(Limits, **{name: st.integers(1, 2**40) for name in LIMIT_NAMES})
options_st = st.builds(
    JobOptions,
    name=st.from_regex(r"[a-z][a-z0-9 _-]{0,30}", fullmatch=True),
    ordered=st.booleans(),
    redundancy=st.integers(1, 9),
    requires=st.lists(st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8})?", fullmatch=True)).map(tuple),
    partitions=st.none() | st.integers(1, 1000),
    map_batch=st.none() | st.integers(1, 1000),
    limits=limits_st,
)


def test_defaults_are_the_contracts() -> None:
    # docs/jobs.md, the [limits] table.
    assert Limits().to_dict() == {
        "fragment_bytes": 8_388_608,
        "memory_mb": 512,
        "cpu_seconds": 60,
        "wall_seconds": 120,
        "max_fragments": 1_000_000,
        "merge_output_mb": 1024,
        "merge_output_files": 10_000,
        "recursion_depth": 1000,
        "threads": 1,
    }
    opts = JobOptions(name="x")
    assert (opts.ordered, opts.redundancy, opts.requires) == (True, 1, ())
    assert (opts.partitions, opts.map_batch, opts.limits) == (None, None, Limits())
    assert (opts.verify, opts.spot_checks, opts.backup_tasks) == ("none", 5, True)
    assert set(OPTION_KEYS) == {
        "name",
        "ordered",
        "redundancy",
        "verify",
        "spot_checks",
        "backup_tasks",
        "requires",
        "partitions",
        "map_batch",
        "limits",
    }


# --- capping ------------------------------------------------------------------


def test_capped_lowers_only_what_is_above_and_names_it() -> None:
    node = Limits(memory_mb=256, threads=2)
    job = Limits(memory_mb=1024, threads=1, cpu_seconds=5)
    capped, warnings = job.capped(node)
    assert capped == Limits(memory_mb=256, threads=1, cpu_seconds=5)
    assert warnings == [
        "limits.memory_mb = 1024 is above this node's limit of 256; the job runs with 256"
    ]


def test_capped_equal_is_silent() -> None:
    assert Limits().capped(Limits()) == (Limits(), [])


@given(job=limits_st, node=limits_st)
def test_capped_never_exceeds_the_node_nor_raises_what_the_job_asked(
    job: Limits, node: Limits
) -> None:
    capped, warnings = job.capped(node)
    for name in LIMIT_NAMES:
        got, asked, allowed = (getattr(x, name) for x in (capped, job, node))
        assert got <= allowed
        assert got <= asked
        assert got == min(asked, allowed)
    assert len(warnings) == sum(getattr(job, n) > getattr(node, n) for n in LIMIT_NAMES)


# --- dict round trips ------------------------------------------------------------------


@given(limits_st)
def test_limits_round_trip(limits: Limits) -> None:
    assert Limits.from_dict(limits.to_dict()) == limits


@given(options_st)
def test_options_round_trip(options: JobOptions) -> None:
    assert JobOptions.from_dict(options.to_dict()) == options


def test_from_dict_fills_from_base() -> None:
    base = Limits(memory_mb=2048, threads=4)
    assert Limits.from_dict({"threads": 2}, base) == Limits(memory_mb=2048, threads=2)
    opts = JobOptions.from_dict({"requires": ["numpy"]}, default_name="job", base=base)
    assert (opts.name, opts.requires, opts.limits) == ("job", ("numpy",), base)


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"memory": 1}, "limits.memory", "did you mean 'memory_mb'"),
        ({"threads": True}, "limits.threads", "got a boolean"),
        ({"threads": 1.0}, "limits.threads", "got a number with a fraction"),
        ({"threads": 0}, "limits.threads", "must be 1 or more"),
        ({"cpu_seconds": -1}, "limits.cpu_seconds", "must be 1 or more"),
        ({"xyzzy": 1}, "limits.xyzzy", "known keys: fragment_bytes"),
    ],
)
def test_limits_from_dict_refuses(data: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(OptionError) as info:
        Limits.from_dict(data)
    assert info.value.key == key
    assert words in info.value.problem


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({}, "name"),
        ({"name": 3}, "name"),
        ({"name": "a\\b"}, "name"),
        ({"name": "x", "partitions": 0}, "partitions"),
        ({"name": "x", "map_batch": "7"}, "map_batch"),
        ({"name": "x", "requires": [1]}, "requires"),
        ({"name": "x", "limits": []}, "limits"),
        ({"name": "x", "orderd": True}, "orderd"),
    ],
)
def test_options_from_dict_refuses(data: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as info:
        JobOptions.from_dict(data)
    assert info.value.key == key


# --- job.toml ------------------------------------------------------------------


def test_read_job_toml_returns_only_what_is_set(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('name = "primes"\nrequires = ["numpy"]\n[limits]\nmemory_mb = 1_024\n')
    assert read_job_toml(path) == {
        "name": "primes",
        "requires": ("numpy",),
        "limits": {"memory_mb": 1024},
    }


def test_read_job_toml_refuses_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(JobRefused) as info:
        read_job_toml(path)
    assert (info.value.rule, info.value.file) == (RULE_OPTIONS, "job.toml")


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("a = 1\nredundancy = 2\n", "redundancy", 2),
        ('"redundancy" = 2\n', "redundancy", 1),
        ("[limits]\nthreads = 1\n\n[other]\nthreads = 2\n", "limits.threads", 2),
        ("x = 1\n[limits]\n", "limits", 2),
        ("limits = { threads = 1 }\n", "limits.threads", 1),
        ("limits.threads = 1\n", "limits.threads", 1),
        ("[other]\nredundancy = 2\n", "redundancy", None),
    ],
)
def test_toml_key_line(text: str, key: str, line: int | None) -> None:
    assert toml_key_line(text, key) == line


# --- module-level options of a script --------------------------------------------------


def test_read_script_options_reads_literals_only_at_top_level() -> None:
    tree = ast.parse(
        "redundancy = 2\n"
        "redundancy = 3\n"  # the last one wins, as when the script runs
        "requires: list[str] = ['json']\n"
        "limits = {'memory_mb': 64}\n"
        "def f():\n    partitions = g()\n"  # a local, not an option
        "for name in ['a']:\n    pass\n"  # not an assignment
        "text_files = sorted(['b', 'a'])\n"  # not an option name
    )
    assert read_script_options(tree, "s.py") == {
        "redundancy": 3,
        "requires": ("json",),
        "limits": {"memory_mb": 64},
    }


def test_read_script_options_refuses_a_non_literal_with_its_line() -> None:
    tree = ast.parse("import os\n\nname = os.getcwd()\n")
    with pytest.raises(JobRefused) as info:
        read_script_options(tree, "s.py")
    assert (info.value.rule, info.value.file, info.value.line) == (RULE_OPTIONS, "s.py", 3)
    assert "rename the variable" in info.value.detail
