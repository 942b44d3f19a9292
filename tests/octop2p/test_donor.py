"""The donor side (net/_donor.py) on its own: a worker service whose node is a small
stand-in with what ``DonorNode`` declares, talking to a chief that is a recording link.
Consent (no donation, no work), the package's hash and submitter's signature, the
cache, and the download cap, each without a whole node."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from octop2p.engine._limits import Limits
from octop2p.engine._package import load_job, pack_package
from octop2p.net._donor import DonorNode, WorkerService, WorkRefused
from protocol import (
    Envelope,
    EnvelopeKind,
    Error,
    ErrorCode,
    Fragment,
    JobInfo,
    JobKind,
    Message,
    NodeIdentity,
    PackageChunk,
    PackageRequest,
    Task,
    content_hash,
)

SUBMITTER = NodeIdentity.generate()


@dataclass
class Settings:
    state_dir: Path | None = None
    block_after_breaches: int = 3
    block_hours: int = 24
    packages_mb: int = 64
    handover_seconds: int = 120


@dataclass
class StandIn:
    """A node as the worker service sees it, and the events it was told."""

    package_cache: Path
    identity: NodeIdentity = field(default_factory=NodeIdentity.generate)
    cores: int = 2
    donating: bool = True
    limits: Limits = field(default_factory=Limits)
    layers: frozenset[str] = frozenset()
    forkserver: Any = None
    settings: Settings = field(default_factory=Settings)
    events: list[str] = field(default_factory=list)

    def emit(self, kind: str, **fields: Any) -> None:
        self.events.append(kind)

    def announce_soon(self) -> None:
        self.events.append("announce")


class Chief:
    """A chief's link: records what the donor sends, and serves ``blob`` by chunks."""

    peer_id = short = "CHIEF"

    def __init__(self, service: WorkerService, blob: bytes = b"", *, lie: bool = False) -> None:
        self.service, self.blob, self.lie = service, blob, lie
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if isinstance(message, PackageRequest):
            data = self.blob[message.offset : message.offset + message.length]
            if self.lie:
                data = bytes(len(data))
            self.service.on_chunk(self, PackageChunk(  # type: ignore[arg-type]
                package=message.package, offset=message.offset, total=len(self.blob), data=data))


def _service(tmp_path: Path, **changes: Any) -> tuple[WorkerService, StandIn]:
    (tmp_path / "packages").mkdir(exist_ok=True)
    node = StandIn(tmp_path / "packages", **changes)
    typed: DonorNode = node  # the stand-in is all the service needs
    return WorkerService(typed), node


def _offer(examples: Path, signer: NodeIdentity = SUBMITTER) -> tuple[JobInfo, bytes]:
    """The primes example as a chief offers it: its package, signed by ``signer`` but
    claimed as SUBMITTER's."""
    return offer_folder(examples / "primes", signer)


def offer_folder(job: Path, signer: NodeIdentity = SUBMITTER) -> tuple[JobInfo, bytes]:
    """The package job in ``job`` as a chief offers it (see `_offer`)."""
    spec = load_job(job, Limits())
    tar = pack_package(spec)
    job_id = secrets.token_bytes(16)
    envelope = Envelope.sign(signer, EnvelopeKind.PACKAGE, job_id, 0, tar)
    return JobInfo(job_id=job_id, name=spec.options.name, kind=JobKind.PACKAGE, script=None,
                   package=content_hash(tar), package_size=len(tar),
                   submitter=SUBMITTER.public_key, package_signature=envelope.signature,
                   options={}), tar


async def test_a_node_that_does_not_donate_takes_no_job_and_no_fragment(
    tmp_path: Path, examples: Path
) -> None:
    service, node = _service(tmp_path, donating=False)
    info, tar = _offer(examples)
    chief = Chief(service, tar)
    await service.on_job_info(chief, info, None)  # type: ignore[arg-type]
    fragment = Fragment(task=Task.PROCESS, envelope=Envelope.sign(
        SUBMITTER, EnvelopeKind.FRAGMENT, info.job_id, 0, b"x", ref=info.package))
    await service.on_fragment(chief, fragment)  # type: ignore[arg-type]
    assert [(type(m), getattr(m, "code", None)) for m in chief.sent] == [
        (Error, ErrorCode.NOT_DONATING), (Error, ErrorCode.NOT_DONATING)]
    assert service.jobs == {} and node.events == []
    assert list(node.package_cache.iterdir()) == []  # nothing fetched either


async def test_a_package_is_fetched_by_chunks_checked_and_cached_once(
    tmp_path: Path, examples: Path
) -> None:
    service, node = _service(tmp_path)
    info, tar = _offer(examples)
    chief = Chief(service, tar)
    target = await service.fetch_package(chief, info)  # type: ignore[arg-type]
    assert sorted(p.name for p in target.iterdir()) == [
        "Merge.py", "Process.py", "Split.py", "job.toml"]
    assert (node.package_cache / f"{info.package.hex()}.tar").read_bytes() == tar
    asked = len(chief.sent)
    assert asked >= 1 and all(isinstance(m, PackageRequest) for m in chief.sent)
    again = await service.fetch_package(chief, info)  # type: ignore[arg-type]
    assert again == target and len(chief.sent) == asked  # cached: not fetched again


async def test_a_package_another_signed_or_altered_is_refused_and_not_kept(
    tmp_path: Path, examples: Path
) -> None:
    service, node = _service(tmp_path)
    forged, tar = _offer(examples, signer=NodeIdentity.generate())
    with pytest.raises(WorkRefused, match="not its submitter's"):
        await service.fetch_package(Chief(service, tar), forged)  # type: ignore[arg-type]
    info, tar = _offer(examples)
    with pytest.raises(WorkRefused, match="does not match its hash"):
        await service.fetch_package(Chief(service, tar, lie=True), info)  # type: ignore[arg-type]
    assert list(node.package_cache.iterdir()) == []  # no package, no part left


async def test_a_download_above_its_cap_is_refused_before_a_request(tmp_path: Path) -> None:
    service, _ = _service(tmp_path)
    chief = Chief(service, b"x" * 100)
    with pytest.raises(WorkRefused, match="more than the 99"):
        await service.download(chief, content_hash(chief.blob), 100,  # type: ignore[arg-type]
                               tmp_path / "out", cap=99)
    assert chief.sent == [] and not (tmp_path / "out").exists()
