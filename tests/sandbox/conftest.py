"""Fixtures for the confinement tests: a job folder, a results folder, a secret."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox import Policy


@dataclass
class Box:
    """The folders of one confined child, and a secret it must never see."""

    job: Path  # read-only for the child
    results: Path  # read-write for the child
    secret: Path  # outside both: stands for the node's key
    token: str  # the secret's text, searched for in everything the child reports

    def policy(self, **changes: object) -> Policy:
        """A policy for this box with short, test-sized limits."""
        values: dict[str, object] = {
            "read_paths": (str(self.job),),
            "write_paths": (str(self.results),),
            "memory_bytes": 256 << 20,
            "cpu_seconds": 5,
            "fsize_bytes": 1 << 20,
        }
        values.update(changes)
        return Policy(**values)  # type: ignore[arg-type]


@pytest.fixture
def box(tmp_path: Path) -> Box:
    token = "canary-" + secrets.token_hex(16)
    job = tmp_path / "job"
    results = tmp_path / "results"
    job.mkdir()
    results.mkdir()
    (job / "data.txt").write_text("job data\n")
    secret = tmp_path / "node" / "node_key"
    secret.parent.mkdir()
    secret.write_text(token)
    os.chmod(secret, 0o600)
    return Box(job, results, secret, token)
