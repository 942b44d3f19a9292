"""The control socket: the CLI and the GUI talk to a running node through it.

A Unix socket in the node's home, mode 0600, so only its owner can use it. Each
connection carries one request (``{"cmd": ..., "args": {...}}``) and its reply
(``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ..., "exit_code": ...}``);
the ``events`` command instead streams node events until the client hangs up. Frames
are length-prefixed msgpack, as on the sandbox pipes.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from octop2p.api import NodeAPI
from octop2p.errors import JobFailed, JobRefused, NoNodeError, OctoError, error_for_code
from sandbox._wire import FrameDecoder, WireError, pack

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20
CONTROL_BACKLOG = 512
#: How long a client keeps trying a node whose control socket is busy.
CONNECT_SECONDS = 10.0
MAX_REPLY = (1 << 31) - 1


async def serve(api: NodeAPI, path: Path, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the node API on a Unix socket at ``path`` until cancelled."""
    if path.exists() or path.is_symlink():
        path.unlink()  # a stale socket from a node that died; the home lock says we own it
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    # Many CLI commands may connect at once (a script submitting jobs in parallel): a
    # full backlog refuses them, and clients then retry (see ControlClient._send).
    sock.listen(CONTROL_BACKLOG)
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(
                functools.partial(_handle, api), [listener], handler_nursery=nursery
            )
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def _read_one(stream: trio.abc.Stream, limit: int) -> Any:
    decoder = FrameDecoder(limit)
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        messages = decoder.feed(bytes(data))
        if messages:
            return messages[0]


async def _handle(api: NodeAPI, stream: trio.abc.Stream) -> None:
    async with stream:
        try:
            request = await _read_one(stream, MAX_REQUEST)
        except (EOFError, WireError, trio.BrokenResourceError):
            return
        if len(request) != 3 or request[0] != "call" or not isinstance(request[2], dict):
            await stream.send_all(pack(["reply", {"ok": False, "error": "malformed request",
                                                  "exit_code": 2}]))
            return
        cmd, args = request[1], {str(k): v for k, v in request[2].items()}
        if cmd == "events":
            try:
                async for event in api.events():
                    await stream.send_all(pack(["event", event]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return
        try:
            reply = {"ok": True, "result": await api.call(cmd, **args)}
        except OctoError as exc:
            reply = {"ok": False, "error": str(exc), "exit_code": exc.exit_code,
                     "kind": type(exc).__name__, **_details(exc)}
        except TypeError as exc:
            reply = {"ok": False, "error": f"bad arguments for {cmd}: {exc}", "exit_code": 2}
        except Exception as exc:  # noqa: BLE001 - a failed command must not stop the node
            log.exception("control command %s failed", cmd)
            reply = {"ok": False, "error": f"{cmd} failed inside the node: {exc!r}",
                     "exit_code": 1}
        try:
            await stream.send_all(pack(["reply", reply]))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _details(exc: OctoError) -> dict[str, Any]:
    out = {}
    for key in ("rule", "file", "line", "detail", "traceback", "message"):
        value = getattr(exc, key, None)
        if value is not None:
            out[key] = value
    return out


def _rebuild(reply: dict[str, Any]) -> OctoError:
    """The error the node raised, as an exception on this side of the socket."""
    kind = reply.get("kind")
    if kind == "JobRefused":
        return JobRefused(reply.get("rule", ""), reply.get("file"), reply.get("line"),
                          reply.get("detail", reply.get("error", "")))
    if kind == "JobFailed":
        return JobFailed(reply.get("message", reply["error"]), reply.get("traceback", ""),
                         reply.get("rule"), reply.get("file"), reply.get("line"))
    # Keep the node's exit code (69: no peer reachable, 2: usage), not a generic 1.
    return error_for_code(reply["error"], int(reply.get("exit_code") or 1))


class ControlClient:
    """The node API of a node running in another process, through its control socket."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    async def connect(cls, path: Path) -> ControlClient:
        """Check that a node answers on ``path``; raises NoNodeError if none does."""
        client = cls(path)
        try:
            with trio.fail_after(5):
                await client.call("info")
        except (OSError, trio.TooSlowError, EOFError) as exc:
            raise NoNodeError(f"no node answers on {path} ({exc}); start one with "
                              "`octop2p node`") from None
        return client

    async def _send(self, request: bytes) -> trio.SocketStream:
        """A stream that took ``request``. A node whose backlog is full refuses the
        connection (or trio hands back a socket that never connected): try again for a
        while, since the request has not reached the node and cannot have run."""
        delay = 0.01
        deadline = trio.current_time() + CONNECT_SECONDS
        while True:
            try:
                stream = await trio.open_unix_socket(str(self.path))
            except FileNotFoundError as exc:
                raise NoNodeError(f"no node runs in this home ({exc.strerror}); start one "
                                  "with `octop2p node`") from None
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED) or \
                        trio.current_time() > deadline:
                    raise NoNodeError(f"no node answers in this home ({exc.strerror}); "
                                      "start one with `octop2p node`") from None
                await trio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            try:
                await stream.send_all(request)
                return stream
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.aclose()
                if trio.current_time() > deadline:
                    raise NoNodeError("the node's control socket refused the connection; "
                                      "it may be overloaded") from None
                await trio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def call(self, cmd: str, **args: Any) -> Any:
        """Run a command on the node and return its result (or raise its error)."""
        stream = await self._send(pack(["call", cmd, args]))
        async with stream:
            try:
                message = await _read_one(stream, MAX_REPLY)
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                raise NoNodeError("the node closed the control connection") from None
        reply = message[1]
        if not reply.get("ok"):
            raise _rebuild(reply)
        return reply["result"]

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Node events from now on."""
        stream = await self._send(pack(["call", "events", {}]))
        async with stream:
            decoder = FrameDecoder(MAX_REQUEST)
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for message in decoder.feed(data):
                    yield message[1]
