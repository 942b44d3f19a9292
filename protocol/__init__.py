"""octop2p's wire protocol, as a pure library: bytes in, events out; events in, bytes out.

No sockets, no trio, no clock, and no randomness that is not handed in. The node drives a
`Connection` per peer; see `protocol/SPEC.md` for the wire format and the handshake.

Its names load on first use (PEP 562): `import protocol` costs nothing until then, and
`from protocol import content_hash` loads the hashing, not the handshake, the messages or
their crypto. `octop2p run` needs a few of them and none of the networking.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._codes import SwarmCode as SwarmCode
    from ._compress import COMPRESSION as COMPRESSION
    from ._connection import DEFAULT_MAX_MESSAGE as DEFAULT_MAX_MESSAGE
    from ._connection import Connection as Connection
    from ._connection import ConnectionClosed as ConnectionClosed
    from ._connection import Event as Event
    from ._connection import HandshakeComplete as HandshakeComplete
    from ._connection import MessageReceived as MessageReceived
    from ._connection import Role as Role
    from ._envelope import Envelope as Envelope
    from ._envelope import EnvelopeKind as EnvelopeKind
    from ._errors import CodeError as CodeError
    from ._errors import EnvelopeError as EnvelopeError
    from ._errors import KeyFileError as KeyFileError
    from ._errors import LocalProtocolError as LocalProtocolError
    from ._errors import ProtocolError as ProtocolError
    from ._errors import RemoteProtocolError as RemoteProtocolError
    from ._handshake import SUPPORTED_VERSIONS as SUPPORTED_VERSIONS
    from ._handshake import AuthMode as AuthMode
    from ._handshake import PeerInfo as PeerInfo
    from ._handshake import Pinned as Pinned
    from ._hashes import content_hash as content_hash
    from ._identity import NodeId as NodeId
    from ._identity import NodeIdentity as NodeIdentity
    from ._identity import verify_signature as verify_signature
    from ._messages import MAX_CHUNK as MAX_CHUNK
    from ._messages import Cancel as Cancel
    from ._messages import Error as Error
    from ._messages import ErrorCode as ErrorCode
    from ._messages import EventKind as EventKind
    from ._messages import Failure as Failure
    from ._messages import Fragment as Fragment
    from ._messages import Heartbeat as Heartbeat
    from ._messages import Hello as Hello
    from ._messages import JobEvent as JobEvent
    from ._messages import JobInfo as JobInfo
    from ._messages import JobKind as JobKind
    from ._messages import JobState as JobState
    from ._messages import JobStatus as JobStatus
    from ._messages import JobSubmit as JobSubmit
    from ._messages import Message as Message
    from ._messages import PackageChunk as PackageChunk
    from ._messages import PackageRequest as PackageRequest
    from ._messages import Result as Result
    from ._messages import StatusRequest as StatusRequest
    from ._messages import Task as Task
    from ._messages import WorkRequest as WorkRequest
    from ._pake import MAX_FAILED_ATTEMPTS as MAX_FAILED_ATTEMPTS
    from ._pake import JobCode as JobCode
    from ._state import State as State

#: Each public name -> the submodule that defines it.
_WHERE = {
    "SwarmCode": "_codes",
    "COMPRESSION": "_compress",
    "DEFAULT_MAX_MESSAGE": "_connection",
    "Connection": "_connection",
    "ConnectionClosed": "_connection",
    "Event": "_connection",
    "HandshakeComplete": "_connection",
    "MessageReceived": "_connection",
    "Role": "_connection",
    "content_hash": "_hashes",
    "Envelope": "_envelope",
    "EnvelopeKind": "_envelope",
    "CodeError": "_errors",
    "EnvelopeError": "_errors",
    "KeyFileError": "_errors",
    "LocalProtocolError": "_errors",
    "ProtocolError": "_errors",
    "RemoteProtocolError": "_errors",
    "SUPPORTED_VERSIONS": "_handshake",
    "AuthMode": "_handshake",
    "PeerInfo": "_handshake",
    "Pinned": "_handshake",
    "NodeId": "_identity",
    "NodeIdentity": "_identity",
    "verify_signature": "_identity",
    "MAX_CHUNK": "_messages",
    "Cancel": "_messages",
    "Error": "_messages",
    "ErrorCode": "_messages",
    "EventKind": "_messages",
    "Failure": "_messages",
    "Fragment": "_messages",
    "Heartbeat": "_messages",
    "Hello": "_messages",
    "JobEvent": "_messages",
    "JobInfo": "_messages",
    "JobKind": "_messages",
    "JobState": "_messages",
    "JobStatus": "_messages",
    "JobSubmit": "_messages",
    "Message": "_messages",
    "PackageChunk": "_messages",
    "PackageRequest": "_messages",
    "Result": "_messages",
    "StatusRequest": "_messages",
    "Task": "_messages",
    "WorkRequest": "_messages",
    "MAX_FAILED_ATTEMPTS": "_pake",
    "JobCode": "_pake",
    "State": "_state",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'protocol' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"protocol.{where}"), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
