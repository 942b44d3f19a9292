"""Loading a job and refusing a bad one before any of it runs: `load_job`.

A job is a split/process/merge package (a folder) or a MapReduce script (one .py
file), as docs/jobs.md describes. The node never runs job code itself, so every
check here is static: the files, their syntax tree (`ast`), and job.toml. Each refusal
is a `JobRefused` naming the rule, the file and, where there is one, the line.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import os
import stat
import sys
import warnings as _warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, TypeAlias

from octop2p.engine._limits import JobOptions, Limits, read_options
from octop2p.errors import JobRefused

__all__ = [
    "PACKAGE_BYTES",
    "JobSpec",
    "digest_files",
    "load_job",
    "missing_requirements",
]

PACKAGE_BYTES = 256 * 1024 * 1024  # the node's default cap on a package's total size

# Rule names, as they appear in messages: "(rule: only splitter yields)".
RULE_PATH = "job path"
RULE_FILES = "required files"
RULE_FUNCTIONS = "required functions"
RULE_SIGNATURE = "signature"
RULE_GENERATOR = "splitter is a generator"
RULE_YIELD = "only splitter yields"
RULE_SYNTAX = "syntax"
RULE_REQUIRES = "requires"
RULE_SIZE = "package size"

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

_Function: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


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


def missing_requirements(requires: Iterable[str]) -> list[str]:
    """The names in `requires` whose top-level module cannot be found here.

    Only the top-level name is looked up (`find_spec("scipy")` for "scipy.sparse"):
    finding a submodule would import its parent, which runs code.
    """
    missing: list[str] = []
    for name in requires:
        try:
            found = importlib.util.find_spec(name.split(".")[0]) is not None
        except (ImportError, ValueError):
            found = False
        if not found and name not in missing:
            missing.append(name)
    return missing


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


# --- syntax and scopes -----------------------------------------------------------


def _parse(root: Path, rel: str, warnings: list[str]) -> ast.Module:
    """The file's syntax tree, compiled (not run) to catch what the parser lets by."""
    try:
        source = (root / rel).read_bytes()
    except OSError as exc:
        raise JobRefused(RULE_PATH, rel, None, f"cannot read it: {exc.strerror}") from exc
    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            tree = ast.parse(source, filename=rel)
            # compile() finds what only the compiler checks ('yield' outside function,
            # 'return' at module level); it makes a code object and runs nothing.
            compile(tree, rel, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise JobRefused(
            RULE_SYNTAX,
            rel,
            exc.lineno,
            f"{exc.msg}; fix it and check with `python -m py_compile {rel}`",
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise JobRefused(RULE_SYNTAX, rel, None, f"cannot be parsed: {exc}") from exc
    # The parser and the compiler may both warn about the same line.
    warnings += dict.fromkeys(f"{rel}:{w.lineno}: {w.message}" for w in caught)
    return tree


@dataclass(frozen=True)
class _Binding:
    line: int
    col: int
    function: _Function | None  # the def or lambda bound, when it is one


class _ModuleScope:
    """The names a module binds at module scope: defs, assignments, imports."""

    def __init__(self, tree: ast.Module) -> None:
        self.star_imports: list[int] = []
        found: dict[str, list[_Binding]] = {}

        def bind(name: str, node: ast.stmt | ast.expr, function: _Function | None) -> None:
            found.setdefault(name, []).append(_Binding(node.lineno, node.col_offset, function))

        # Iterative, so that a deeply nested (but valid) module cannot exhaust the stack.
        stack: list[ast.AST] = list(tree.body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                bind(node.name, node, node)
            elif isinstance(node, ast.ClassDef):
                bind(node.name, node, None)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        self.star_imports.append(node.lineno)
                    else:
                        bind(alias.asname or alias.name.split(".")[0], node, None)
            elif isinstance(node, ast.Assign):
                lam = node.value if isinstance(node.value, ast.Lambda) else None
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        bind(target.id, target, lam)
                    else:
                        stack.append(target)
                stack.append(node.value)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bind(node.id, node, None)
            elif not isinstance(
                node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
            ):  # those have scopes of their own
                stack.extend(ast.iter_child_nodes(node))
        for bindings in found.values():
            bindings.sort(key=lambda b: (b.line, b.col))
        self.bindings = found

    def last(self, name: str) -> _Binding | None:
        """The binding of `name` that holds once the module has run, if any."""
        bindings = self.bindings.get(name)
        return bindings[-1] if bindings else None

    def functions(self, name: str) -> list[ast.FunctionDef]:
        """Every plain `def name` at module scope."""
        return [
            b.function
            for b in self.bindings.get(name, [])
            if isinstance(b.function, ast.FunctionDef)
        ]


# --- rules -----------------------------------------------------------------------


def _check_function(
    scope: _ModuleScope,
    file: str,
    name: str,
    params: tuple[str, ...] | None,
    required: bool,
    warnings: list[str],
) -> bool:
    """Whether `name` is defined; refuses it missing (if required) or misdeclared."""
    binding = scope.last(name)
    if binding is None:
        if scope.star_imports:
            # `from m import *` may define it; the sandboxed child will tell.
            if required:
                warnings.append(
                    f"{file}:{scope.star_imports[0]}: cannot check that {name} is defined "
                    "here, because of `from ... import *`"
                )
            return False
        if not required:
            return False
        shape = (
            "source = {...}` (a dict, or an object with __iter__ and __getitem__)"
            if params is None
            else f"def {name}({', '.join(params)}):`"
        )
        detail = f"{name} is not defined at the top level of {file}: add `{shape}"
        close = difflib.get_close_matches(name, list(scope.bindings), n=1, cutoff=0.7)
        if close:
            detail += f" (found {close[0]}; the name must be exactly {name})"
        raise JobRefused(RULE_FUNCTIONS, file, None, detail)
    if params is not None and binding.function is not None:
        _check_signature(file, name, params, binding.function)
    return True


def _check_signature(file: str, name: str, params: tuple[str, ...], fn: _Function) -> None:
    wanted = f"def {name}({', '.join(params)}):"
    if isinstance(fn, ast.AsyncFunctionDef):
        raise JobRefused(
            RULE_SIGNATURE,
            file,
            fn.lineno,
            f"{name} is an async def, but octop2p calls it as a plain function: write `{wanted}`",
        )
    args = fn.args
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    keyword_only = [
        a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None
    ]
    n = len(params)
    if required <= n and (positional >= n or args.vararg is not None) and not keyword_only:
        return
    called = f"{name}({', '.join(params)})"
    count = "no arguments" if n == 0 else "1 argument" if n == 1 else f"{n} arguments"
    raise JobRefused(
        RULE_SIGNATURE,
        file,
        fn.lineno,
        f"octop2p calls {called}, with {count}, but {file} defines "
        f"{name}({ast.unparse(args)}): write `{wanted}`",
    )


def _check_splitter(scope: _ModuleScope) -> None:
    binding = scope.last("splitter")
    fn = binding.function if binding else None
    if isinstance(fn, ast.FunctionDef) and not any(
        owner is fn for owner, _, _ in _yields(fn.body, fn)
    ):
        raise JobRefused(
            RULE_GENERATOR,
            "Split.py",
            fn.lineno,
            "splitter() never yields, but it must be a generator, so that the chief can "
            "pull one fragment at a time: yield each fragment (`yield from fragments` "
            "where it returns a list)",
        )


def _yields(
    nodes: Iterable[ast.AST], owner: _Function | None, prefix: str = ""
) -> list[tuple[_Function | None, str, int]]:
    """Every yield under `nodes`: (the function it makes a generator, its name, line)."""
    found: list[tuple[_Function | None, str, int]] = []
    qualname = prefix.removesuffix(".") or "<module>"
    stack: list[tuple[ast.AST, _Function | None, str, str]] = [
        (node, owner, qualname, prefix) for node in nodes
    ]
    while stack:
        node, owner, qualname, prefix = stack.pop()
        if isinstance(node, ast.Yield | ast.YieldFrom):
            found.append((owner, qualname, node.lineno))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            # Decorators, defaults and annotations run in the enclosing scope.
            outer: list[ast.AST] = [node.args]
            if not isinstance(node, ast.Lambda):
                outer += node.decorator_list + ([node.returns] if node.returns else [])
            stack += [(child, owner, qualname, prefix) for child in outer]
            inner = prefix + getattr(node, "name", "<lambda>")
            body = [node.body] if isinstance(node, ast.Lambda) else node.body
            stack += [(child, node, inner, inner + ".") for child in body]
        elif isinstance(node, ast.ClassDef):
            outer = [*node.decorator_list, *node.bases, *node.keywords]
            stack += [(child, owner, qualname, prefix) for child in outer]
            stack += [(child, owner, qualname, f"{prefix}{node.name}.") for child in node.body]
        else:
            stack += [(child, owner, qualname, prefix) for child in ast.iter_child_nodes(node)]
    return found


def _check_yields(trees: dict[str, ast.Module], allowed: set[int]) -> None:
    """The Butcher guide's rule: no function but splitter() in Split.py yields."""
    bad = sorted(
        (file, line, name)
        for file, tree in trees.items()
        for owner, name, line in _yields(tree.body, None)
        if not (file == "Split.py" and id(owner) in allowed)
    )
    if not bad:
        return
    file, line, name = bad[0]
    detail = (
        f"yield outside splitter(): only splitter() in Split.py may yield, but {name}() "
        "does; have it return its result instead (a list, if it has several)"
    )
    if file == "Split.py" and name.startswith("splitter."):
        detail += "; a function nested in splitter() counts as a function of its own"
    if len(bad) > 1:
        more = ", ".join(f"{f}:{n}" for f, n, _ in bad[1:4])
        detail += f" (also at {more}{', ...' if len(bad) > 4 else ''})"
    raise JobRefused(RULE_YIELD, file, line, detail)


def _check_requires(requires: tuple[str, ...], file: str, line: int | None) -> None:
    missing = missing_requirements(requires)
    if not missing:
        return
    them = "it" if len(missing) == 1 else "them"
    tops = " ".join(dict.fromkeys(m.split(".")[0] for m in missing))
    if getattr(sys, "frozen", False):
        # A bundled octop2p has no pip: the module must come with the bundle.
        how = f"this octop2p is a bundle: install octop2p with pip to use {tops}"
    else:
        how = f"install {them} there (`{sys.executable} -m pip install {tops}`)"
    raise JobRefused(
        RULE_REQUIRES,
        file,
        line,
        f"the job requires {', '.join(missing)}, which cannot be imported by the Python "
        f"that runs octop2p here ({sys.executable}); {how}, or take {them} out of requires",
    )
