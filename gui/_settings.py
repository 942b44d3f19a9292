"""The desktop app's own choices, kept in ``gui.toml`` in the node's home.

The node's ``config.toml`` holds what the node itself applies (``donate``, ``cores``,
``cpu_percent``...). The `Config` API reads and checks that file but has no way to change
one key while keeping the file's comments, so the app keeps what its owner chose in the
app in a file of its own, next to it. Values missing from ``gui.toml`` fall back to
``config.toml``'s, so a home set up with the CLI opens with the same donation settings.

Nothing here touches Qt: the file is read and written from the bridge.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octop2p.api import Config, Home, toml_string, write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "gui.toml"
#: Settings that belong to the node: kept in config.toml, not in gui.toml.
NODE_KEYS = ("donate", "cores", "cpu_percent")
THEMES = ("system", "dark", "light")


def _default_results() -> str:
    return str(Path.home() / "octop2p-results")


@dataclass(frozen=True)
class GuiSettings:
    """What the owner chose in the app (see the module docstring)."""

    donate: bool = False  # the owner's wish; the policy may pause it (battery, in use)
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    cpu_percent: int = 100  # applied as a number of whole cores (see _power.decide)
    idle_only: bool = False  # "only when I'm away"
    idle_minutes: int = 5  # how long without input counts as away
    pause_on_battery: bool = True
    results_dir: str = field(default_factory=_default_results)
    theme: str = "system"  # system, dark or light
    close_to_tray: bool = True  # closing the window keeps the app in the tray, if any

    @classmethod
    def load(cls, home: Home, config: Config | None = None) -> GuiSettings:
        """``gui.toml`` over ``config.toml``'s donation settings over the defaults.

        A bad value in ``gui.toml`` is logged and that key is ignored: the app must
        still open so that its owner can fix the setting from it.
        """
        base = cls()
        if config is not None:
            base = dataclasses.replace(base, donate=config.donate, cores=config.cores,
                                       cpu_percent=config.cpu_percent)
        path = home.path / FILE_NAME
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return base
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return base
        # The donation itself (on, cores, CPU share) is the node's setting, in
        # config.toml: an older gui.toml's copy must not override the owner's choice.
        data = {k: v for k, v in data.items() if k not in NODE_KEYS}
        return base.updated(data, source=str(path))

    def updated(self, changes: dict[str, Any], *, source: str = "the app") -> GuiSettings:
        """A copy with the valid ``changes`` applied; invalid ones are logged and skipped."""
        good: dict[str, Any] = {}
        for key, value in changes.items():
            problem = _check(key, value)
            if problem:
                log.warning("%s: setting %s ignored: %s", source, key, problem)
            else:
                good[key] = value
        return dataclasses.replace(self, **good)

    def save(self, home: Home) -> None:
        """Write ``gui.toml`` atomically (0600, as every file in the home)."""
        lines = ["# octop2p desktop app settings (written by the app; safe to edit)."]
        for f in dataclasses.fields(self):
            if f.name in NODE_KEYS:
                continue  # config.toml's (see `save_node_keys`)
            value = getattr(self, f.name)
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int):
                text = str(value)
            else:
                text = toml_string(str(value))
            lines.append(f"{f.name} = {text}")
        home.create()
        write_atomic(home.path / FILE_NAME, ("\n".join(lines) + "\n").encode("utf-8"))


_KINDS: dict[str, type] = {
    "donate": bool, "cores": int, "cpu_percent": int, "idle_only": bool, "idle_minutes": int,
    "pause_on_battery": bool, "results_dir": str, "theme": str, "close_to_tray": bool,
}


def _check(key: str, value: object) -> str | None:
    """Why ``value`` is not valid for ``key``, or None."""
    kind = _KINDS.get(key)
    if kind is None:
        return "unknown setting"
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expected a whole number, got {value!r}"
    if kind is not int and not isinstance(value, kind):
        return f"expected {kind.__name__}, got {value!r}"
    if key == "cores" and not 1 <= value <= (os.cpu_count() or 1):  # type: ignore[operator]
        return f"1 to {os.cpu_count() or 1} cores"
    if key == "cpu_percent" and not 1 <= value <= 100:  # type: ignore[operator]
        return "1 to 100 percent"
    if key == "idle_minutes" and not 1 <= value <= 240:  # type: ignore[operator]
        return "1 to 240 minutes"
    if key == "theme" and value not in THEMES:
        return f"one of {', '.join(THEMES)}"
    return None
