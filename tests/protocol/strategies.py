"""Hypothesis strategies for every message, derived from the field kinds themselves."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from protocol import Envelope, EnvelopeKind, Fragment, JobSubmit, Message, Result
from protocol._messages import message_types
from protocol._schema import (
    INLINE_BLOB,
    Blob,
    Choice,
    Flag,
    Kind,
    Maybe,
    Nested,
    OptionMap,
    Raw,
    Real,
    Seq,
    Text,
    UInt,
)

# The envelope each message requires (its _validate rule): kind and ref length.
_ENVELOPE_RULES = {
    Fragment: (EnvelopeKind.FRAGMENT, 32),
    Result: (EnvelopeKind.RESULT, 32),
    JobSubmit: (EnvelopeKind.PACKAGE, 0),
}

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


def for_kind(kind: Kind, envelope_rule: tuple[EnvelopeKind, int] | None = None) -> Any:
    """A strategy for valid values of `kind`."""
    if isinstance(kind, UInt):
        edges = st.sampled_from([kind.low, kind.high])
        return st.one_of(edges, st.integers(kind.low, kind.high))
    if isinstance(kind, Flag):
        return st.booleans()
    if isinstance(kind, Real):
        return st.floats(kind.low, kind.high, allow_nan=False, allow_infinity=False)
    if isinstance(kind, Text):
        return st.text(max_size=min(kind.max_len, 40))
    if isinstance(kind, Raw):
        if kind.size is not None:
            return st.binary(min_size=kind.size, max_size=kind.size)
        return st.binary(max_size=kind.max_len)
    if isinstance(kind, Blob):
        # Around the inline limit too: small blobs ride in the head, large ones do not.
        large = st.integers(INLINE_BLOB - 2, INLINE_BLOB + 2).map(lambda n: b"\xab" * n)
        return st.one_of(st.binary(max_size=64), large)
    if isinstance(kind, Choice):
        return st.sampled_from(list(kind.enum))
    if isinstance(kind, Maybe):
        return st.one_of(st.none(), for_kind(kind.kind, envelope_rule))
    if isinstance(kind, Seq):
        return st.lists(for_kind(kind.kind), max_size=min(kind.max_items, 4)).map(tuple)
    if isinstance(kind, OptionMap):
        value = st.one_of(
            _scalar,
            st.lists(_scalar, max_size=3),
            st.dictionaries(st.text(max_size=10), _scalar, max_size=3),
        )
        return st.dictionaries(st.text(max_size=10), value, max_size=4)
    if isinstance(kind, Nested):
        return for_struct(kind.cls, envelope_rule)
    raise AssertionError(f"no strategy for {kind!r}")


def for_struct(cls: type, envelope_rule: tuple[EnvelopeKind, int] | None = None) -> Any:
    fields = {name: for_kind(kind, envelope_rule) for name, kind in cls._SCHEMA}  # type: ignore[attr-defined]
    if cls is Envelope and envelope_rule is not None:
        kind, ref_size = envelope_rule
        fields["kind"] = st.just(kind)
        fields["ref"] = st.binary(min_size=ref_size, max_size=ref_size)
    return st.builds(cls, **fields)


def for_message(cls: type[Message]) -> Any:
    if cls is Result:
        # A failed fragment's result carries no payload (Result._validate).
        return st.builds(
            _result,
            for_struct(Envelope, _ENVELOPE_RULES[Result]),
            for_kind(dict(Result._SCHEMA)["out"]),
            for_kind(dict(Result._SCHEMA)["cpu_seconds"]),
            for_kind(dict(Result._SCHEMA)["failure"]),
        )
    return for_struct(cls, _ENVELOPE_RULES.get(cls))  # type: ignore[arg-type]


def _result(envelope: Envelope, out: str, cpu: float, failure: Any) -> Result:
    if failure is not None:
        envelope = dataclasses.replace(envelope, payload=b"")
    return Result(envelope, out, cpu, failure)


any_message = st.sampled_from(message_types()).flatmap(for_message)
