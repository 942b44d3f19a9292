"""octop2p's wire protocol, as a pure library: bytes in, events out; events in, bytes out.

No sockets, no trio, no clock, and no randomness that is not handed in. The node drives a
`Connection` per peer; see `protocol/SPEC.md` for the wire format and the handshake.
"""

from ._codes import SwarmCode as SwarmCode
from ._compress import COMPRESSION as COMPRESSION
from ._connection import DEFAULT_MAX_MESSAGE as DEFAULT_MAX_MESSAGE
from ._connection import Connection as Connection
from ._connection import ConnectionClosed as ConnectionClosed
from ._connection import Event as Event
from ._connection import HandshakeComplete as HandshakeComplete
from ._connection import MessageReceived as MessageReceived
from ._connection import Role as Role
from ._crypto import content_hash as content_hash
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
