"""Loading a job and refusing a bad one before any of it runs: `load_job`.

A job is a split/process/merge package (a folder) or a MapReduce script (one .py
file), as docs/jobs.md describes. The node never runs job code itself, so every
check here is static: the files, their syntax tree (`ast`), and job.toml. Each refusal
is a `JobRefused` naming the rule, the file and, where there is one, the line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from octop2p.engine._checks import (
    RULE_FILES,
    RULE_FUNCTIONS,
    RULE_GENERATOR,
    RULE_PATH,
    RULE_REQUIRES,
    RULE_SIGNATURE,
    RULE_SIZE,
    RULE_SYNTAX,
    RULE_YIELD,
    _check_function,
    _check_requires,
    _check_splitter,
    _check_yields,
    _ModuleScope,
    _parse,
    missing_requirements,
)
from octop2p.engine._limits import JobOptions, Limits, read_options
from octop2p.errors import JobRefused

__all__ = [
    "PACKAGE_BYTES",
    "RULE_FILES",
    "RULE_FUNCTIONS",
    "RULE_GENERATOR",
    "RULE_PATH",
    "RULE_REQUIRES",
    "RULE_SIGNATURE",
    "RULE_SIZE",
    "RULE_SYNTAX",
    "RULE_YIELD",
    "JobSpec",
    "digest_files",
    "load_job",
    "missing_requirements",
]

PACKAGE_BYTES = 256 * 1024 * 1024  # the node's default cap on a package's total size

# Rule names, as they appear in messages: "(rule: only splitter yields)".

_PACKAGE_FILES = ("Split.py", "Process.py", "Merge.py")
# file -> (function, its parameters, required)
_PACKAGE_FUNCTIONS: dict[str, tuple[tuple[str, tuple[str, ...], bool], ...]] = {
    "Split.py": (("splitter", (), True),),
    "Process.py": (("process", ("fragment",), True),),
    "Merge.py": (
        ("merger", ("result", "results_dir"), True),
        ("finalize", ("results_dir",), False),
    ),
}
_SCRIPT_FUNCTIONS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("mapfn", ("key", "value"), True),
    ("reducefn", ("key", "values"), True),
    ("final", ("key", "value"), False),
    ("combinefn", ("key", "values"), False),
)



@dataclass(frozen=True)
class JobSpec:
    """A job that passed every static check, ready to be signed, stored and run."""

    kind: Literal["package", "script"]
    root: Path  # the package folder, or the script's folder
    script: str | None  # the script's file name; None for a package
    options: JobOptions  # already capped to the node's limits
    warnings: tuple[str, ...]
    has_finalize: bool
    has_combinefn: bool
    has_final: bool
    files: tuple[str, ...]  # sorted POSIX paths relative to root

    def package_digest(self) -> bytes:
        """BLAKE2b-256 of the job's files (see `digest_files`); reads them now."""
        return digest_files(self.root, self.files)


def renamed(spec: JobSpec, name: str) -> JobSpec:
    """``spec`` under the name its submitter gave it (a chief unpacks every package into
    a folder of its own naming, whose name would otherwise name the job)."""
    if not name or name == spec.options.name:
        return spec
    return dataclasses.replace(spec, options=dataclasses.replace(spec.options, name=name))


def load_job(path: Path, node_limits: Limits, *, package_bytes: int = PACKAGE_BYTES) -> JobSpec:
    """Check the job at `path` without running it; raise `JobRefused` if it breaks a rule."""
    path = Path(path)
    try:
        if path.is_dir():
            return _load_package(path, node_limits, package_bytes)
        if path.is_file() and path.suffix == ".py":
            return _load_script(path, node_limits, package_bytes)
    except PermissionError as exc:
        raise JobRefused(RULE_PATH, exc.filename or str(path), None,
                         "cannot be read by this user; give it read permission") from None
    what = "does not exist" if not path.exists() else "is not a job"
    raise JobRefused(
        RULE_PATH,
        str(path),
        None,
        f"{what}: a job is a folder holding Split.py, Process.py and Merge.py, "
        "or a MapReduce script ending in .py",
    )


def digest_files(root: Path, files: Iterable[str]) -> bytes:
    """BLAKE2b-256 over a package's (path, content) pairs, in sorted path order.

    For each file, sorted by its UTF-8 path: a 4-byte big-endian length of the path,
    the path, and the BLAKE2b-256 of the content. The outer hash is personalised with
    b"octop2p-pkg-v1" so it cannot be mistaken for another hash of the same bytes.
    """
    outer = hashlib.blake2b(digest_size=32, person=b"octop2p-pkg-v1")
    for rel in sorted(files, key=os.fsencode):
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts:
            raise ValueError(f"not a path inside the package: {rel!r}")
        name = os.fsencode(rel)
        # A file swapped for a link since it was listed must not pull in another file.
        fd = os.open(root / rel, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            inner = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=32))
        outer.update(len(name).to_bytes(4, "big") + name + inner.digest())
    return outer.digest()


# --- the two kinds of job --------------------------------------------------------


def _load_package(path: Path, node_limits: Limits, package_bytes: int) -> JobSpec:
    root = path.resolve()
    _require_package_files(root)
    options, warnings, requires_at = read_options(root, _default_name(path), node_limits)
    files, links = _list_files(root, options.name, package_bytes)
    trees = {rel: _parse(root, rel, warnings) for rel in files if rel.endswith(".py")}
    defined: dict[str, bool] = {}
    for file, functions in _PACKAGE_FUNCTIONS.items():
        scope = _ModuleScope(trees[file])
        for name, params, required in functions:
            defined[name] = _check_function(scope, file, name, params, required, warnings)
    split = _ModuleScope(trees["Split.py"])
    _check_splitter(split)
    _check_yields(trees, {id(fn) for fn in split.functions("splitter")})
    _check_requires(options.requires, *requires_at)
    return JobSpec(
        kind="package",
        root=root,
        script=None,
        options=options,
        warnings=tuple(warnings + links),
        has_finalize=defined["finalize"],
        has_combinefn=False,
        has_final=False,
        files=files,
    )


def _load_script(path: Path, node_limits: Limits, package_bytes: int) -> JobSpec:
    script = path.resolve()
    root, rel = script.parent, script.name
    if rel in _PACKAGE_FILES:
        raise JobRefused(
            RULE_PATH,
            rel,
            None,
            f"{rel} is one file of a split/merge package: give the package's folder "
            f"({root}) as the job, not the file",
        )
    _check_size([(rel, script.stat().st_size)], package_bytes, done=True)
    parse_warnings: list[str] = []
    tree = _parse(root, rel, parse_warnings)
    options, warnings, requires_at = read_options(
        root, _default_name(path), node_limits, script=(rel, tree)
    )
    warnings += parse_warnings
    scope = _ModuleScope(tree)
    _check_function(scope, rel, "source", None, True, warnings)
    defined = {
        name: _check_function(scope, rel, name, params, required, warnings)
        for name, params, required in _SCRIPT_FUNCTIONS
    }
    _check_requires(options.requires, *requires_at)
    return JobSpec(
        kind="script",
        root=root,
        script=rel,
        options=options,
        warnings=tuple(warnings),
        has_finalize=False,
        has_combinefn=defined["combinefn"],
        has_final=defined["final"],
        files=(rel,),
    )


def pack_package(spec: JobSpec) -> bytes:
    """The job's files as an uncompressed tar, in a fixed order (its hash names it)."""
    buf = io.BytesIO()
    names = spec.files  # a script's own name, or its folder's files (`with_folder`)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            data = (spec.root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def with_folder(spec: JobSpec, package_bytes: int = PACKAGE_BYTES) -> JobSpec:
    """A script job that carries the folder it reads from, for a chief on another machine:
    its ``source`` runs there, and finds there only what the package holds. Refused, with
    the reason, when the folder is over the package size limit."""
    if spec.kind != "script":
        return spec
    try:
        files, _links = _list_files(spec.root, spec.options.name, package_bytes)
    except JobRefused as exc:
        raise JobRefused(exc.rule, exc.file, exc.line,
                         f"a script sent to another chief carries its folder ({spec.root}), "
                         f"since its source reads files there: {exc.detail}") from None
    return dataclasses.replace(spec, files=files)


def _default_name(path: Path) -> str:
    # The folder's or script's name as the user typed it (`.` is the current folder),
    # not where links lead.
    return os.path.basename(os.path.abspath(path)).removesuffix(".py")


# --- files -----------------------------------------------------------------------


def _require_package_files(root: Path) -> None:
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise JobRefused(RULE_PATH, str(root), None, f"cannot read the folder: {exc}") from exc
    # Compared with the listing, not with exists(): a case-insensitive file system would
    # find Split.py for split.py, and the chief's (case-sensitive) one would not.
    missing = [f for f in _PACKAGE_FILES if f not in names or not _is_regular(root / f)]
    if not missing:
        return
    if len(missing) == len(_PACKAGE_FILES):
        detail = (
            "no Split.py, Process.py or Merge.py here: a job folder needs all three "
            "(docs/jobs.md#a-split--process--merge-package); to run a MapReduce script, "
            "give the path of its .py file"
        )
    else:
        are = "is" if len(missing) == 1 else "are"
        detail = (
            f"{' and '.join(missing)} {are} missing: a job folder needs Split.py, "
            "Process.py and Merge.py, each a regular file"
        )
    lowered = {n.lower(): n for n in names}
    for file in missing:
        other = lowered.get(file.lower())
        if other is not None and other != file:
            detail += (
                f"; found {other}, but the Butcher guide's file names are case-sensitive: "
                f"rename it to {file}"
            )
    # With all three missing, naming one of them as "the file" would mislead.
    named = missing[0] if len(missing) < len(_PACKAGE_FILES) else None
    raise JobRefused(RULE_FILES, named, None, detail)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _list_files(root: Path, name: str, limit: int) -> tuple[tuple[str, ...], list[str]]:
    """The package's files and warnings about links left out; refuses a package too big."""

    def unreadable(exc: OSError) -> None:
        raise JobRefused(RULE_PATH, exc.filename, None, f"cannot read the folder: {exc.strerror}")

    files: list[tuple[str, int]] = []
    links: list[str] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        kept = []
        for d in sorted(dirnames):
            hidden = d.startswith(".") or d == "__pycache__"
            # Results unpacked into the package folder must not ship with the next run.
            if hidden or (str(here) == "." and d == f"{name}-results"):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                links.append(str(here / d))
            else:
                kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            if f.startswith("."):
                continue
            info = os.lstat(os.path.join(dirpath, f))
            if stat.S_ISLNK(info.st_mode):
                links.append(str(here / f))
            elif stat.S_ISREG(info.st_mode):
                files.append((str(here / f), info.st_size))
                total += info.st_size
                # Stop early: a job pointed at a home folder should not walk all of it.
                if total > limit:
                    _check_size(files, limit, done=False)
    _check_size(files, limit, done=True)
    warnings = [
        f"{link} is a symbolic link and is left out of the package; copy what it points to "
        "into the folder if the job needs it"
        for link in sorted(links)
    ]
    return tuple(sorted(rel for rel, _ in files)), warnings


def _check_size(files: list[tuple[str, int]], limit: int, *, done: bool) -> None:
    total = sum(size for _, size in files)
    if total <= limit:
        return
    largest, size = max(files, key=lambda item: item[1])
    amount = _size(total) if done else f"more than {_size(total)} (stopped counting)"
    raise JobRefused(
        RULE_SIZE,
        None,
        None,
        f"the job's files come to {amount}, over this node's limit of {_size(limit)}; "
        f"the largest is {largest} ({_size(size)}). Leave out what the job does not need "
        "(names starting with '.' and __pycache__ are left out), or ask the node's owner "
        "to raise its package size limit",
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def prepare(path: Path, node_limits: Limits | None = None) -> JobSpec:
    """Load and validate a job; raises JobRefused before anything runs."""
    return load_job(path, node_limits or Limits())
