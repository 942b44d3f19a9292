"""The fork server: one single-threaded process that forks every sandboxed child.

The node starts it once (``python -P -m sandbox._forkserver FD``, in ``/``), never by
forking its own trio process. It preloads the job runtime so that a child costs a
``fork()`` plus the confinement, not a fresh interpreter. It talks to the node over one
``SOCK_SEQPACKET`` Unix socket, one msgpack message per packet:

node -> server
    ``["spawn", id, spec]`` with two file descriptors attached (SCM_RIGHTS): the child's
    request pipe (read end) and reply pipe (write end).
    ``["kill", id]``: SIGKILL that child if it still runs.
server -> node
    ``["spawned", id, pid]``, ``["failed", id, reason]``, ``["exited", id, returncode]``
    (negative: killed by that signal, as in ``subprocess``).

When the node's end closes (also when the node dies), the server kills every child and
exits. Children get PR_SET_PDEATHSIG, so they die with the server.
"""

from __future__ import annotations

import array
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
from typing import Any

import msgpack

from . import _confine, _rules, _runtime  # noqa: F401  (preload: the child needs them)
from ._runtime import die_with_parent

MAX_PACKET = 1 << 20
#: Imported once the requests already waiting are served (a head start's child does not
#: wait for them), so that later children share these pages instead of importing them.
PRELOAD = ("bisect", "collections", "csv", "dataclasses", "datetime", "decimal",
           "fractions", "functools", "glob", "hashlib", "heapq", "itertools", "json", "math",
           "random", "re", "statistics", "string", "struct", "zlib")

def _move_fd(fd: int, target: int) -> None:
    if fd != target:
        os.dup2(fd, target, inheritable=False)
        os.close(fd)


def _child(spec: dict[str, Any], rfd: int, wfd: int) -> int:
    """Runs in the forked child: set up fds 0-4, then serve the role."""
    os.setsid()  # the terminal's Ctrl-C goes to the node, which then stops us
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    die_with_parent()
    # Park both pipe ends above 4 before putting them in place, so no dup2 clobbers one.
    rfd = os.dup(rfd) if rfd <= 4 else rfd  # os.dup's copy is non-inheritable
    wfd = os.dup(wfd) if wfd <= 4 else wfd
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    _move_fd(rfd, _runtime.REQUEST_FD)
    _move_fd(wfd, _runtime.REPLY_FD)
    os.closerange(_runtime.REPLY_FD + 1, os.sysconf("SC_OPEN_MAX"))
    return _runtime.serve(spec)


def _recv(sock: socket.socket) -> tuple[list[Any] | None, list[int]]:
    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(
            MAX_PACKET, socket.CMSG_SPACE(2 * fds.itemsize)
        )
    except ConnectionResetError:  # the node went away: same as a clean close
        return None, []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return msgpack.unpackb(data, raw=False), list(fds)


def _send(sock: socket.socket, message: list[Any]) -> None:
    sock.send(msgpack.packb(message, use_bin_type=True))


def _preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # as in main(): a child's collections walk only its own objects


def serve(sock: socket.socket) -> int:
    """The server loop; returns when the node closes its end."""
    children: dict[int, Any] = {}  # pid -> the node's id for it
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    preloaded = False
    try:
        while True:
            events = selector.select(None if preloaded else 0)
            if not events and not preloaded:  # nothing waits: now the preloads
                _preload()
                preloaded = True
                continue
            for key, _ in events:
                if key.fileobj is sock:
                    message, fds = _recv(sock)
                    if message is None:
                        return 0
                    _handle(sock, message, fds, children)
                else:
                    while os.read(wake_r, 4096) == 4096:
                        pass
            _reap(sock, children)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _handle(sock: socket.socket, message: list[Any], fds: list[int], children: dict) -> None:
    op = message[0]
    if op == "spawn":
        ident, spec = message[1], message[2]
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            _send(sock, ["failed", ident, "spawn needs exactly two pipe ends"])
            return
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                sock.close()
                code = _child(spec, fds[0], fds[1])
            except BaseException:  # noqa: BLE001 - never return into the server loop
                code = 70
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        children[pid] = ident
        _send(sock, ["spawned", ident, pid])
    elif op == "kill":
        for pid, ident in children.items():
            if ident == message[1]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    else:
        for fd in fds:
            os.close(fd)


def _reap(sock: socket.socket, children: dict) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ident = children.pop(pid, None)
        if ident is not None:
            _send(sock, ["exited", ident, os.waitstatus_to_exitcode(status)])


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m sandbox._forkserver FD``."""
    argv = sys.argv if argv is None else argv
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us exits, and
    # trio starts processes from a worker thread. The node's death closes its end of
    # the control socket, which ends serve() and kills every child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when we stop
    # The node starts us in "/" already; a start from elsewhere must not leave a folder
    # of the user's as every child's working directory until it enters its job's.
    os.chdir("/")
    sock = socket.socket(fileno=int(argv[1]))
    _confine.prepare()  # what every child's confine() would otherwise redo
    # Every object so far goes to the collector's permanent generation: a collection
    # in a child then walks only the child's own objects. Without this, each confined
    # child collected thousands of the server's young objects, writing to (so copying)
    # their pages: 2-4 ms of its start (docs/performance.md).
    gc.freeze()
    return serve(sock)


if __name__ == "__main__":
    sys.exit(main())
