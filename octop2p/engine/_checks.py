"""The static checks of a job's code: its syntax tree, the functions it must define,
their signatures, and that only ``splitter`` yields. Nothing here runs job code."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
import warnings as _warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from octop2p.errors import JobRefused

RULE_PATH = "job path"
RULE_FILES = "required files"
RULE_FUNCTIONS = "required functions"
RULE_SIGNATURE = "signature"
RULE_GENERATOR = "splitter is a generator"
RULE_YIELD = "only splitter yields"
RULE_SYNTAX = "syntax"
RULE_REQUIRES = "requires"
RULE_SIZE = "package size"

_Function: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


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
