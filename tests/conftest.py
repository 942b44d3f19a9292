"""Shared fixtures: paths, running the real CLI, and hostile-test guards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m octop2p ARGS`` as a user would, capturing its output."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("OCTOP2P_PROGRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "octop2p", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
    )


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(autouse=True, scope="session")
def _own_default_home(tmp_path_factory: pytest.TempPathFactory):
    """Commands run without `--home` (`octop2p run`, say) use a home of this test run's,
    never the user's own (`~/.local/share/octop2p`), which would outlive the run."""
    mine = tmp_path_factory.mktemp("user")
    wanted = {"OCTOP2P_HOME": str(mine / "octop2p"), "XDG_DATA_HOME": str(mine)}
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
