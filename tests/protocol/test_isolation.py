"""protocol/ is pure: it works with trio and socket unimportable, and imports no I/O."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import protocol

PACKAGE = Path(protocol.__file__).parent
# The layers above, anything that does network I/O, and the unseeded sources of
# randomness (`random`, `secrets`): protocol/ takes randomness as an argument instead.
FORBIDDEN = ("trio", "socket", "zeroconf", "PySide6", "octop2p", "sandbox", "gui", "asyncio",
             "selectors", "ssl", "random", "secrets")

SCRIPT = f"""
import sys
for name in {FORBIDDEN!r}:
    sys.modules[name] = None  # any import of these now raises ImportError
from protocol import (Connection, Role, NodeIdentity, Heartbeat, HandshakeComplete,
                      MessageReceived, SwarmCode, JobCode)
code = SwarmCode.generate()
a = Connection(Role.INITIATOR, NodeIdentity.generate(), swarm_secret=code.secret)
b = Connection(Role.RESPONDER, NodeIdentity.generate(), swarm_secret=code.secret)
b.receive_data(a.data_to_send()); assert b.next_event() is None
a.receive_data(b.data_to_send()); assert isinstance(a.next_event(), HandshakeComplete)
b.receive_data(a.data_to_send()); assert isinstance(b.next_event(), HandshakeComplete)
b.receive_data(a.send(Heartbeat(1, True, 2)))
assert isinstance(b.next_event(), MessageReceived)
job = JobCode.generate()
a = Connection(Role.INITIATOR, NodeIdentity.generate(), job_code=job)
b = Connection(Role.RESPONDER, NodeIdentity.generate(), job_code=job)
b.receive_data(a.data_to_send()); b.next_event()
a.receive_data(b.data_to_send()); assert isinstance(a.next_event(), HandshakeComplete)
print("ok")
"""


def test_protocol_works_without_trio_or_socket() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_no_module_imports_io_or_other_layers() -> None:
    pattern = re.compile(
        r"^\s*(import|from)\s+(trio|socket|zeroconf|PySide6|octop2p|sandbox|gui)\b", re.M
    )
    for path in PACKAGE.glob("*.py"):
        assert not pattern.search(path.read_text()), f"{path.name} imports I/O or a layer above"
