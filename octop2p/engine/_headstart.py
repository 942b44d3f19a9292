"""A job's head start: its first sandboxed child asked for before the engine loads.

``octop2p run`` starts the fork server (`_forkstart`), then asks it here, over the same
socket and before trio or the engine are imported, for the child that runs the job's
code first (the split child). The server forks it as soon as it has booted, so the
job's own code starts while the command still imports the engine. The engine adopts
the child when it would have spawned it (``ForkServer.adopt``), only if it would have
asked for the very same spec; otherwise the early child is killed and a new one spawned.
No trio here.
"""

from __future__ import annotations

import array
import logging
import os
import socket
from pathlib import Path
from typing import Any

import msgpack

import sandbox
from octop2p.engine._forkstart import EarlyChild, StartedServer
from octop2p.engine._limits import Limits
from octop2p.engine._package import JobSpec
from sandbox import Policy

log = logging.getLogger("octop2p.engine._local")


def child_spec(role: str, *, kind: str, job_dir: Path, script: str | None,
               results_dir: Path | None, limits: Limits, options: dict[str, Any],
               layers: frozenset[str]) -> dict[str, Any]:
    """What the fork server needs to start one child (docs/architecture.md)."""
    writes = (str(results_dir),) if results_dir is not None else ()
    policy = Policy(
        read_paths=(str(job_dir),),
        write_paths=writes,
        memory_bytes=limits.memory_mb << 20,
        cpu_seconds=limits.cpu_seconds,
        fsize_bytes=(limits.merge_output_mb << 20) if results_dir is not None else 0,
        max_threads=limits.threads,
        layers=layers,
    )
    return {
        "role": role, "kind": kind, "job_dir": str(job_dir), "script": script,
        "results_dir": str(results_dir) if results_dir is not None else None,
        "limits": limits.to_dict(), "options": options, "policy": policy.to_dict(),
    }


def usable_layers(*, required: frozenset[str] | None = None) -> frozenset[str]:
    """The sandbox layers this machine supports (``octop2p doctor`` shows the same)."""
    status = sandbox.probe()
    available = frozenset(name for name, st in status.items() if st.available)
    missing = sorted(sandbox.ALL_LAYERS - available)
    for name in missing:
        log.warning("sandbox layer %s is not available here: %s", name, status[name].detail)
    if required is not None and not required <= available:
        raise sandbox.SandboxError(
            "this machine cannot apply the sandbox layers "
            + ", ".join(sorted(required - available))
        )
    return available


def local_workers(workers: int | None) -> int:
    """How many local workers ``octop2p run -w N`` gets (default: the CPU count)."""
    return max(1, workers or os.cpu_count() or 1)


def local_partitions(spec: JobSpec, workers: int) -> int:
    """A script's reduce partitions in ``octop2p run``: its option, else two per worker."""
    return spec.options.partitions or max(2, 2 * workers)


def split_spec(spec: JobSpec, *, partitions: int, layers: frozenset[str]) -> dict[str, Any]:
    """The split child's spec, as the runner builds it (`JobRunner.maker`)."""
    return child_spec("split", kind=spec.kind, job_dir=spec.root, script=spec.script,
                      results_dir=None, limits=spec.options.limits, layers=layers,
                      options={"partitions": partitions, "map_batch": spec.options.map_batch})


def head_start(server: StartedServer, spec: JobSpec, workers: int) -> frozenset[str]:
    """Ask ``server`` for the job's split child now; returns the sandbox layers it uses.

    Not for a job allowed threads: the runner counts a child's threads from its spawn."""
    layers = usable_layers()
    if spec.options.limits.threads > 1:
        return layers
    child = split_spec(spec, partitions=local_partitions(spec, workers), layers=layers)
    ident = -1 - len(server.early)  # below every ident a ForkServer hands out
    req_r, req_w = os.pipe2(os.O_CLOEXEC)
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
    try:
        fds = array.array("i", (req_r, rep_w))
        server.sock.sendmsg([msgpack.packb(["spawn", ident, child], use_bin_type=True)],
                           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except OSError as exc:  # the server died at once: the engine will say so
        log.debug("no head start: %s", exc)
        for fd in (req_w, rep_r):
            os.close(fd)
        return layers
    finally:
        os.close(req_r)
        os.close(rep_w)
    server.early["split"] = EarlyChild(ident, child, req_w, rep_r)
    return layers
