"""The node's side of the sandbox: the fork server process and the children it forks.

``open_fork_server()`` starts ``python -m sandbox._forkserver`` once per node. Each
``Child`` is one sandboxed process serving one role of one job over two pipes (see
docs/architecture.md). Everything a child writes is untrusted: frames are size-checked
before allocation and decoded without pickle.
"""

from __future__ import annotations

import array
import logging
import os
import socket
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from typing import Any

import msgpack
import trio

from octop2p.engine._forkstart import EarlyChild, StartedServer, start_server
from octop2p.engine._forkstart import fork_server_command as fork_server_command
from sandbox._wire import CHILD_REPLY, FrameDecoder, WireError, pack

log = logging.getLogger(__name__)

_MAX_PACKET = 1 << 20
#: How long a dead child's exit status may take to arrive from the fork server.
_EXIT_WAIT = 5.0


class ChildDied(Exception):
    """The child process ended without answering."""

    def __init__(self, returncode: int | None, detail: str = "") -> None:
        super().__init__(detail or f"child exited with {returncode}")
        self.returncode = returncode


class ChildReported(Exception):
    """The child answered with an ``error`` frame (job code raised, or broke a rule)."""

    def __init__(self, seq: Any, info: dict[str, Any]) -> None:
        super().__init__(info.get("message", "job code failed"))
        self.seq = seq
        self.info = info


class ChildProtocolError(Exception):
    """The child sent bytes that are not a valid frame: it is broken or hostile."""


class ForkServer:
    """Handle on the running fork server; spawn children with :meth:`spawn`."""

    def __init__(self) -> None:
        self._sock: trio.socket.SocketType | None = None
        self._ids = count(1)
        self._spawned: dict[int, trio.Event] = {}
        self._spawn_result: dict[int, tuple[str, Any]] = {}
        self._exits: dict[int, int] = {}
        self._exit_events: dict[int, trio.Event] = {}
        self._send_lock = trio.Lock()
        self._early: dict[str, EarlyChild] = {}
        self.closed = False

    async def _run(self, started: StartedServer | None = None, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = started or start_server()
        proc = started.proc
        self._sock = trio.socket.from_stdlib_socket(started.sock)
        self._early = started.early
        for early in self._early.values():
            self._spawned[early.ident] = trio.Event()
            self._exit_events[early.ident] = trio.Event()
        task_status.started()
        try:
            await self._read_loop()
        finally:
            self.closed = True
            self._sock.close()  # the server kills its children and exits
            for event in [*self._spawned.values(), *self._exit_events.values()]:
                event.set()
            for early in self._early.values():  # never adopted
                os.close(early.req_w)
                os.close(early.rep_r)
            self._early.clear()
            with trio.move_on_after(2) as scope:
                scope.shield = True
                await _exited(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            data = await self._sock.recv(_MAX_PACKET)
            if not data:
                log.warning("the sandbox fork server stopped")
                return
            message = msgpack.unpackb(data, raw=False)
            op, ident = message[0], message[1]
            if op in ("spawned", "failed"):
                self._spawn_result[ident] = (op, message[2])
                event = self._spawned.get(ident)  # popped by its waiter
                if event is not None:
                    event.set()
            elif op == "exited":
                self._exits[ident] = message[2]
                self._exit_events.setdefault(ident, trio.Event()).set()

    async def _send(self, message: list[Any], fds: tuple[int, ...] = ()) -> None:
        if self._sock is None or self.closed:
            raise ChildDied(None, "the sandbox fork server is not running")
        data = msgpack.packb(message, use_bin_type=True)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        async with self._send_lock:
            await self._sock.sendmsg([data], anc)

    async def spawn(self, spec: dict[str, Any], *, max_frame: int) -> Child:
        """Fork a child for ``spec`` and return it once it said ``ready``."""
        ident = next(self._ids)
        req_r, req_w = os.pipe2(os.O_CLOEXEC)
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        self._spawned[ident] = trio.Event()
        self._exit_events[ident] = trio.Event()
        try:
            await self._send(["spawn", ident, spec], (req_r, rep_w))
        finally:
            os.close(req_r)
            os.close(rep_w)
        return await self._spawned_child(ident, req_w, rep_r, max_frame)

    async def adopt(self, spec: dict[str, Any], *, max_frame: int) -> Child | None:
        """The child asked for ``spec``'s role before the engine loaded (`_headstart`), if
        it was asked with this very spec; else None (and that early child is killed)."""
        early = self._early.pop(spec["role"], None)
        if early is None:
            return None
        if early.spec != spec:
            log.debug("the early %s child had another spec: not used", spec["role"])
            os.close(early.req_w)
            os.close(early.rep_r)
            self._spawned.pop(early.ident, None)
            await self.kill(early.ident)  # the server reads this after the spawn
            return None
        return await self._spawned_child(early.ident, early.req_w, early.rep_r, max_frame)

    async def _spawned_child(self, ident: int, req_w: int, rep_r: int,
                             max_frame: int) -> Child:
        """The child ``ident`` once the server says it forked it."""
        await self._spawned[ident].wait()
        self._spawned.pop(ident, None)
        op, value = self._spawn_result.pop(ident, ("failed", "fork server stopped"))
        if op != "spawned":
            os.close(req_w)
            os.close(rep_r)
            raise ChildDied(None, f"could not start a sandboxed child: {value}")
        return Child(self, ident, value, req_w, rep_r, max_frame)

    async def kill(self, ident: int) -> None:
        """SIGKILL a child (no-op if it already ended)."""
        if not self.closed and ident not in self._exits:
            await self._send(["kill", ident])

    async def exit_code(self, ident: int) -> int | None:
        """Wait for the child's exit status; None if the fork server does not say."""
        event = self._exit_events.setdefault(ident, trio.Event())
        with trio.move_on_after(_EXIT_WAIT):
            await event.wait()
        self._exit_events.pop(ident, None)
        return self._exits.pop(ident, None)


async def _exited(proc: subprocess.Popen[bytes]) -> None:
    """Wait for ``proc`` to exit, without a thread (a pidfd, or polling without one)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or the process is reaped
        while proc.poll() is None:
            await trio.sleep(0.005)
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    proc.wait()


@asynccontextmanager
async def open_fork_server(started: StartedServer | None = None) -> AsyncIterator[ForkServer]:
    """Run a fork server for the duration of the block (``started``: one already booting)."""
    server = ForkServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server._run, started)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


class Child:
    """One sandboxed child: send requests, receive replies, kill it."""

    def __init__(
        self, server: ForkServer, ident: int, pid: int, req_w: int, rep_r: int, max_frame: int
    ) -> None:
        self.server = server
        self.ident = ident
        self.pid = pid
        self._w = trio.lowlevel.FdStream(req_w)
        self._r = trio.lowlevel.FdStream(rep_r)
        # Job code owns the reply pipe: bound what a frame decodes to, not only its bytes.
        self._decoder = FrameDecoder(max_frame, CHILD_REPLY)
        self._inbox: deque[list[Any]] = deque()
        self.returncode: int | None = None
        self.dead = False

    async def send(self, message: list[Any]) -> None:
        """Send one request; a closed pipe means the child died."""
        try:
            await self._w.send_all(pack(message))
        except (trio.BrokenResourceError, trio.ClosedResourceError, BrokenPipeError):
            raise await self._died() from None

    @property
    def replied(self) -> bool:
        """A reply is read already: :meth:`receive` returns it without waiting."""
        return bool(self._inbox)

    async def receive(self) -> list[Any]:
        """Next reply; raises ChildReported for an error frame, ChildDied at EOF."""
        while not self._inbox:
            try:
                data = await self._r.receive_some(1 << 20)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                raise await self._died()
            try:
                self._inbox.extend(self._decoder.feed(data))
            except WireError as exc:
                await self.kill()
                raise ChildProtocolError(str(exc)) from None
        message = self._inbox.popleft()
        if message[0] == "error":
            # Hostile or broken: the seq may be missing or of any type; only an int names one.
            seq = message[1] if len(message) > 1 and type(message[1]) is int else None
            info = message[2] if len(message) > 2 and isinstance(message[2], dict) else {}
            raise ChildReported(seq, {str(k): v for k, v in info.items()})
        return message

    async def _died(self) -> ChildDied:
        self.dead = True
        self.returncode = await self.server.exit_code(self.ident)
        return ChildDied(self.returncode)

    def cpu_seconds(self) -> float:
        """CPU time the child has used so far (user + system), from /proc."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    async def kill(self) -> None:
        """SIGKILL the child."""
        self.dead = True
        await self.server.kill(self.ident)

    async def aclose(self) -> None:
        """Close the pipes and make sure the process is gone."""
        self.dead = True
        with trio.CancelScope(shield=True):
            await self._w.aclose()
            await self._r.aclose()
            if self.returncode is None:
                try:
                    await self.server.kill(self.ident)
                except (ChildDied, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
