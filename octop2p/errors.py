"""Errors that reach the user: one base class, each subclass with its exit code.

As in borg, the class docstring is the user-facing description of the kind of error
(`OctoError.description()`), and each instance carries the specific message. The CLI
prints `str(exc)` and exits with `exc.exit_code` (README, "Exit codes"; docs/jobs.md).
"""

from __future__ import annotations

import inspect
from typing import ClassVar

__all__ = [
    "Interrupted",
    "JobFailed",
    "JobRefused",
    "NoNodeError",
    "OctoError",
    "UsageError",
    "error_for_code",
]


def _located(file: str | None, line: int | None, text: str) -> str:
    """Prefix `text` with `file:line: `, or `file: `, as far as they are known."""
    if file is None:
        return text
    if line is None:
        return f"{file}: {text}"
    return f"{file}:{line}: {text}"


class OctoError(Exception):
    """octop2p could not do what was asked."""

    exit_code: ClassVar[int] = 1
    #: The job this error is about, when there is one (for `--json` and the hint).
    job: str | None = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.description()

    @classmethod
    def description(cls) -> str:
        """What this kind of error means, for the user: the class docstring."""
        return inspect.cleandoc(cls.__doc__ or cls.__name__)

    def __str__(self) -> str:
        return self.message


class UsageError(OctoError):
    """The command was not used as intended; see `octop2p COMMAND --help`."""

    exit_code = 2


class JobRefused(OctoError):
    """The job breaks a rule of octop2p jobs and was refused before any of it ran."""

    exit_code = 1

    def __init__(self, rule: str, file: str | None, line: int | None, detail: str) -> None:
        super().__init__(_located(file, line, f"{detail} (rule: {rule})"))
        self.rule = rule
        self.file = file
        self.line = line
        self.detail = detail
        # BaseException pickles as cls(*args); keep args the constructor's arguments.
        self.args = (rule, file, line, detail)


class JobFailed(OctoError):
    """The job's own code failed while it ran; its traceback says where."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        traceback: str = "",
        rule: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        text = message if rule is None else f"{message} (rule: {rule})"
        super().__init__(_located(file, line, text))
        # The bare message, without location or rule, as the child reported it.
        self.message = message
        self.traceback = traceback
        self.rule = rule
        self.file = file
        self.line = line
        self.args = (message, traceback, rule, file, line)
        self._text = _located(file, line, text)

    def __str__(self) -> str:
        return self._text


class NoNodeError(OctoError):
    """No octop2p node or peer could be reached; start one with `octop2p node`."""

    exit_code = 69


class Interrupted(OctoError):
    """Interrupted by the user."""

    exit_code = 130


def error_for_code(message: str, exit_code: int) -> OctoError:
    """An error with ``exit_code``, as the control socket carries it across processes."""
    kinds: dict[int, type[OctoError]] = {
        UsageError.exit_code: UsageError,
        NoNodeError.exit_code: NoNodeError,
        Interrupted.exit_code: Interrupted,
    }
    return kinds.get(exit_code, OctoError)(message)
