"""The end of a CLI command: out as soon as what it wrote is out.

Once a command has returned, the interpreter's own teardown (finalizing trio, rich,
msgpack, click and the rest, module by module) takes another 40-90 ms on the reference
machine, which every `octop2p run` and `submit` used to pay after its job was done
(docs/performance.md). `run_command` does what that teardown does that counts: it waits
for threads that are not daemons, runs the `atexit` handlers (log handlers flush and
close, temporary folders go), flushes stdout and stderr, and then ends the process with
the command's exit code. The Qt app is left to the normal exit: its C++ side has
destructors of its own.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable

#: Python's own exit status when flushing stdout fails at exit (a closed pipe).
FLUSH_FAILED = 120


def run_command(main: Callable[[], object]) -> None:
    """Run the click group ``main`` (which exits through SystemExit) and leave."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exit_code(exc.code)
    if "PySide6" in sys.modules:
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or FLUSH_FAILED
    os._exit(code)


def exit_code(value: object) -> int:
    """The status ``sys.exit(value)`` ends a process with (a message goes to stderr)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1
