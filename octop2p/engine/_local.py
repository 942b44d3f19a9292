"""``octop2p run``: one job on this machine, with local sandboxed workers and no network."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sandbox
from octop2p.engine._children import open_fork_server
from octop2p.engine._groups import collapse_groups
from octop2p.engine._limits import Limits
from octop2p.engine._package import JobSpec, load_job
from octop2p.engine._results import check_out, default_out, deliver
from octop2p.engine._runner import Chief, OutputSink, Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a finished local run produced."""

    job_id: str
    name: str
    out: Path
    fragments: int
    seconds: float
    workers: dict[str, int]


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


def prepare(path: Path, node_limits: Limits | None = None) -> JobSpec:
    """Load and validate a job; raises JobRefused before anything runs."""
    return load_job(path, node_limits or Limits())


async def run_local(
    spec: JobSpec,
    *,
    workers: int | None = None,
    out: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_output: OutputSink | None = None,
    layers: frozenset[str] | None = None,
) -> RunResult:
    """Run ``spec`` with ``workers`` sandboxed local workers and deliver it to ``out``."""
    workers = workers or os.cpu_count() or 1
    out = out or default_out(spec.options.name)
    check_out(out)
    layers = usable_layers() if layers is None else layers
    job_id = secrets.token_hex(6)
    started = time.monotonic()
    with (
        collapse_groups(),
        tempfile.TemporaryDirectory(prefix=f"octop2p-{spec.options.name}-") as tmp,
    ):
        work_dir = Path(tmp)
        async with open_fork_server() as fs:
            chief = Chief(
                spec,
                fs,
                workers=workers,
                work_dir=work_dir,
                layers=layers,
                on_progress=on_progress,
                on_output=on_output,
            )
            results_dir = await chief.run()
        delivered = deliver(results_dir, out, job_name=spec.options.name, job_id=job_id)
    return RunResult(
        job_id=job_id,
        name=spec.options.name,
        out=delivered,
        fragments=chief.accepted,
        seconds=time.monotonic() - started,
        workers=dict(chief.progress.workers),
    )

