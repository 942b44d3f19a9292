"""Starting the fork server's process, without trio or the sandbox package.

``octop2p run`` starts it first thing: its interpreter boots and preloads the job
runtime on the other core while the command imports trio and the engine, and the engine
adopts it (``open_fork_server(started)``). A node starts it the same way when it opens
its fork server.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EarlyChild:
    """A child asked of a server before the engine adopted it (`_headstart`): its ident,
    its spec, the write end of its request pipe and the read end of its reply pipe."""

    ident: int
    spec: dict[str, Any]
    req_w: int
    rep_r: int


@dataclass
class StartedServer:
    """A fork server process and the node's end of its socket, not yet adopted, with
    the children already asked of it, by role."""

    proc: subprocess.Popen[bytes]
    sock: socket.socket
    early: dict[str, EarlyChild] = field(default_factory=dict)

    def close(self) -> None:
        """Stop a server never adopted (the command failed before its job ran): at once,
        since it may still be booting; its children die with it (PR_SET_PDEATHSIG)."""
        self.sock.close()
        for early in self.early.values():
            os.close(early.req_w)
            os.close(early.rep_r)
        self.early.clear()
        self.proc.kill()
        self.proc.wait()

def fork_server_command(fd: int) -> list[str]:
    """The argv that starts the fork server on socket ``fd``."""
    if getattr(sys, "frozen", False):
        # In a PyInstaller bundle sys.executable is the bundle, which cannot run `-m`;
        # its entry point (packaging/entry.py) routes this flag to the fork server.
        # Its sys.path is the bundle's own, never the working directory.
        return [sys.executable, "--octop2p-fork-server", str(fd)]
    # -P: `python -m` would put the working directory first in sys.path, and every
    # sys.path entry is a folder job code may read (Landlock's read set): the node's
    # working directory, with whatever the user keeps there, is no place for a job.
    return [sys.executable, "-P", "-m", "sandbox._forkserver", str(fd)]


def _sandbox_root() -> str:
    """The folder that holds the `sandbox` package (found without importing it)."""
    spec = importlib.util.find_spec("sandbox")
    if spec is None or spec.origin is None:  # a frozen bundle: import it to ask
        import sandbox

        return str(Path(sandbox.__file__).resolve().parent.parent)
    return str(Path(spec.origin).resolve().parent.parent)


def start_server() -> StartedServer:
    """Start ``python -m sandbox._forkserver`` on one end of a fresh socket pair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # A job can read what its process inherited: the fork server gets no secrets from
    # the node's environment, only what Python needs to find the sandbox.
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": _sandbox_root()}
    try:
        proc = subprocess.Popen(
            fork_server_command(theirs.fileno()),
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            cwd="/",  # nothing of the node's working directory reaches a child
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return StartedServer(proc, ours)
