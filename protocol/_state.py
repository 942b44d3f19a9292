"""The connection's state machine: every state, every input, every transition, one table.

Everything that moves a `Connection` from one state to another is in `TRANSITIONS`; the
connection looks its next state up here and treats a missing entry as misuse (for what
this side does) or as a protocol violation (for what the peer sends). `render_mermaid()`
draws the table; SPEC.md holds its output and a test keeps the two equal. Run
`python -m protocol._state` to print it.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """Where a connection is."""

    # Members are singletons compared by identity, so identity hashing is consistent and
    # spares a Python-level hash on every table lookup (two per message).
    __hash__ = object.__hash__

    START = "start"  #: nothing exchanged yet
    AWAIT_MSG2 = "await_msg2"  #: initiator: message 1 sent
    AWAIT_MSG3 = "await_msg3"  #: responder: message 2 sent
    OPEN = "open"  #: handshake done; messages flow both ways
    LOCAL_CLOSED = "local_closed"  #: we sent our final record; the peer may still send
    REMOTE_CLOSED = "remote_closed"  #: the peer sent its final record; we may still send
    CLOSED = "closed"  #: both directions are done (or we gave up before the handshake)
    FAILED = "failed"  #: the peer broke the protocol; nothing more is read or sent


class Input(Enum):
    """What happens to a connection: something this side does or something it receives."""

    __hash__ = object.__hash__  # as for State

    SEND_MSG1 = "send msg1"
    RECV_MSG1 = "recv msg1 / send msg2"
    RECV_MSG2 = "recv msg2 / send msg3"
    RECV_MSG3 = "recv msg3"
    SEND_MESSAGE = "send message"
    RECV_MESSAGE = "recv message"
    CLOSE = "close"
    RECV_FINAL = "recv final"
    RECV_EOF = "recv eof"
    PROTOCOL_ERROR = "protocol error"


_LIVE = (
    State.START,
    State.AWAIT_MSG2,
    State.AWAIT_MSG3,
    State.OPEN,
    State.LOCAL_CLOSED,
    State.REMOTE_CLOSED,
)

#: (state, input) -> next state. Anything not listed is not allowed.
TRANSITIONS: dict[tuple[State, Input], State] = {
    # The handshake. The initiator starts by sending message 1; the responder answers it.
    (State.START, Input.SEND_MSG1): State.AWAIT_MSG2,
    (State.START, Input.RECV_MSG1): State.AWAIT_MSG3,
    (State.AWAIT_MSG2, Input.RECV_MSG2): State.OPEN,
    (State.AWAIT_MSG3, Input.RECV_MSG3): State.OPEN,
    # Giving up during the handshake sends nothing: there is no channel to close yet.
    (State.START, Input.CLOSE): State.CLOSED,
    (State.AWAIT_MSG2, Input.CLOSE): State.CLOSED,
    (State.AWAIT_MSG3, Input.CLOSE): State.CLOSED,
    # The channel: each direction closes on its own with an authenticated final record.
    (State.OPEN, Input.SEND_MESSAGE): State.OPEN,
    (State.OPEN, Input.RECV_MESSAGE): State.OPEN,
    (State.OPEN, Input.CLOSE): State.LOCAL_CLOSED,
    (State.OPEN, Input.RECV_FINAL): State.REMOTE_CLOSED,
    (State.OPEN, Input.RECV_EOF): State.CLOSED,
    (State.LOCAL_CLOSED, Input.RECV_MESSAGE): State.LOCAL_CLOSED,
    (State.LOCAL_CLOSED, Input.RECV_FINAL): State.CLOSED,
    (State.LOCAL_CLOSED, Input.RECV_EOF): State.CLOSED,
    (State.REMOTE_CLOSED, Input.SEND_MESSAGE): State.REMOTE_CLOSED,
    (State.REMOTE_CLOSED, Input.CLOSE): State.CLOSED,
    (State.REMOTE_CLOSED, Input.RECV_EOF): State.REMOTE_CLOSED,
    # Whatever the peer breaks, wherever: the connection is over.
    **{(state, Input.PROTOCOL_ERROR): State.FAILED for state in _LIVE},
}


def next_state(state: State, event: Input) -> State | None:
    """The state after `event` in `state`, or None if the table does not allow it."""
    return TRANSITIONS.get((state, event))


def render_mermaid() -> str:
    """The transition table as a mermaid state diagram (pasted into SPEC.md)."""
    lines = ["stateDiagram-v2", "    [*] --> START"]
    for (source, event), target in TRANSITIONS.items():
        lines.append(f"    {source.name} --> {target.name}: {event.value}")
    lines += ["    CLOSED --> [*]", "    FAILED --> [*]"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_mermaid(), end="")
