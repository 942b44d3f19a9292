"""Watchers of the job's chief-side children (splitter, merger, final): started by the
runner with each child, they stop the job when the child breaks a rule that no rlimit
enforces on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from octop2p.engine._results import check_output_quota
from octop2p.engine._slot import watch_threads
from octop2p.errors import JobFailed

if TYPE_CHECKING:
    from octop2p.engine._runner import JobRunner

#: How often the merger's output is summed.
QUOTA_SECONDS = 0.5


def watch_child(nursery: trio.Nursery, runner: JobRunner, child: Any, role: str) -> None:
    """Start what watches a chief-side child of ``role`` while it lives."""
    if runner.limits.threads > 1:
        nursery.start_soon(_watch_threads, runner, child, role)
    if role == "merge":
        nursery.start_soon(_watch_output, runner, child)


async def _watch_output(runner: JobRunner, child: Any) -> None:
    """While a merge child lives, its output is summed every QUOTA_SECONDS (off the event
    loop): a merger that floods results_dir within one call is stopped there, not only
    between calls. RLIMIT_FSIZE bounds each file meanwhile."""
    while not child.dead:
        await trio.sleep(QUOTA_SECONDS)
        try:
            await trio.to_thread.run_sync(check_output_quota, runner.results_dir,
                                           runner.limits)
        except JobFailed as exc:
            await child.kill()
            runner.fail(exc)
            return


async def _watch_threads(runner: JobRunner, child: Any, role: str) -> None:
    limit = runner.limits.threads
    found = await watch_threads(child.pid, limit)
    if found is not None:
        await child.kill()
        runner.fail(JobFailed(
            message=f"the {role} child ran {found} threads at once, more than this job's "
            f"limit of {limit} (limits.threads)", rule="threads"))
