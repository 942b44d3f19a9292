"""What the app shows of its node's jobs, built from API replies and node events.

Plain Python, no Qt: the bridge feeds `JobBook` with ``status`` replies and ``progress``
/ ``job`` events, and the Qt models read it. It also keeps what only the app needs: a
history of each job's progress, for the throughput chart, and where its results went.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINISHED = frozenset({"done", "failed", "cancelled"})
MAX_SAMPLES = 4096  # per job: a long job keeps its recent history, memory stays bounded


@dataclass
class JobView:
    """One job as the app shows it."""

    id: str
    name: str = ""
    state: str = "queued"
    phase: str = ""
    done: int = 0
    total: int | None = None
    workers: dict[str, int] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    rule: str | None = None
    traceback: str | None = None
    has_results: bool = False
    resumed: int | None = None  # resumed after its chief restarted: results kept
    submitted_here: bool = False  # the app submitted it, so it fetches its results
    results_path: Path | None = None  # where the app delivered its results
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, done, all phases)
    _phase_done: dict[str, int] = field(default_factory=dict)

    @property
    def is_finished(self) -> bool:
        """Done, failed or cancelled."""
        return self.state in FINISHED

    @property
    def percent(self) -> int | None:
        """Progress of the current phase in percent; None while the total is unknown."""
        if self.state == "done":
            return 100
        if not self.total:
            return None
        return min(100, int(100 * self.done / self.total))

    @property
    def fragments_done(self) -> int:
        """Fragments done over every phase so far (map and reduce tasks both count)."""
        return sum(self._phase_done.values()) or self.done

    def apply_status(self, status: dict[str, Any]) -> None:
        """Take a ``status`` reply of the node API."""
        self.name = status.get("name") or self.name
        if not self.is_finished:  # an ended job stays ended: a reply sent before it ended
            self.state = status.get("state") or self.state  # may arrive after its event
        self.started = status.get("started") or self.started
        self.finished = status.get("finished") or self.finished
        self.error, self.rule = status.get("error"), status.get("rule")
        self.traceback = status.get("traceback")
        self.has_results = bool(status.get("has_results"))
        resumed = status.get("resumed")
        self.resumed = resumed if isinstance(resumed, int) else None
        self.workers = dict(status.get("workers") or {})
        phase = status.get("phase") or ""
        done, total = int(status.get("fragments_done") or 0), status.get("fragments_total")
        if phase:
            self._progress(phase, done, total, status.get("finished") or time.time(),
                           sample=False)

    def apply_progress(self, event: dict[str, Any], local_id: str = "") -> None:
        """Take a ``progress`` event: counts for the chart and the bar.

        The chief's own slots are named ``local-N`` in events; the API's status names
        them by the node's id (``local_id``), and so does the app.
        """
        if event.get("workers") is not None:
            workers: dict[str, int] = {}
            for worker, count in event["workers"].items():
                key = local_id if local_id and worker.startswith("local-") else worker
                workers[key] = workers.get(key, 0) + int(count)
            self.workers = workers
        if self.state == "queued":
            self.state = "running"
        self._progress(event.get("phase") or "", int(event.get("done") or 0),
                       event.get("total"), float(event.get("time") or time.time()))

    def _progress(self, phase: str, done: int, total: int | None, when: float, *,
                  sample: bool = True) -> None:
        before = self.fragments_done
        self.phase, self.done, self.total = phase, done, total
        if phase:
            self._phase_done[phase] = max(done, self._phase_done.get(phase, 0))
        after = self.fragments_done
        if self.started is None:
            self.started = when
        if sample and (after != before or not self.samples):
            self.samples.append((when, after))
            del self.samples[:-MAX_SAMPLES]

    def throughput(self, now: float | None = None, buckets: int = 48) -> list[tuple[float, float]]:
        """Fragments per second over the job's life: (seconds since start, rate) points."""
        return throughput(self.samples, self.started, self.finished or now or time.time(),
                          buckets)


def throughput(samples: list[tuple[float, int]], start: float | None, end: float,
               buckets: int = 48, min_width: float = 0.5) -> list[tuple[float, float]]:
    """Rates from cumulative counts: the count gained in each of at most ``buckets``
    equal slices of [start, end] (none shorter than ``min_width`` seconds, since progress
    events come about ten times a second), divided by the slice's length, then smoothed
    over three slices."""
    if not samples:
        return []
    start = min(start if start is not None else samples[0][0], samples[0][0])
    span = max(end - start, 1e-3)
    count = max(1, min(buckets, int(span / min_width)))
    width = span / count
    raw: list[float] = []
    index, last_count, previous = 0, 0, 0
    for i in range(count):
        edge = start + width * (i + 1)
        while index < len(samples) and samples[index][0] <= edge + 1e-9:
            last_count = samples[index][1]
            index += 1
        raw.append((last_count - previous) / width)
        previous = last_count
    smooth = [sum(raw[max(0, i - 1):i + 2]) / len(raw[max(0, i - 1):i + 2])
              for i in range(len(raw))]
    return [(width * (i + 1), rate) for i, rate in enumerate(smooth)]


class JobBook:
    """Every job of the node, newest first, by id."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobView] = {}

    def ordered(self) -> list[JobView]:
        """Newest first: the job the owner just submitted sits at the top."""
        return sorted(self.jobs.values(), key=lambda j: j.started or float("inf"), reverse=True)

    def get(self, job_id: str) -> JobView:
        """The job, made on first sight."""
        if job_id not in self.jobs:
            self.jobs[job_id] = JobView(job_id, started=None)
        return self.jobs[job_id]

    def apply_statuses(self, statuses: Iterable[dict[str, Any]]) -> None:
        """Take a full ``status`` reply (every job of the node)."""
        for status in statuses:
            self.get(status["job"]).apply_status(status)

    def apply_event(self, event: dict[str, Any], local_id: str = "") -> JobView | None:
        """Take a node event; returns the job it changed, if any."""
        job_id = event.get("job")
        if not job_id or event.get("event") not in ("job", "progress"):
            return None
        job = self.get(job_id)
        if event["event"] == "progress":
            job.apply_progress(event, local_id)
        else:
            job.name = event.get("name") or job.name
            job.state = event.get("state") or job.state
            if job.started is None:
                job.started = float(event.get("time") or time.time())
            if event.get("error"):
                job.error = event["error"]
            if job.is_finished and job.finished is None:
                job.finished = float(event.get("time") or time.time())
        return job


def short_id(node_id: str) -> str:
    """The first group of a node id: enough to tell peers apart at a glance."""
    return node_id.split("-", 1)[0]


def peer_label(peers: list[dict[str, Any]], node_id: str, self_id: str = "") -> str:
    """A node as people read it: "this computer", "name (ABCDEF1)" or the short id."""
    if node_id and node_id == self_id:
        return "this computer"
    for peer in peers:
        if peer.get("id") == node_id and peer.get("name"):
            return f"{peer['name']} ({short_id(node_id)})"
    return short_id(node_id) or "?"
