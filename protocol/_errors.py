"""The errors of the protocol package: one base, then who is at fault.

Modelled on h11: `LocalProtocolError` means this side misused the library (a bug in the
caller); `RemoteProtocolError` means the peer sent something the protocol forbids. Both
derive from `ProtocolError`, so a caller can catch everything this package raises at once.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the protocol package raises."""


class LocalProtocolError(ProtocolError):
    """This side used the protocol wrongly: a bug in the caller, not the peer's fault.

    Examples: sending a message before the handshake is complete, building a message whose
    field breaks its bound, handing in a key of the wrong length.
    """


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection it came from must be closed.

    `reason` is one line, fit for a log entry next to the peer's address or id. It never
    contains secret material.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EnvelopeError(RemoteProtocolError):
    """A signed envelope failed verification: wrong signature, author, job or sequence.

    A subclass of `RemoteProtocolError` because an envelope always comes from someone
    else, over a channel or out of a store that someone else filled.
    """


class CodeError(ProtocolError, ValueError):
    """A node id, join code or job code typed or pasted by a person is not valid.

    The message says what is wrong (length, a typo caught by a check character) so that the
    user can fix the input. Also a `ValueError`, as a parse failure usually is.
    """


class KeyFileError(ProtocolError, ValueError):
    """Stored identity bytes are damaged or not an octop2p node key.

    The node should refuse to start rather than make a new identity over a damaged one:
    peers have pinned the old key.
    """
