"""Which connections a node lets into its handshake, and how it counts job-code guesses.

An accepted connection is unauthenticated until its handshake completes: anyone can
open one. So a node keeps only a few of them at once (``MAX_HANDSHAKES``, and
``MAX_HANDSHAKES_PER_HOST`` from one address) and closes the oldest to make room: an
outsider cannot hold its file descriptors, and a member arriving after a flood still
gets through.

With the one-time job code of ``octop2p server``, each handshake lets the client test
one guess of the code, once the server's message 2 reaches it. A guess is counted then,
not when its connection ends; at most ``MAX_CODE_HANDSHAKES`` run at once, and none
starts once failures and guesses under way reach ``MAX_FAILED_ATTEMPTS``. The code is
retired after that many failures. See docs/security.md, "Outsiders and hostile members".
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from octop2p.net._peer import LinkClosed, PeerLink
from protocol import MAX_FAILED_ATTEMPTS, AuthMode, JobCode, Role, State

log = logging.getLogger(__name__)

MAX_HANDSHAKES = 64
MAX_HANDSHAKES_PER_HOST = 8
#: Job-code handshakes under way at once; also the threads their SPAKE2 steps may use.
MAX_CODE_HANDSHAKES = 4


class AdmissionNode(Protocol):
    """What admission uses of its node (a :class:`~octop2p.net._node.Node`)."""

    #: The one-time code of ``octop2p server`` (None: none, or retired here).
    job_code: JobCode | None

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish a node event ("job_code_retired")."""


class Admission:
    """The handshakes one node has under way (see the module docstring)."""

    def __init__(self, node: AdmissionNode) -> None:
        self.node = node
        self.failures = 0  #: wrong job codes so far
        self._handshaking: dict[PeerLink, str] = {}  # link -> host, oldest first
        self._guesses: set[PeerLink] = set()  # job-code handshakes past message 2
        self._threads: trio.CapacityLimiter | None = None

    @property
    def threads(self) -> trio.CapacityLimiter:
        """The threads handshake steps run in (made inside the node's trio run)."""
        if self._threads is None:
            self._threads = trio.CapacityLimiter(MAX_CODE_HANDSHAKES)
        return self._threads

    def job_code(self) -> JobCode | None:
        """The code a new connection may be admitted with: None past the limits, so that
        a job-code peer is refused at message 1, before SPAKE2 runs."""
        return self.node.job_code if self._room() else None

    def _room(self) -> bool:
        under_way = len(self._guesses)
        return (
            self.node.job_code is not None
            and under_way < MAX_CODE_HANDSHAKES
            and self.failures + under_way < MAX_FAILED_ATTEMPTS
        )

    async def begin(self, link: PeerLink, host: str) -> None:
        """Register an accepted connection, closing the oldest one if there are too many
        from ``host``, or too many in all."""
        same = [other for other, h in self._handshaking.items() if h == host]
        victim = None
        if len(same) >= MAX_HANDSHAKES_PER_HOST:
            victim = same[0]
        elif len(self._handshaking) >= MAX_HANDSHAKES:
            victim = next(iter(self._handshaking))
        if victim is not None:
            del self._handshaking[victim]
            log.debug("closing the handshake of %s: too many at once", victim.address)
            await victim.aclose("too many handshakes")
        self._handshaking[link] = host

    def gate(self, link: PeerLink) -> None:
        """Runs before each handshake reply leaves: counts a job-code guess as message 2
        goes out, or refuses it (LinkClosed) when there is no room."""
        conn = link.conn
        if (
            conn.role is not Role.RESPONDER
            or conn.auth_mode is not AuthMode.JOB_CODE
            or conn.state is not State.AWAIT_MSG3
            or link in self._guesses
        ):
            return
        if not self._room():
            raise LinkClosed("too many job-code handshakes at once, or the code is retired")
        self._guesses.add(link)

    def end(self, link: PeerLink) -> None:
        """The handshake of ``link`` is over, done or failed."""
        self._handshaking.pop(link, None)
        if link not in self._guesses:
            return
        self._guesses.discard(link)
        if link.handshake is not None:
            return  # the right code: not a failed guess
        self.failures += 1
        node = self.node
        if self.failures >= MAX_FAILED_ATTEMPTS and node.job_code is not None:
            # Each failed handshake tested one guess: retire the code before an attacker
            # could have tried enough of them.
            log.warning(
                "%d wrong job codes: the code is retired; no client can join with it any more",
                self.failures,
            )
            node.job_code = None
            node.emit("job_code_retired", failures=self.failures)
