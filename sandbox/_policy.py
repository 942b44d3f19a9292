"""`Policy`: the confinement one sandboxed child gets, and `SandboxError`.

A `Policy` is made on the node, sent to the fork server as msgpack (`to_dict`), and
read back there (`from_dict`) before `confine` applies it in the forked child. It names
only what differs between children: the job's folders, its limits, its thread budget,
and which layers to apply. What every child needs (Python's own files, the syscall
deny list) is added by `confine`, so a policy cannot forget it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ALL_LAYERS", "Policy", "SandboxError"]

#: Every confinement layer, in the order `confine` applies them.
LAYER_ORDER: tuple[str, ...] = ("userns", "netns", "landlock", "rlimits", "nnp", "seccomp")
ALL_LAYERS: frozenset[str] = frozenset(LAYER_ORDER)


class SandboxError(Exception):
    """The sandbox could not be set up as asked; the message says why and what to do.

    `layer` names the layer that failed ("landlock", "seccomp", ...), or is None when
    the problem is not one layer's (a malformed policy, for instance).
    """

    def __init__(self, message: str, *, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer


def _int_or_none(name: str, value: object, minimum: int) -> int | None:
    if value is None:
        return None
    return _int(name, value, minimum)


def _int(name: str, value: object, minimum: int) -> int:
    # bool is an int to Python, but `nofile=True` is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SandboxError(f"sandbox policy: {name} must be a whole number, got {value!r}")
    if value < minimum:
        raise SandboxError(f"sandbox policy: {name} must be {minimum} or more, got {value}")
    return value


def _paths(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise SandboxError(f"sandbox policy: {name} must be a list of paths, got {value!r}")
    for path in value:
        # Landlock resolves each path when the child applies it; a relative path would
        # depend on the child's working directory at that moment, so refuse it here.
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
            raise SandboxError(
                f"sandbox policy: {name} must hold absolute paths, got {path!r}"
            )
    return tuple(value)


@dataclass(frozen=True)
class Policy:
    """The confinement of one child: folders, rlimits, thread budget, layers."""

    read_paths: tuple[str, ...] = ()  # read-only: the job folder (confine adds Python's files)
    write_paths: tuple[str, ...] = ()  # read-write: results_dir, for merge/final children only
    memory_bytes: int | None = None  # RLIMIT_AS headroom above the fork server's own footprint
    cpu_seconds: int | None = None  # RLIMIT_CPU (soft; hard = soft + 1)
    fsize_bytes: int = 0  # RLIMIT_FSIZE: 0 except for merge/final children
    nofile: int = 64  # RLIMIT_NOFILE
    stack_bytes: int | None = None  # RLIMIT_STACK
    max_threads: int = 1  # 1: seccomp refuses every clone; >1: CLONE_THREAD allowed
    layers: frozenset[str] = ALL_LAYERS  # subset of ALL_LAYERS
    # Use at most this Landlock ABI (None: all the kernel has): acts as an older kernel,
    # so tests can show what the other layers hold there.
    landlock_abi: int | None = None

    def __post_init__(self) -> None:
        # Checked here, not only in from_dict, so that a bad Policy fails where it is
        # made (on the node) rather than in a child whose errors are harder to read.
        _paths("read_paths", self.read_paths)
        _paths("write_paths", self.write_paths)
        _int_or_none("memory_bytes", self.memory_bytes, 1)
        _int_or_none("cpu_seconds", self.cpu_seconds, 1)
        _int("fsize_bytes", self.fsize_bytes, 0)
        # fds 0-4 are the child's own (stdio and its two pipes); fewer than 8 would
        # leave job code unable to open even one file.
        _int("nofile", self.nofile, 8)
        _int_or_none("stack_bytes", self.stack_bytes, 64 * 1024)
        _int("max_threads", self.max_threads, 1)
        _int_or_none("landlock_abi", self.landlock_abi, 1)
        if not isinstance(self.layers, frozenset):
            raise SandboxError(f"sandbox policy: layers must be a frozenset, got {self.layers!r}")
        unknown = self.layers - ALL_LAYERS
        if unknown:
            raise SandboxError(
                f"sandbox policy: unknown layer(s) {', '.join(sorted(unknown))}; "
                f"known layers: {', '.join(LAYER_ORDER)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain lists, ints and strings, for msgpack."""
        return {
            "read_paths": list(self.read_paths),
            "write_paths": list(self.write_paths),
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": self.cpu_seconds,
            "fsize_bytes": self.fsize_bytes,
            "nofile": self.nofile,
            "stack_bytes": self.stack_bytes,
            "max_threads": self.max_threads,
            "landlock_abi": self.landlock_abi,
            # Listed in apply order so that a dumped policy reads like what happens.
            "layers": [name for name in LAYER_ORDER if name in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """A policy from `to_dict`'s output; raises `SandboxError` on anything else.

        Keys left out take their defaults, so an older node's message still reads.
        """
        if not isinstance(data, Mapping):
            raise SandboxError(f"sandbox policy: expected a map, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SandboxError(
                f"sandbox policy: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
            )
        values = dict(data)
        for key in ("read_paths", "write_paths"):
            if key in values:
                values[key] = _paths(key, values[key])
        if "layers" in values:
            layers = values["layers"]
            if isinstance(layers, str) or not isinstance(layers, list | tuple | frozenset):
                raise SandboxError(f"sandbox policy: layers must be a list, got {layers!r}")
            if not all(isinstance(name, str) for name in layers):
                raise SandboxError(f"sandbox policy: layers must be names, got {layers!r}")
            values["layers"] = frozenset(layers)
        return cls(**values)
