"""A job's options and limits: `Limits`, `JobOptions`, read from job.toml or a script.

Options come from two places (docs/jobs.md, "job.toml: options and limits"): a `job.toml`
in the job's folder, and,
for a MapReduce script, literal assignments at the script's module level
(`redundancy = 2`, `limits = {"memory_mb": 256}`). Scripts are read with `ast` and
`ast.literal_eval`, never run: job code runs only in sandboxed children.

Every check lives in `_checked`, so that a job.toml, a script and a peer's message
(`JobOptions.from_dict`) are held to the same rules.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octop2p.errors import JobRefused

__all__ = [
    "OPTION_KEYS",
    "RULE_OPTIONS",
    "JobOptions",
    "Limits",
    "OptionError",
    "read_job_toml",
    "read_options",
    "read_script_options",
    "toml_key_line",
]

RULE_OPTIONS = "job options"


@dataclass(frozen=True)
class Limits:
    """What one job may use; a job may ask for less than its node allows, never more."""

    fragment_bytes: int = 8_388_608
    memory_mb: int = 512
    cpu_seconds: int = 60  # per fragment
    wall_seconds: int = 120  # per fragment
    max_fragments: int = 1_000_000  # keeps a splitter finite
    merge_output_mb: int = 1024
    # Files and folders the merger may leave in results_dir: the node walks, packs and
    # removes them all, about 10 us each here, and walks them every half second.
    merge_output_files: int = 10_000
    recursion_depth: int = 1000
    threads: int = 1  # concurrency inside one sandboxed process

    def capped(self, node: Limits) -> tuple[Limits, list[str]]:
        """These limits lowered to `node`'s where above them, with a warning for each."""
        values: dict[str, int] = {}
        warnings: list[str] = []
        for key, asked in self.to_dict().items():
            allowed = getattr(node, key)
            values[key] = min(asked, allowed)
            if asked > allowed:
                warnings.append(
                    f"limits.{key} = {asked} is above this node's limit of {allowed}; "
                    f"the job runs with {allowed}"
                )
        return Limits(**values), warnings

    def to_dict(self) -> dict[str, int]:
        """The limits as a plain dict, for msgpack and JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], base: Limits | None = None) -> Limits:
        """Limits from a dict, missing keys taken from `base`; raises `OptionError`."""
        checked = _checked_limits(data, "limits")
        return dataclasses.replace(base or cls(), **checked)


LIMIT_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Limits))


@dataclass(frozen=True)
class JobOptions:
    """How to run one job: its name, scheduling options and limits."""

    name: str
    ordered: bool = True  # merge in fragment order (split/merge jobs)
    redundancy: int = 1  # distinct workers per fragment
    verify: str = "none"  # "adaptive": replicate until a worker has earned trust
    spot_checks: int = 5  # adaptive: percent of a trusted worker's fragments checked
    backup_tasks: bool = True  # at a phase's tail, idle workers back up late fragments
    requires: tuple[str, ...] = ()  # modules a worker must be able to import
    partitions: int | None = None  # MapReduce reduce tasks; None: the engine picks
    map_batch: int | None = None  # source keys per map task; None: the engine picks
    limits: Limits = field(default_factory=Limits)

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict, for msgpack and JSON."""
        return {
            "name": self.name,
            "ordered": self.ordered,
            "redundancy": self.redundancy,
            "verify": self.verify,
            "spot_checks": self.spot_checks,
            "backup_tasks": self.backup_tasks,
            "requires": list(self.requires),
            "partitions": self.partitions,
            "map_batch": self.map_batch,
            "limits": self.limits.to_dict(),
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        *,
        default_name: str | None = None,
        base: Limits | None = None,
    ) -> JobOptions:
        """Options from a dict, checked as job.toml is; raises `OptionError`.

        Limits the dict does not name come from `base` (the node's limits, so that a
        job that asks for nothing gets what the node allows).
        """
        checked = _checked(data)
        name = checked.pop("name", None)
        if name is None:
            if default_name is None:
                raise OptionError("name", "missing: every job needs a name")
            name = _name(default_name)
        limits = dataclasses.replace(base or Limits(), **checked.pop("limits", {}))
        return cls(name=name, limits=limits, **checked)


OPTION_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(JobOptions))


class OptionError(ValueError):
    """One job option is unknown or has a wrong type or value."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key  # dotted for tables: "limits.memory_mb"
        self.problem = problem


# --- checks ------------------------------------------------------------------------


def _kind(value: object) -> str:
    """How a user would name the type of `value`."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number with a fraction",
        str: "a string",
        list: "a list",
        tuple: "a tuple",
        dict: "a table",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _unknown(key: str, known: tuple[str, ...], table: str | None) -> OptionError:
    what = "limit" if table else "option"
    dotted = f"{table}.{key}" if table else key
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        hint = f"did you mean '{close[0]}'?"
    elif table is None and key in LIMIT_KEYS:
        hint = f"it is a limit: put it in the [limits] table (limits.{key})"
    else:
        hint = "known keys: " + ", ".join(known)
    return OptionError(dotted, f"unknown {what}; {hint}")


def _int(key: str, value: object) -> int:
    # bool is an int to Python, but `redundancy = true` is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(key, f"expected a whole number, got {_kind(value)} ({value!r})")
    if value < 1:
        raise OptionError(key, f"must be 1 or more, got {value}")
    return value


def _checked_limits(data: object, key: str) -> dict[str, int]:
    if not isinstance(data, Mapping):
        raise OptionError(key, f"expected a table of limits, got {_kind(data)} ({data!r})")
    checked: dict[str, int] = {}
    for name, value in data.items():
        if name not in LIMIT_KEYS:
            raise _unknown(str(name), LIMIT_KEYS, key)
        checked[name] = _int(f"{key}.{name}", value)
    return checked


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise OptionError("name", f"expected a string, got {_kind(value)} ({value!r})")
    # The name becomes a folder name (`<name>-results`) on the submitter's machine.
    if (
        not value.strip()
        or len(value) > 100
        or value.startswith(".")
        or any(c in value for c in "/\\\0")
        or not value.isprintable()
    ):
        raise OptionError(
            "name",
            f"{value!r} is not a usable job name: use 1 to 100 printable characters, "
            "no '/' or '\\', not starting with '.'",
        )
    return value


def _requires(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise OptionError(
            "requires", f"expected a list of module names, got {_kind(value)} ({value!r})"
        )
    for item in value:
        if not isinstance(item, str) or not all(p.isidentifier() for p in item.split(".")):
            raise OptionError(
                "requires", f"{item!r} is not a module name (like 'numpy' or 'scipy.sparse')"
            )
    return tuple(value)


VERIFY_MODES = ("none", "adaptive")


def _verify(value: object) -> str:
    if value not in VERIFY_MODES:
        raise OptionError("verify", f"expected one of {', '.join(map(repr, VERIFY_MODES))}, "
                          f"got {value!r}")
    return str(value)


def _percent(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise OptionError("spot_checks", f"expected a whole percent from 0 to 100, got "
                          f"{value!r}")
    return value


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise OptionError(key, f"expected true or false, got {_kind(value)} ({value!r})")
    return value


def _checked(data: Mapping[str, object]) -> dict[str, Any]:
    """A checked copy of the options in `data`, only those given; raises `OptionError`."""
    checkers: dict[str, Callable[[object], object]] = {
        "name": _name,
        "ordered": lambda v: _bool("ordered", v),
        "redundancy": lambda v: _int("redundancy", v),
        "verify": _verify,
        "spot_checks": _percent,
        "backup_tasks": lambda v: _bool("backup_tasks", v),
        "requires": _requires,
        # None is how a script (or a peer's message) says "the engine picks".
        "partitions": lambda v: None if v is None else _int("partitions", v),
        "map_batch": lambda v: None if v is None else _int("map_batch", v),
        "limits": lambda v: _checked_limits(v, "limits"),
    }
    checked: dict[str, Any] = {}
    for key, value in data.items():
        if key not in checkers:
            raise _unknown(str(key), OPTION_KEYS, None)
        checked[key] = checkers[key](value)
    return checked


# --- job.toml ----------------------------------------------------------------------

_TOML_KEY = re.compile(r"""\s*(["']?)([A-Za-z0-9_.-]+)\1\s*=""")
_TOML_TABLE = re.compile(r"""\s*\[\s*(["']?)([A-Za-z0-9_.-]+)\1\s*\]""")


def toml_key_line(text: str, dotted: str) -> int | None:
    """The line where `dotted` (`"redundancy"`, `"limits.memory_mb"`) is set, if found.

    tomllib keeps no positions, so this reads the lines itself; it is only used to
    point at a value tomllib has already parsed, never to parse one.
    """
    table, _, key = dotted.rpartition(".")
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _TOML_TABLE.match(line)
        if header:
            current = header.group(2)
            if current == dotted:
                return number
            continue
        match = _TOML_KEY.match(line)
        if match is None:
            continue
        found = match.group(2)
        # `key` inside `[table]`, a dotted key `table.key`, or an inline `table = {...}`.
        if (current, found) == (table, key) or (current == "" and found in (dotted, table)):
            return number
    return None


def read_job_toml(path: Path) -> dict[str, Any]:
    """The checked options of a job.toml, only those it sets; raises `JobRefused`."""
    return _read_toml(path)[0]


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    file = path.name
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobRefused(RULE_OPTIONS, file, None, f"cannot read it: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        raise JobRefused(
            RULE_OPTIONS,
            file,
            int(found.group(1)) if found else None,
            f"not valid TOML: {exc}; see docs/jobs.md#jobtoml-options-and-limits for an example",
        ) from exc
    try:
        return _checked(data), text
    except OptionError as exc:
        raise JobRefused(RULE_OPTIONS, file, toml_key_line(text, exc.key), str(exc)) from exc


# --- module-level options of a MapReduce script --------------------------------------


def read_script_options(tree: ast.Module, file: str) -> dict[str, Any]:
    """The checked options assigned at a script's module level; raises `JobRefused`.

    Only plain top-level assignments count (`redundancy = 2`), the last one winning as
    it would if the script ran. Each value must be a literal, read by `literal_eval`.
    """
    return _script_options(tree, file)[0]


def _script_options(tree: ast.Module, file: str) -> tuple[dict[str, Any], dict[str, int]]:
    raw: dict[str, object] = {}
    lines: dict[str, int] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name) or target.id not in OPTION_KEYS:
                continue
            try:
                raw[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                raise JobRefused(
                    RULE_OPTIONS,
                    file,
                    stmt.lineno,
                    f"module-level `{target.id}` is a job option, so it must be a literal "
                    "(a number, string, list or dict written out): octop2p reads options "
                    "without running the script. Write the value out, or rename the "
                    "variable if it is not meant as an option",
                ) from None
            lines[target.id] = stmt.lineno
            if isinstance(value, ast.Dict):
                for key in value.keys:
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        lines[f"{target.id}.{key.value}"] = key.lineno
    try:
        return _checked(raw), lines
    except OptionError as exc:
        line = lines.get(exc.key) or lines.get(exc.key.partition(".")[0])
        raise JobRefused(RULE_OPTIONS, file, line, str(exc)) from exc


# --- both together ------------------------------------------------------------------

_PACKAGE_ONLY: tuple[str, ...] = ("ordered",)
_SCRIPT_ONLY: tuple[str, ...] = ("partitions", "map_batch")


def read_options(
    root: Path,
    default_name: str,
    node_limits: Limits,
    script: tuple[str, ast.Module] | None = None,
) -> tuple[JobOptions, list[str], tuple[str, int | None]]:
    """A job's options from `root`/job.toml and, for a script, its module level.

    Returns the options with limits capped to `node_limits`, warnings for the user, and
    where `requires` was set (file, line). Raises `JobRefused`.
    """
    toml = root / "job.toml"
    given, text = _read_toml(toml) if toml.is_file() else ({}, "")
    requires_at: tuple[str, int | None] = ("job.toml", toml_key_line(text, "requires"))
    warnings: list[str] = []
    if script is None:
        ignored, owner, kind = _SCRIPT_ONLY, "MapReduce scripts", "split/merge package"
    else:
        ignored, owner, kind = _PACKAGE_ONLY, "split/merge packages", "MapReduce script"
        # docs/jobs.md, "job.toml": job.toml serves both kinds; the script's own assignments, being
        # the more specific place, win key by key (and limit by limit).
        rel, tree = script
        own, lines = _script_options(tree, rel)
        for key in sorted(given.keys() & own.keys()):
            warnings.append(f"{key} is set in both job.toml and {rel}; {rel}'s value is used")
        limits = {**given.get("limits", {}), **own.get("limits", {})}
        given = {**given, **own, "limits": limits}
        if "requires" in own:
            requires_at = (rel, lines["requires"])
    warnings += [
        f"{key} applies to {owner} only; this {kind} ignores it" for key in ignored if key in given
    ]
    try:
        options = JobOptions.from_dict(given, default_name=default_name, base=node_limits)
    except OptionError as exc:  # every given value is checked by now: the default name
        raise JobRefused(
            RULE_OPTIONS,
            None,
            None,
            f"{exc}; the name comes from the job's file or folder name: set "
            'name = "..." in job.toml (or at the top of a script)',
        ) from exc
    limits_, capped = options.limits.capped(node_limits)
    return dataclasses.replace(options, limits=limits_), warnings + capped, requires_at
