"""What the commands print: tables on stdout with a header, one JSON object for --json.

Progress and messages go to stderr (the rich console the commands share); this module
holds only what goes to stdout. It imports nothing heavy, so that every command stays
quick to start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

#: Sections of docs/jobs.md that messages point at.
DOCS_SWARM = "docs/jobs.md#on-a-swarm-submit-status-fetch"
DOCS_EXIT = "docs/jobs.md#exit-codes"
DOCS_RESULTS = "docs/jobs.md#results"
DOCS_FIRST = "docs/first-swarm.md"


def echo_json(data: Any) -> None:
    """One JSON object on one line of stdout."""
    click.echo(json.dumps(data, default=str))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows under a header on stdout, columns padded to their widest cell (the last
    column is not padded, so lines carry no trailing spaces)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        click.echo("  ".join([*padded, row[-1]]).rstrip())


def jobs_table(jobs: list[dict[str, Any]]) -> None:
    """The `status` / `jobs` table."""
    rows = []
    for j in jobs:
        total = j["fragments_total"]
        done = f"{j['fragments_done']}/{total if total is not None else '?'}"
        note = j.get("error") or (f"waiting: {j['waiting']}" if j.get("waiting") else "")
        refused = "; ".join(f"refused by {d[:7]}: {r}" for d, r in (j.get("refused") or {}).items())
        resumed = (f"resumed after a restart, {j['resumed']} results kept"
                   if j.get("resumed") is not None else "")
        note = "; ".join(n for n in (resumed, note, refused) if n)
        rows.append([j["job"][:12], j["name"], j["state"], j["phase"] or "-", done,
                     len(j["workers"]), note])
    table(["JOB", "NAME", "STATE", "PHASE", "FRAGMENTS", "WORKERS", "NOTE"], rows)


def peers_table(peers: list[dict[str, Any]]) -> None:
    """The `peers` table."""
    rows = [
        [p["id"], p["address"], p["cores"], "donating" if p["donating"] else "not donating",
         "trusted" if p["trusted"] else "untrusted", p.get("name", ""),
         f"quarantined: {p.get('reason', '')}" if p.get("quarantined") else ""]
        for p in peers
    ]
    table(["ID", "ADDRESS", "CORES", "DONATING", "TRUSTED", "NAME", "NOTE"], rows)


def check_job_path(job: Path, out: Path | None) -> None:
    """Usage errors a command can see before it starts anything (exit code 2)."""
    from octop2p.engine._results import check_out
    from octop2p.errors import UsageError

    if not job.exists():
        raise UsageError(
            f"{job}: no such file or folder; a job is a folder with Split.py, Process.py "
            "and Merge.py, or a MapReduce script ending in .py "
            "(docs/jobs.md#a-split--process--merge-package)"
        )
    if out is not None:
        check_out(out)
