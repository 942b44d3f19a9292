"""Helpers shared by the benchmarks: timing a CLI run, peak memory of a process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def octop2p_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "octop2p", *args]


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return out


class PeakMemory:
    """Polls the peak RSS (VmHWM) of a process and of every descendant it starts."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.node_kb = 0
        self.children_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.node_kb = max(self.node_kb, _vm_hwm_kb(self.pid))
            frontier = _children_of(self.pid)
            seen = set()
            while frontier:
                pid = frontier.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                self.children_kb[pid] = max(self.children_kb.get(pid, 0), _vm_hwm_kb(pid))
                frontier.extend(_children_of(pid))
            time.sleep(self.interval)


def run_octop2p(job: Path, *extra: str, cwd: Path | None = None) -> tuple[float, dict]:
    """Run ``octop2p run JOB --json``; returns (wall seconds, its JSON report)."""
    started = time.perf_counter()
    proc = subprocess.run(
        octop2p_cmd("run", str(job), "--json", *extra),
        cwd=cwd, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"octop2p run failed ({proc.returncode}):\n{proc.stderr}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])
