"""The node's settings: one frozen `Config`, read from `config.toml`, overridden by flags.

Precedence, lowest first: the defaults below, the home's `config.toml`, then the
command line (`Config.load(home, donate=True)`). A `Config` is passed explicitly to what
needs it; there are no globals. Keys and values are checked as job.toml's are (the
helpers of `_limits`), so that a typo gets a "did you mean" instead of being ignored.

The node writes a fully commented `config.toml` on first start (`write_default`), so the
file documents every setting while leaving the machine-dependent defaults (`cores`,
`name`) to be computed afresh on each start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octop2p._home import Home, toml_string, write_atomic
from octop2p.engine._limits import Limits, OptionError, _bool, _int, _kind, _unknown, toml_key_line
from octop2p.errors import UsageError, _located

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_PORT",
    "Config",
    "ConfigError",
    "default_toml",
    "parse_address",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 7878
MAX_PEERS = 256  # static peers in the config: more is surely a mistake
_NAME_CHARS = 63  # the name goes into a DNS-SD TXT record


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _hostname() -> str:
    name = socket.gethostname().split(".")[0] or "octop2p"
    return name[:_NAME_CHARS]


class ConfigError(UsageError):
    """A setting in config.toml or on the command line is unknown or has a wrong value."""

    def __init__(self, file: str | None, line: int | None, detail: str) -> None:
        super().__init__(_located(file, line, detail))
        self.file = file
        self.line = line
        self.detail = detail
        self.args = (file, line, detail)


@dataclass(frozen=True)
class Config:
    """How this node runs: where it listens, whom it finds, what it donates."""

    name: str = field(default_factory=_hostname)  # shown to peers; a hint, not an identity
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT  # 0: any free port
    peers: tuple[str, ...] = ()  # static "HOST:PORT" peers, for LANs without multicast
    discovery: bool = True  # mDNS on the LAN
    donate: bool = False  # consent is opt-in: compute for the swarm only when true
    cores: int = field(default_factory=_cpu_count)  # worker processes when donating
    cpu_percent: int = 100  # share of each donated core's time
    unconfined_trusted_swarm: bool = False  # run swarm jobs even where the sandbox is short
    packages_mb: int = 4096  # disk for packages fetched as a donor; the oldest go first
    jobs_mb: int = 8192  # disk for jobs this node was chief of, with their results
    block_after_breaches: int = 3  # sandbox breaches by a chief's jobs before it is blocked
    block_hours: int = 24  # how long a block lasts, and the window breaches count in
    reattach_seconds: int = 600  # how long `submit --chief` waits for a lost link to return
    handover_seconds: int = 120  # how long a donor keeps a lost chief's work for its return
    journal: bool = True  # journal the jobs this node is chief of, so a restart resumes them
    limits: Limits = field(default_factory=Limits)  # the most any job may use here

    def __post_init__(self) -> None:
        # Checked here too, so that no Config with a bad value exists, however made.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in _checked(fields, Limits()).items():
            object.__setattr__(self, key, value)  # normalized: lists become tuples

    @classmethod
    def load(cls, home: Home | Path, **overrides: Any) -> Config:
        """Defaults, then `config.toml` in `home`, then `overrides` (command-line flags).

        An override of None means "the flag was not given" and is skipped, so a CLI can
        pass its options straight through. Raises `ConfigError`.
        """
        path = (home.path if isinstance(home, Home) else Path(home)) / "config.toml"
        config = cls.from_toml_file(path) if path.is_file() else cls()
        given = {key: value for key, value in overrides.items() if value is not None}
        try:
            config = config.replace(given)
        except OptionError as exc:
            raise ConfigError(None, None, f"{exc} (on the command line)") from exc
        if config.unconfined_trusted_swarm:
            log.warning(
                "UNCONFINED: unconfined_trusted_swarm is on (%s): on a machine that lacks "
                "sandbox layers, jobs from this swarm run without them. Only for a swarm "
                "whose every member you fully trust",
                path if path.is_file() else "command line",
            )
        return config

    @classmethod
    def from_toml_file(cls, path: Path) -> Config:
        """The defaults overridden by the settings of one TOML file; raises `ConfigError`."""
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), None, f"cannot read it: {exc}") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"at line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
            raise ConfigError(str(path), line, f"not valid TOML: {exc}") from exc
        try:
            return cls().replace(data)
        except OptionError as exc:
            raise ConfigError(str(path), toml_key_line(text, exc.key), str(exc)) from exc

    def replace(self, changes: Mapping[str, object]) -> Config:
        """A copy with `changes` applied, each checked; raises `OptionError`."""
        checked = _checked(changes, self.limits)
        return dataclasses.replace(self, **checked)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (lists and dicts), as TOML and JSON hold them."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["peers"] = list(self.peers)
        data["limits"] = self.limits.to_dict()
        return data

    def to_toml(self) -> str:
        """The settings as a config.toml that `Config.load` reads back unchanged."""
        lines: list[str] = []
        limits: list[str] = []
        for key, value in self.to_dict().items():
            if key == "limits":
                limits = [f"{k} = {_toml_value(v)}" for k, v in value.items()]
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join([*lines, "", "[limits]", *limits]) + "\n"

    @staticmethod
    def write_default(home: Home) -> bool:
        """Write a commented config.toml into `home` unless it has one; True if written."""
        path = home.config_path
        if path.exists():
            return False
        home.create()
        write_atomic(path, default_toml().encode("utf-8"))
        log.info("wrote the default settings to %s", path)
        return True


CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))

# What each setting means, for the commented file; a test checks every key has one.
_HELP: dict[str, str] = {
    "name": "A name shown to peers next to this node's id. Default: the host name.",
    "listen_host": "Address to accept peers on; 0.0.0.0 means every interface.",
    "listen_port": "TCP port to accept peers on; 0 picks any free port.",
    "peers": 'Peers to connect to without discovery, e.g. ["192.168.1.20:7878"].',
    "discovery": "Find peers on the LAN with mDNS (zeroconf).",
    "donate": "Compute jobs for this node's swarm. Off unless you switch it on.",
    "cores": "Cores to donate. Default: every core of this machine.",
    "cpu_percent": "Share of each donated core's time, 1 to 100.",
    "unconfined_trusted_swarm": (
        "Where this machine lacks sandbox layers, run the swarm's jobs anyway.\n"
        "Only for a swarm whose every member you fully trust; logged at each start."
    ),
    "packages_mb": (
        "Disk (MB) for the packages this node fetched as a donor (packages/);\n"
        "past it the oldest not in use are removed."
    ),
    "jobs_mb": (
        "Disk (MB) for the jobs this node was chief of and their results (jobs/);\n"
        "past it the oldest finished jobs are forgotten."
    ),
    "reattach_seconds": (
        "How long a job submitted with --chief waits for a lost link to its chief to come\n"
        "back before it is marked failed (its chief may still finish it: `octop2p fetch`)."
    ),
    "handover_seconds": (
        "How long this node, as a donor, keeps the work it was doing for a chief whose\n"
        "link dropped (its children finish, their results are held), to hand the results\n"
        "in when the chief restarts and takes the job up again."
    ),
    "journal": (
        "Keep a journal of each job this node is chief of (results received, checkpoints\n"
        "of the merger's folder), so that a crash or a restart resumes the job instead of\n"
        "losing it. false saves its small cost, and loses such jobs."
    ),
    "block_after_breaches": (
        "Refuse a chief's jobs for block_hours once this many of its jobs broke sandbox\n"
        "rules here within block_hours (0: never). Lift it: `octop2p blocked --unblock ID`."
    ),
    "block_hours": "How long such a block lasts, and the window in which breaches count.",
    "limits": "The most one job may use on this node; a job may ask for less.",
}


def default_toml() -> str:
    """The commented config.toml written on first start: every setting, at its default."""
    defaults = Config().to_dict()
    out = [
        "# octop2p node settings. Uncomment a line to change it; flags such as",
        "# --donate or --cores override this file for one run. See `octop2p node --help`.",
    ]
    for key in CONFIG_KEYS:
        out.append("")
        out += [f"# {line}" for line in _HELP[key].splitlines()]
        if key == "limits":
            out.append("# [limits]")
            out += [f"# {k} = {_toml_value(v)}" for k, v in defaults["limits"].items()]
        elif key in ("name", "cores"):
            out.append(f"# {key} = {_toml_value(defaults[key])}  # on this machine")
        else:
            out.append(f"# {key} = {_toml_value(defaults[key])}")
    return "\n".join(out) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if value >= 100_000 else str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


# --- checks ------------------------------------------------------------------------

_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _host(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise OptionError(key, f"expected a host name or address, got {_kind(value)}")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if len(value) > 253 or not _HOSTNAME.fullmatch(value):
            raise OptionError(key, f"{value!r} is neither an IP address nor a host name") from None
    return value


def _port(key: str, value: object, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(key, f"expected a port number, got {_kind(value)} ({value!r})")
    if not lowest <= value <= 65535:
        raise OptionError(key, f"a port is {lowest} to 65535, got {value}")
    return value


def parse_address(text: str, key: str = "peer", lowest: int = 1) -> tuple[str, int]:
    """`HOST:PORT`, `[V6ADDR]:PORT` or a bare `HOST` (port 7878); raises `OptionError`.

    `lowest=0` accepts port 0 (any free port), for the address a node listens on.
    """
    host, port_text = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise OptionError(key, f"{text!r}: write an IPv6 address as [ADDR]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not port_text:
        return _host(key, host), DEFAULT_PORT
    if not port_text.isdigit():
        raise OptionError(key, f"{text!r}: the port must be a number, as in HOST:{DEFAULT_PORT}")
    return _host(key, host), _port(key, int(port_text), lowest)


def _peers(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise OptionError(
            "peers", f'expected a list like ["HOST:PORT"], got {_kind(value)} ({value!r})'
        )
    if len(value) > MAX_PEERS:
        raise OptionError("peers", f"at most {MAX_PEERS} static peers, got {len(value)}")
    for item in value:
        if not isinstance(item, str):
            raise OptionError("peers", f"expected HOST:PORT strings, got {_kind(item)}")
        parse_address(item, "peers")
    return tuple(value)


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise OptionError("name", f"expected a string, got {_kind(value)} ({value!r})")
    if not value.strip() or len(value) > _NAME_CHARS or not value.isprintable():
        raise OptionError("name", f"{value!r}: use 1 to {_NAME_CHARS} printable characters")
    return value


def _cores(value: object) -> int:
    cores = _int("cores", value)
    if cores > _cpu_count():
        raise OptionError("cores", f"{cores} is more than this machine's {_cpu_count()} cores")
    return cores


def _percent(value: object) -> int:
    percent = _int("cpu_percent", value)
    if percent > 100:
        raise OptionError("cpu_percent", f"a share of 1 to 100 percent, got {percent}")
    return percent


def _breaches(value: object) -> int:
    # 0 is allowed here: it switches blocking off.
    if type(value) is int and value == 0:
        return 0
    return _int("block_after_breaches", value)


def _limits(value: object, base: Limits) -> Limits:
    if isinstance(value, Limits):
        return value
    if not isinstance(value, Mapping):
        raise OptionError("limits", f"expected a table of limits, got {_kind(value)} ({value!r})")
    return Limits.from_dict(value, base)


def _checked(data: Mapping[str, object], limits: Limits) -> dict[str, Any]:
    """A checked copy of the settings in `data`, only those given; raises `OptionError`."""
    checkers: dict[str, Callable[[object], object]] = {
        "name": _name,
        "listen_host": lambda v: _host("listen_host", v),
        "listen_port": lambda v: _port("listen_port", v, 0),
        "peers": _peers,
        "discovery": lambda v: _bool("discovery", v),
        "donate": lambda v: _bool("donate", v),
        "cores": _cores,
        "cpu_percent": _percent,
        "unconfined_trusted_swarm": lambda v: _bool("unconfined_trusted_swarm", v),
        "journal": lambda v: _bool("journal", v),
        "packages_mb": lambda v: _int("packages_mb", v),
        "jobs_mb": lambda v: _int("jobs_mb", v),
        "block_after_breaches": _breaches,
        "block_hours": lambda v: _int("block_hours", v),
        "reattach_seconds": lambda v: _int("reattach_seconds", v),
        "handover_seconds": lambda v: _int("handover_seconds", v),
        # A partial [limits] table changes only the limits it names.
        "limits": lambda v: _limits(v, limits),
    }
    checked: dict[str, Any] = {}
    for key, value in data.items():
        if key not in checkers:
            raise _unknown(str(key), CONFIG_KEYS, None)
        checked[key] = checkers[key](value)
    return checked


def set_keys(home: Home, **values: bool | int | str) -> None:
    """Set top-level keys of ``home``'s config.toml in place, keeping its comments.

    A key's line (or its commented default, ``# key = ...``) is replaced; a key with
    neither is added before the first table. The result is checked before it is written.
    """
    path = home.config_path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = default_toml().splitlines()
    for key, value in values.items():
        new = f"{key} = {_toml_value(value)}"
        pattern = re.compile(rf"^\s*#?\s*{re.escape(key)}\s*=")
        table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")),
                     len(lines))
        found = next((i for i in range(table) if pattern.match(lines[i])), None)
        if found is None:
            lines.insert(table, new)
        else:
            lines[found] = new
    text = "\n".join(lines) + "\n"
    Config().replace(tomllib.loads(text))  # never write a file the node could not read
    write_atomic(path, text.encode("utf-8"))
