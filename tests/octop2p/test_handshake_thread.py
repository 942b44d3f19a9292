"""The job-code handshake's SPAKE2 steps run in a worker thread, not on the event loop:
pure-Python SPAKE2 for every guess an outsider sends would otherwise stall the node."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from octop2p.net._peer import PeerLink
from protocol import Connection, JobCode, NodeIdentity, Role, _pake


async def test_spake2_of_a_job_code_handshake_runs_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_loop: list[bool] = []
    real = _pake.PakeExchange.finish

    def finish(self: _pake.PakeExchange, message: bytes) -> bytes:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return real(self, message)

    monkeypatch.setattr(_pake.PakeExchange, "finish", finish)
    code = JobCode.generate()
    near, far = trio.testing.memory_stream_pair()
    server = PeerLink(far, Connection(Role.RESPONDER, NodeIdentity.generate(), job_code=code),
                      "client")
    client = PeerLink(near, Connection(Role.INITIATOR, NodeIdentity.generate(), job_code=code),
                      "server")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.open)
            await client.open()
    assert on_loop == [False, False]  # the server's step, then the client's
