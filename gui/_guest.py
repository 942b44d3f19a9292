"""trio in guest mode on Qt's event loop (hand-rolled on `trio.lowlevel.start_guest_run`).

Qt owns the thread and its event loop; trio runs as a guest: whenever trio has work it
asks, through ``run_sync_soon_threadsafe``, for a callback to run on the Qt thread, and
we post that callback as a Qt event. So every trio task and every Qt slot run on the one
GUI thread, one at a time: a trio task may touch widgets and emit signals directly, and
a Qt slot reaches trio through :meth:`GuestRun.spawn`.

Tests drive a guest run from synchronous test functions: ``qtbot.waitUntil`` spins the
Qt loop, and with it trio. (A blocking ``waitSignal`` inside an async test that itself
runs in the guest would nest one loop inside a trio tick, and was seen to hang.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Signal

log = logging.getLogger(__name__)

_REENTER = QEvent.Type(QEvent.registerEventType())


class _ReenterEvent(QEvent):
    """A Qt event that carries one callback trio wants run on the GUI thread."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(_REENTER)
        self.fn = fn


class _Reenter(QObject):
    """Receives the posted callbacks and runs them (on the thread it lives in)."""

    def event(self, event: QEvent) -> bool:
        if event.type() == _REENTER:
            event.fn()  # type: ignore[attr-defined]
            return True
        return super().event(event)


class GuestRun(QObject):
    """One trio run hosted by the Qt event loop of the running QApplication.

    ``start()`` begins the run: a root nursery that lives until ``stop()``. Tasks are
    added with ``spawn()`` from Qt code (thread-safe). ``finished`` fires once the run
    has ended; ``outcome`` then holds its result or the exception that ended it.
    """

    finished = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._reenter = _Reenter()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._pending: list[tuple[Callable[..., Awaitable[object]], tuple[Any, ...]]] = []
        self.outcome: outcome.Outcome[object] | None = None
        self.started = False
        self._stop_requested = False

    @property
    def running(self) -> bool:
        """True from ``start()`` until the run has ended."""
        return self.started and self.outcome is None

    @property
    def done(self) -> bool:
        """True once the run has ended (normally, cancelled or crashed)."""
        return self.outcome is not None

    def start(self) -> None:
        """Begin the trio run on the Qt loop; returns at once (the loop drives it)."""
        if self.started:
            raise RuntimeError("a GuestRun starts once")
        if QCoreApplication.instance() is None:
            raise RuntimeError("create the QApplication before starting trio")
        self.started = True
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=self._post,
            done_callback=self._done,
            # Qt does not use signal.set_wakeup_fd: let trio take it for Ctrl+C.
            host_uses_signal_set_wakeup_fd=False,
        )

    def _post(self, fn: Callable[[], object]) -> None:
        # Called from trio's I/O thread too: postEvent is thread-safe.
        QCoreApplication.postEvent(self._reenter, _ReenterEvent(fn))

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            if self._stop_requested:
                scope.cancel()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                pending, self._pending = self._pending, []
                for fn, args in pending:
                    nursery.start_soon(fn, *args)
                await trio.sleep_forever()

    def _done(self, result: outcome.Outcome[object]) -> None:
        self.outcome = result
        self._nursery = None
        if isinstance(result, outcome.Error):
            log.error("the trio run ended with an error", exc_info=result.error)
        self.finished.emit()

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task in the root nursery; callable from any code."""
        if self.outcome is not None:
            log.debug("trio has stopped: %s not started", getattr(fn, "__name__", fn))
            return
        if self._token is None or self._nursery is None:
            self._pending.append((fn, args))  # the run has not reached its nursery yet
            return
        nursery = self._nursery
        self._token.run_sync_soon(lambda: nursery.start_soon(fn, *args))

    def stop(self) -> None:
        """Cancel every task; ``finished`` fires once they have all unwound."""
        if self.outcome is not None or not self.started:
            return
        if self._token is None or self._scope is None:
            self._stop_requested = True  # not in _main yet: it cancels itself on arrival
            return
        scope = self._scope
        try:
            self._token.run_sync_soon(scope.cancel)
        except trio.RunFinishedError:
            pass

