"""Field kinds: the type and bound of every field of every message, checked both ways.

A message (or a struct nested in one, such as an `Envelope`) is a frozen dataclass whose
fields each carry a `Kind` in their metadata (`seq: int = spec(UInt(U64))`). The kind
checks a value when the dataclass is built by this side (a bad value is a
`LocalProtocolError`) and when it is decoded from the peer's bytes (a bad value is a
`RemoteProtocolError`), and turns values to and from what msgpack carries.

One field per message may be a `Blob`: a byte string that, once larger than
`INLINE_BLOB`, travels in its own record after the message head, so that neither side
copies it into or out of msgpack.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from enum import Enum
from typing import Any, ClassVar, TypeVar

from ._errors import LocalProtocolError

U8 = 2**8 - 1
U16 = 2**16 - 1
U32 = 2**32 - 1
U64 = 2**64 - 1
_I64_MIN = -(2**63)


class Invalid(Exception):
    """A value does not fit its kind. `path` names the field, for the error message."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def at(self, name: str) -> Invalid:
        """Prefix the path with the field `name` on the way up."""
        self.path.insert(0, name)
        return self

    def __str__(self) -> str:
        return ".".join(self.path) + ": " + self.problem if self.path else self.problem


class Kind:
    """How one field is checked, encoded for msgpack, and decoded from it.

    For the simple kinds the Python value is what msgpack carries, so `decode` does the
    checking and `check` reuses it; the others override both.
    """

    def check(self, value: Any) -> None:
        """Raise `Invalid` unless `value` is a valid Python value of this kind."""
        self.decode(value, None)

    def encode(self, value: Any, blobs: list[bytes]) -> Any:
        """The msgpack form of a checked value (a blob is appended to `blobs`)."""
        return value

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        """The Python value of what msgpack produced, checked; raise `Invalid` otherwise."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short description for SPEC.md."""
        raise NotImplementedError


def _encodable(text: str) -> None:
    # msgpack carries UTF-8: a lone surrogate would fail only when sending. Text decoded
    # from the wire is always encodable, so only locally built values are checked.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("text is not valid Unicode (it holds a lone surrogate)") from None


@dataclasses.dataclass(frozen=True)
class UInt(Kind):
    """An integer in [low, high] (bool is not an integer here)."""

    high: int
    low: int = 0

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        # int subclasses such as IntEnum members are welcome; bool is not a number here.
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise Invalid(f"expected an integer, got {type(raw).__name__}")
        if not self.low <= raw <= self.high:
            raise Invalid(f"{raw} is outside [{self.low}, {self.high}]")
        return raw

    def describe(self) -> str:
        names = {U8: "u8", U16: "u16", U32: "u32", U64: "u64"}
        if self.low == 0 and self.high in names:
            return names[self.high]
        return f"int {self.low}..{self.high}"


@dataclasses.dataclass(frozen=True)
class Flag(Kind):
    """True or False."""

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is not bool:
            raise Invalid(f"expected a boolean, got {type(raw).__name__}")
        return raw

    def describe(self) -> str:
        return "bool"


@dataclasses.dataclass(frozen=True)
class Real(Kind):
    """A finite float in [low, high]."""

    low: float
    high: float

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is not float:
            raise Invalid(f"expected a float, got {type(raw).__name__}")
        if not (math.isfinite(raw) and self.low <= raw <= self.high):
            raise Invalid(f"{raw} is outside [{self.low}, {self.high}]")
        return raw

    def describe(self) -> str:
        return f"float {self.low:g}..{self.high:g}"


@dataclasses.dataclass(frozen=True)
class Text(Kind):
    """A str of at most `max_len` characters."""

    max_len: int

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is not str:
            raise Invalid(f"expected text, got {type(raw).__name__}")
        if len(raw) > self.max_len:
            raise Invalid(f"text of {len(raw)} characters exceeds {self.max_len}")
        return raw

    def check(self, value: Any) -> None:
        self.decode(value, None)
        _encodable(value)

    def describe(self) -> str:
        return f"str ≤{self.max_len}"


@dataclasses.dataclass(frozen=True)
class Raw(Kind):
    """Inline bytes: exactly `size` long when given, else at most `max_len`."""

    size: int | None = None
    max_len: int = 0

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is not bytes:
            raise Invalid(f"expected bytes, got {type(raw).__name__}")
        if self.size is not None and len(raw) != self.size:
            raise Invalid(f"expected {self.size} bytes, got {len(raw)}")
        if self.size is None and len(raw) > self.max_len:
            raise Invalid(f"{len(raw)} bytes exceed {self.max_len}")
        return raw

    def describe(self) -> str:
        return f"bytes[{self.size}]" if self.size is not None else f"bytes ≤{self.max_len}"


#: Blobs up to this size travel inside the head as msgpack bin; larger ones get a record
#: of their own. Copying a small blob costs less than a second record; copying a large
#: one costs more.
INLINE_BLOB = 128 * 1024


@dataclasses.dataclass(frozen=True)
class Blob(Kind):
    """Bytes of at most `max_len`: inline when small, else in their own record.

    A blob of at most `INLINE_BLOB` bytes is a bin in the head. A larger one is its length
    (an integer) in the head, and the bytes are the next record, so that neither side
    copies them through msgpack. A message holds at most one blob.
    """

    max_len: int

    def check(self, value: Any) -> None:
        if type(value) is not bytes:
            raise Invalid(f"expected bytes, got {type(value).__name__}")
        if len(value) > self.max_len:
            raise Invalid(f"{len(value)} bytes exceed {self.max_len}")

    def encode(self, value: Any, blobs: list[bytes]) -> Any:
        if len(value) <= INLINE_BLOB:
            return value
        blobs.append(value)
        return len(value)

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is bytes:
            if blob is not None or len(raw) > min(INLINE_BLOB, self.max_len):
                raise Invalid(f"an inline blob of {len(raw)} bytes is not allowed")
            return raw
        # (That a small blob is inline is the head's rule, checked by `decode_head`.)
        if blob is None or raw != len(blob):
            raise Invalid("the blob record does not match the length in the head")
        return blob

    def describe(self) -> str:
        return (
            f"blob ≤{self.max_len}: bin if ≤{INLINE_BLOB}, else its length (int) and "
            "the bytes in the next record"
        )


@dataclasses.dataclass(frozen=True)
class Choice(Kind):
    """One value of a str-valued Enum, carried as its str value."""

    enum: type[Enum]

    def check(self, value: Any) -> None:
        if not isinstance(value, self.enum):
            raise Invalid(f"expected a {self.enum.__name__}, got {value!r}")

    def encode(self, value: Any, blobs: list[bytes]) -> Any:
        return value.value

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is not type(next(iter(self.enum)).value):
            raise Invalid(f"expected a {self.enum.__name__} value, got {type(raw).__name__}")
        try:
            return self.enum(raw)
        except ValueError:
            raise Invalid(f"{raw!r} is not a {self.enum.__name__}") from None

    def describe(self) -> str:
        values = [
            f"{member.value}={member.name}" if isinstance(member.value, int)
            else repr(member.value)
            for member in self.enum
        ]
        return "one of " + ", ".join(values)


@dataclasses.dataclass(frozen=True)
class Maybe(Kind):
    """None or a value of `kind`."""

    kind: Kind

    def check(self, value: Any) -> None:
        if value is not None:
            self.kind.check(value)

    def encode(self, value: Any, blobs: list[bytes]) -> Any:
        return None if value is None else self.kind.encode(value, blobs)

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        return None if raw is None else self.kind.decode(raw, blob)

    def describe(self) -> str:
        return self.kind.describe() + " or nil"


@dataclasses.dataclass(frozen=True)
class Seq(Kind):
    """A tuple of at most `max_items` values of `kind` (an array on the wire)."""

    kind: Kind
    max_items: int

    def check(self, value: Any) -> None:
        if type(value) is not tuple:
            raise Invalid(f"expected a tuple, got {type(value).__name__}")
        self._check_items(value, self.kind.check)

    def _check_items(self, items: Any, check: Callable[[Any], object]) -> None:
        if len(items) > self.max_items:
            raise Invalid(f"{len(items)} items exceed {self.max_items}")
        for i, item in enumerate(items):
            try:
                check(item)
            except Invalid as e:
                raise e.at(f"[{i}]") from None

    def encode(self, value: Any, blobs: list[bytes]) -> Any:
        return [self.kind.encode(item, blobs) for item in value]

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is not list:
            raise Invalid(f"expected an array, got {type(raw).__name__}")
        out: list[Any] = []
        self._check_items(raw, lambda item: out.append(self.kind.decode(item, None)))
        return tuple(out)

    def describe(self) -> str:
        return f"array ≤{self.max_items} of ({self.kind.describe()})"


_Scalar = (type(None), bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class OptionMap(Kind):
    """Job options: str keys to scalars, lists of scalars or one level of str -> scalar.

    This is what job.toml holds (`[limits]` is the one nested table). Lists stay lists.
    """

    max_entries: int = 64
    key_len: int = 64
    text_len: int = 4096
    max_items: int = 256

    def _scalar(self, value: Any) -> None:
        kind = type(value)
        if kind not in _Scalar:
            raise Invalid(f"{kind.__name__} is not an option value")
        if kind is int and not _I64_MIN <= value <= U64:
            raise Invalid(f"{value} does not fit in 64 bits")
        if kind is float and not math.isfinite(value):
            raise Invalid(f"{value} is not finite")
        if kind is str:
            if len(value) > self.text_len:
                raise Invalid(f"text of {len(value)} characters exceeds {self.text_len}")
            _encodable(value)

    def _table(self, value: Any, nested: bool) -> None:
        if type(value) is not dict:
            raise Invalid(f"expected a map, got {type(value).__name__}")
        if len(value) > self.max_entries:
            raise Invalid(f"{len(value)} entries exceed {self.max_entries}")
        for key, item in value.items():
            if type(key) is not str or len(key) > self.key_len:
                raise Invalid(f"option name {key!r} is not text of ≤{self.key_len} characters")
            _encodable(key)
            try:
                if nested and type(item) is dict:
                    self._table(item, nested=False)
                elif nested and type(item) is list:
                    if len(item) > self.max_items:
                        raise Invalid(f"{len(item)} items exceed {self.max_items}")
                    for element in item:
                        self._scalar(element)
                else:
                    self._scalar(item)
            except Invalid as e:
                raise e.at(key) from None

    def check(self, value: Any) -> None:
        self._table(value, nested=True)

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        self._table(raw, nested=True)
        return raw

    def describe(self) -> str:
        return f"map ≤{self.max_entries} of str → scalar, [scalar] or {{str → scalar}}"


def spec(kind: Kind, *, optional: bool = False, **kwargs: Any) -> Any:
    """A dataclass field whose values are of `kind`.

    ``optional``: a field added to a message later, at its end, with a default; a peer
    that does not know it may leave it out, and the receiver takes the default.
    """
    return dataclasses.field(metadata={"kind": kind, "optional": optional}, **kwargs)


S = TypeVar("S", bound="Struct")


class Struct:
    """Base of the frozen dataclasses whose fields carry kinds; validates on construction."""

    _SCHEMA: ClassVar[tuple[tuple[str, Kind], ...]] = ()
    # The same, unzipped: decoding is on every message's path, so it is kept lean.
    _NAMES: ClassVar[tuple[str, ...]] = ()
    _DECODERS: ClassVar[tuple[Callable[[Any, bytes | None], Any], ...]] = ()
    _ENCODERS: ClassVar[tuple[Callable[[Any, list[bytes]], Any], ...]] = ()
    _REQUIRED: ClassVar[int] = 0  # fields before the first optional one (see `spec`)
    _DEFAULTS: ClassVar[tuple[Any, ...]] = ()  # of the optional fields, in order

    def __post_init__(self) -> None:
        where = type(self).__name__
        for name, kind in self._SCHEMA:
            try:
                kind.check(getattr(self, name))
            except Invalid as e:
                raise LocalProtocolError(f"{where}.{e.at(name)}") from None
        try:
            self._validate()
        except Invalid as e:
            raise LocalProtocolError(f"{where}: {e}") from None

    def _encode_fields(self, blobs: list[bytes]) -> list[Any]:
        values = self.__dict__
        return [
            encode(values[name], blobs)
            for name, encode in zip(self._NAMES, self._ENCODERS)  # noqa: B905 - same length
        ]

    @classmethod
    def _decode_fields(cls: type[S], raw: list[Any], offset: int, blob: bytes | None) -> S:
        """Build from raw[offset:], already known to have one item per field."""
        # Decoding checks every value, so the frozen dataclass's __init__ (which would
        # check them all again) is bypassed; this runs for every message received.
        obj = object.__new__(cls)
        fields = obj.__dict__
        name = ""
        try:
            # Callers check the lengths match; zip(strict=True) would cost a third more.
            for name, decode, item in zip(cls._NAMES, cls._DECODERS, raw[offset:]):  # noqa: B905
                fields[name] = decode(item, blob)
        except Invalid as e:
            raise e.at(name) from None
        given = len(raw) - offset
        if given < len(cls._NAMES):  # optional fields the peer left out
            for name, default in zip(cls._NAMES[given:], cls._DEFAULTS[given - cls._REQUIRED:],
                                     strict=True):
                fields[name] = default
        obj._validate()
        return obj

    def _validate(self) -> None:
        """Rules across fields, checked after decoding; raise `Invalid`. None by default."""


def struct(cls: type[S]) -> type[S]:
    """Record the kinds of a dataclass's fields (apply above `@dataclass`)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    cls._SCHEMA = tuple((f.name, f.metadata["kind"]) for f in fields)
    cls._NAMES = tuple(name for name, _ in cls._SCHEMA)
    cls._DECODERS = tuple(kind.decode for _, kind in cls._SCHEMA)
    cls._ENCODERS = tuple(kind.encode for _, kind in cls._SCHEMA)
    optional = [f.metadata.get("optional", False) for f in fields]
    cls._REQUIRED = optional.index(True) if True in optional else len(fields)
    if not all(optional[cls._REQUIRED:]):
        raise TypeError(f"{cls.__name__}: optional fields must come last")
    cls._DEFAULTS = tuple(f.default for f in fields[cls._REQUIRED:])
    return cls


@dataclasses.dataclass(frozen=True)
class Nested(Kind):
    """A struct nested in a message, carried as an array of its fields."""

    cls: type[Struct]

    def check(self, value: Any) -> None:
        if type(value) is not self.cls:
            raise Invalid(f"expected a {self.cls.__name__}, got {type(value).__name__}")

    def encode(self, value: Any, blobs: list[bytes]) -> Any:
        return value._encode_fields(blobs)

    def decode(self, raw: Any, blob: bytes | None) -> Any:
        if type(raw) is not list or len(raw) != len(self.cls._SCHEMA):
            raise Invalid(f"expected an array of {len(self.cls._SCHEMA)} items")
        return self.cls._decode_fields(raw, 0, blob)

    def describe(self) -> str:
        return self.cls.__name__
