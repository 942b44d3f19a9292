"""A MapReduce script's phases on the chief, through `octop2p run` with real children.

The merge child for ``final`` is spawned as the reduce starts (its import of the script
overlaps the reduce); what it prints while loading must still come first in the output,
once, as when it was spawned after the reduce.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """\
print("loading")
source = {f"doc{i}": "x y x " * (i + 1) for i in range(12)}

def mapfn(key, value):
    for word in value.split():
        yield word, 1

def reducefn(key, values):
    return len(values)

def final(key, value):
    print(key, value)
"""


def test_what_the_merge_child_prints_while_loading_leads_the_output(tmp_path: Path) -> None:
    (tmp_path / "count.py").write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OCTOP2P_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [sys.executable, "-m", "octop2p", "run", "count.py", "-w", "2", "-o", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    x = sum(2 * (i + 1) for i in range(12))
    expected = f"loading\nx {x}\ny {x // 2}\n"
    assert (tmp_path / "out" / "output.txt").read_text() == expected
    assert proc.stdout == expected
    # The split and work children printed it too, as themselves, on stderr.
    assert "split: loading" in proc.stderr and "work: loading" in proc.stderr
