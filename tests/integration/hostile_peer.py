"""Helpers for a swarm member driven by hand (``nodes.member_socket``) that attacks a
real node as a malicious chief, submitter or donor would."""

from __future__ import annotations

import io
import socket
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from protocol import Connection, Message, MessageReceived


def tarball(add: Callable[[tarfile.TarFile], None]) -> bytes:
    """An uncompressed pax tarball made by ``add``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buf.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def receive(
    s: socket.socket, conn: Connection, kinds: tuple[type, ...], seconds: float
) -> Message | None:
    """The next message of one of ``kinds`` within ``seconds`` (others are dropped), or
    None if none came (or the node closed the link)."""
    deadline = time.monotonic() + seconds
    while True:
        event = conn.next_event()
        if isinstance(event, MessageReceived) and isinstance(event.message, kinds):
            return event.message
        if event is not None:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            return None
        if not data:
            return None
        conn.receive_data(data)
