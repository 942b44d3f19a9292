"""``octop2p doctor``: what this machine can offer a swarm, and why not more.

It shows each sandbox layer and why one is off (`sandbox.probe`, the same check a node
makes before donating), what an older kernel's Landlock lacks and which layer stands in
for it (`sandbox.kernel_gaps`), whether this node would run other people's code (every layer
works, or the owner set ``unconfined_trusted_swarm``), the address and port it listens
on (the home's config.toml), and the machine's network interfaces with their addresses
(where peers may find it). It reads the home and changes nothing.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ifaddr

import sandbox
from octop2p._config import Config
from octop2p._home import Home

__all__ = ["DoctorReport", "Interface", "examine", "interfaces"]


@dataclass(frozen=True)
class Interface:
    """One network interface: kernel index, name, and addresses as ``addr/prefix``."""

    index: int
    name: str
    addresses: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The interface as JSON holds it."""
        return {"index": self.index, "name": self.name, "addresses": list(self.addresses)}


@dataclass(frozen=True)
class DoctorReport:
    """Everything `octop2p doctor` shows."""

    home: Path
    sandbox: dict[str, sandbox.LayerStatus]
    donate_ok: bool  # would run swarm jobs: every layer works, or the owner overrode it
    donate: bool  # donation switched on in config.toml (consent, separate from ability)
    unconfined_trusted_swarm: bool
    listen_host: str
    port: int  # 0: any free port, chosen at start
    interfaces: tuple[Interface, ...]
    # What this kernel's Landlock lacks against the newest ABI, and what stands in.
    kernel_gaps: tuple[str, ...] = ()
    # Job records in the store that cannot be read back: "<job id>: <why>".
    damaged_jobs: tuple[str, ...] = ()

    @property
    def missing(self) -> list[str]:
        """Layers this machine cannot apply, in the order `confine` applies them."""
        return [name for name, status in self.sandbox.items() if not status.available]

    def donate_reason(self) -> str:
        """Why this node would or would not run other people's code, in a sentence."""
        if not self.missing and self.kernel_gaps:
            return (
                "every sandbox layer works here; this kernel's Landlock is not the newest, "
                "and other layers stand in for what it lacks (see the landlock line)"
            )
        if not self.missing:
            return "every sandbox layer works here"
        missing = ", ".join(self.missing)
        if self.unconfined_trusted_swarm:
            return (
                f"UNCONFINED: {missing} missing, but unconfined_trusted_swarm is set: "
                "swarm jobs would run without those layers"
            )
        return (
            f"{missing} missing: this node refuses to run other people's code "
            "(unconfined_trusted_swarm = true in config.toml overrides it, only for a "
            "swarm whose every member you fully trust)"
        )

    def to_json(self) -> dict[str, Any]:
        """The stable shape of ``doctor --json``: sandbox, donate_ok, interfaces, port."""
        return {
            "sandbox": {
                name: {"available": status.available, "detail": status.detail}
                for name, status in self.sandbox.items()
            },
            "donate_ok": self.donate_ok,
            "interfaces": [interface.to_dict() for interface in self.interfaces],
            "port": self.port,
            # Beyond the four keys above, for people reading it:
            "donate": self.donate,
            "donate_reason": self.donate_reason(),
            "unconfined_trusted_swarm": self.unconfined_trusted_swarm,
            "listen_host": self.listen_host,
            "home": str(self.home),
            "kernel_gaps": list(self.kernel_gaps),
            "damaged_jobs": list(self.damaged_jobs),
        }


def _address(ip: ifaddr.IP) -> str:
    if isinstance(ip.ip, tuple):  # IPv6: (address, flowinfo, scope id)
        return f"{ip.ip[0]}/{ip.network_prefix}"
    return f"{ip.ip}/{ip.network_prefix}"


def interfaces() -> tuple[Interface, ...]:
    """The machine's interfaces, by kernel index, with their IPv4 and IPv6 addresses.

    `socket.if_nameindex` names every interface, even one without an address; ifaddr
    (which zeroconf uses to pick where to announce) gives the addresses.
    """
    addresses: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        addresses.setdefault(adapter.name, []).extend(_address(ip) for ip in adapter.ips)
    try:
        named = socket.if_nameindex()
    except OSError:  # no interfaces to list (a sandbox of our own, say)
        named = []
    found = [Interface(index, name, tuple(addresses.pop(name, ()))) for index, name in named]
    # An adapter ifaddr knows but the kernel did not list by name: show it anyway.
    found += [Interface(0, name, tuple(ips)) for name, ips in sorted(addresses.items())]
    return tuple(found)


def damaged_jobs(jobs_dir: Path) -> tuple[str, ...]:
    """Job records of the store that a node would list as damaged, each as
    ``"<job id>: <why>"`` (read only: nothing is changed)."""
    from octop2p.net._jobstore import damage_of

    try:
        folders = sorted(p for p in jobs_dir.iterdir() if p.is_dir() and len(p.name) == 32)
    except OSError:
        return ()
    found = []
    for folder in folders:
        why = damage_of(folder)
        if why is not None:
            found.append(f"{folder.name}: {why}")
    return tuple(found)


def examine(home: Home) -> DoctorReport:
    """Probe the sandbox and read the home's config; raises `ConfigError` on a bad one."""
    config = Config.load(home)
    status = sandbox.probe()
    complete = all(layer.available for layer in status.values())
    return DoctorReport(
        home=home.path,
        sandbox=status,
        donate_ok=complete or config.unconfined_trusted_swarm,
        donate=config.donate,
        unconfined_trusted_swarm=config.unconfined_trusted_swarm,
        listen_host=config.listen_host,
        port=config.listen_port,
        interfaces=interfaces(),
        kernel_gaps=tuple(sandbox.kernel_gaps()),
        damaged_jobs=damaged_jobs(home.jobs_dir),
    )
