"""The octop2p desktop app: PySide6 views over the node API (``octop2p gui``).

Importing this package needs no Qt: `main` imports PySide6 only when the app starts, so
the command line works on machines without it. The app runs trio in guest mode on Qt's
event loop and talks to the node only through the node API (see ``_bridge``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["main"]


def main(home: Path | None = None, *, screenshot: Path | None = None, hidden: bool = False,
         verbose: int = 0) -> int:
    """Run the desktop app until it quits; returns the exit code.

    ``screenshot``: start, let the window settle, save it as PNG there and quit.
    ``hidden``: start in the tray (minimized where the desktop has no tray).
    """
    from ._app import run

    return run(home, screenshot=screenshot, hidden=hidden, verbose=verbose)
