"""A child's start, step by step: where the milliseconds of spawn -> ``ready`` go.

    python bench/sandbox_steps.py [--runs N]

The node's own fork server and children, as in bench/sandbox.py, except that the fork
server is started through this file, which first wraps the runtime's steps with timers
(wall, CPU, page faults: a child's first write to a page it shares with the server
copies that page). Each child sends its figures with ``ready``. N work children of
examples/primes with no layer and N with every layer, alternated; medians. "rest" is
what the wrapped steps leave out (the spec, the environment, the folder, the fds).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sandbox._forkserver as forkserver  # noqa: E402
from sandbox import _confine, _landlock, _runtime, _seccomp  # noqa: E402

#: (module, function name, label): the steps of a child's start, in the order they run;
#: those a tree lacks are left out (so this file also runs on an older checkout).
STEPS = (
    (_runtime, "die_with_parent", "parent-death signal (x2)"),
    (_confine, "_stat_fields", "/proc/self/stat"),
    (_confine, "_vm_size", "/proc/self/statm"),  # before 2026-12-02: one more read
    (_confine, "_wipe_initial_environ", "wipe the initial environment"),
    (_confine, "_unshare", "unshare user+net+ipc, id maps"),
    (_confine, "landlock_paths", "Landlock: read paths"),
    (_landlock, "restrict", "Landlock: ruleset, restrict"),
    (_confine, "_apply_rlimits", "rlimits"),
    (_confine, "_no_new_privs", "no_new_privs, capabilities"),
    (_seccomp, "compiled", "seccomp: the filter"),
    (_seccomp, "build_filter", "seccomp: the filter"),  # before 2026-12-02: built per child
    (_seccomp, "install", "seccomp: load"),
    (_runtime, "WorkRole", "import the job (Process.py)"),
)
FIRST, WHOLE = "fork -> child runs", "child runs -> ready"

# --- in the fork server and its children ----------------------------------------------

_spent: dict[str, list[float]] = {}  # label -> [wall ms, CPU ms, page faults], summed
_forked_at = [0.0]


def _now() -> tuple[float, float, int]:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return time.perf_counter() * 1000, time.thread_time() * 1000, faults


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def step(*args: Any, **kwargs: Any) -> Any:
        before = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = _spent.setdefault(label, [0.0, 0.0, 0])
            for i, (a, b) in enumerate(zip(before, _now(), strict=True)):
                spent[i] += b - a
    return step


def serve_timed(fd: int) -> int:
    """The fork server, with every child's steps timed and reported with ``ready``."""
    for module, name, label in STEPS:
        if hasattr(module, name):
            setattr(module, name, _timed(label, getattr(module, name)))
    fork, send = os.fork, _runtime.write_message

    def timed_fork() -> int:
        _forked_at[0] = time.perf_counter() * 1000
        pid = fork()
        if pid == 0:
            start = _now()
            _spent.clear()
            _spent[FIRST] = [start[0] - _forked_at[0], 0.0, 0]
            _spent["start"] = list(start)
        return pid

    def write(out: int, message: list[Any]) -> None:
        if message[0] == "ready":
            start, end = _spent.pop("start"), _now()
            whole = [b - a for a, b in zip(start, end, strict=True)]
            steps = [v for k, v in _spent.items() if k != FIRST]
            rest = [whole[i] - sum(s[i] for s in steps) for i in range(3)]
            message[1]["steps"] = {**_spent, "rest": rest, WHOLE: whole}
        send(out, message)

    os.fork = timed_fork  # type: ignore[assignment]
    _runtime.write_message = write
    return forkserver.main([sys.argv[0], str(fd)])


# --- in the node -----------------------------------------------------------------------


async def measure(runs: int) -> tuple[list[str], dict[str, dict[str, list[list[float]]]]]:
    """Step figures of `runs` starts per kind: kind -> label -> one [wall, CPU, faults]
    per start."""
    from bench.sandbox import PRIMES, spec_for
    from sandbox import probe

    try:
        from octop2p.engine import _children
    except ImportError:  # a checkout before the engine package (be3c1cb and older)
        from octop2p import _children  # type: ignore[no-redef]

    layers = frozenset(name for name, st in probe().items() if st.available)
    _children.fork_server_command = lambda fd: [  # type: ignore[assignment]
        sys.executable, "-P", __file__, "--server", str(fd)]
    found: dict[str, dict[str, list[list[float]]]] = {"no layer": {}, "every layer": {}}
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job"
        job.mkdir()
        (job / "Process.py").write_bytes(PRIMES.read_bytes())
        specs = {"no layer": spec_for(job, frozenset()), "every layer": spec_for(job, layers)}
        async with _children.open_fork_server() as fs:
            for run in range(runs + 2):  # two to warm up
                for kind, spec in specs.items():
                    child = await fs.spawn(spec, max_frame=64 << 20)
                    reply = await child.receive()
                    await child.aclose()
                    if reply[0] != "ready":
                        raise SystemExit(f"the child said {reply!r}")
                    for label, figures in reply[1]["steps"].items():
                        if run >= 2:
                            found[kind].setdefault(label, []).append(figures)
    return sorted(layers), found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--server", type=int, help=argparse.SUPPRESS)  # the fork server's fd
    args = parser.parse_args()
    if args.server is not None:
        return serve_timed(args.server)
    import trio

    layers, found = trio.run(measure, args.runs)
    print(f"layers: {', '.join(layers)}; median of {args.runs}: wall ms, CPU ms, page faults")
    print(f"{'':34}{'no layer':>22}{'every layer':>24}")
    labels = [FIRST, *dict.fromkeys(label for _m, _n, label in STEPS), "rest", WHOLE]
    for label in labels:
        cells = []
        if not any(label in found[kind] for kind in found):
            continue
        for kind in ("no layer", "every layer"):
            rows = found[kind].get(label)
            if not rows:
                cells.append(f"{'-':>8}{'':16}")
                continue
            wall, cpu, faults = (statistics.median(column) for column in zip(*rows, strict=True))
            cells.append(f"{wall:8.2f} {cpu:7.2f} {faults:6.0f}  ")
        print(f"{label:34}{''.join(cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
