"""Taking up the jobs a node's last run left unfinished (docs/jobs.md, "When the chief
restarts"): each one's package is unpacked again from the store, checked as at
submission, and run as a :class:`~octop2p.net._hosted.NetworkJob` from what its journal
kept.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from octop2p.engine._package import PACKAGE_BYTES, JobSpec, load_job, renamed
from octop2p.engine._unpack import UnpackError, plain_name, unpack_tar
from octop2p.errors import JobRefused
from octop2p.net._hosted import ChiefNode, NetworkJob
from octop2p.net._jobstore import ArchivedJob
from octop2p.net._store import remove_tree
from protocol import Envelope, EnvelopeKind

if TYPE_CHECKING:
    from octop2p.engine._limits import Limits

# Where the hosted jobs log, as before this module was split from it.
log = logging.getLogger("octop2p.net._hosted")


class HostingNode(ChiefNode, Protocol):
    """What taking up an interrupted job uses of the node, beyond a :class:`ChiefNode`."""

    @property
    def jobs(self) -> dict[bytes, NetworkJob]: ...  # the jobs this node is chief of
    @property
    def jobs_dir(self) -> Path: ...
    @property
    def limits(self) -> Limits: ...



async def resume_job(node: HostingNode, archived: ArchivedJob) -> None:
    """Take up a job that the node's last run left unfinished (its journal says where it
    stood): its package is unpacked again from the store, checked as at submission, and
    run from what its journal kept. A job that cannot be taken up is marked failed."""
    journal = archived.journal
    record = archived.record
    folder = node.jobs_dir / record.id_hex
    assert journal is not None
    try:
        spec, tar = await _reload(node, folder, journal)
    except (OSError, UnpackError, JobRefused, ValueError, KeyError, TypeError) as exc:
        why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        await trio.to_thread.run_sync(archived.interrupted, folder, why)
        archived.done.set()
        log.warning("job %s could not be resumed: %s", record.id_hex, why)
        return
    envelope = None
    if spec.kind == "package":  # donors check the submitter's signature on the package
        envelope = Envelope(EnvelopeKind.PACKAGE, bytes.fromhex(journal["package_author"]),
                            record.job_id, 0, b"", bytes.fromhex(journal["package_signature"]),
                            tar)
    job = NetworkJob(node, spec, job_id=record.job_id, package_envelope=envelope, tar=tar)
    job.submitter = bytes.fromhex(journal["submitter"])  # whose Cancel counts, as before
    job.record.started = record.started
    job.record.resumed = 0  # the journal tells how much was kept, once it is open
    node.jobs[job.job_id] = job
    archived.done.set()  # whoever waited for it now follows the resumed job
    log.info("resuming job %s (%s), interrupted when its chief stopped", record.name,
             record.id_hex)
    await job.run(folder)


async def _reload(
    node: HostingNode, folder: Path, journal: dict[str, Any]
) -> tuple[JobSpec, bytes]:
    """The job's spec and package bytes from its folder in the store (package.tar is
    unpacked with the same bounds as a peer's, into a fresh ``submitted/``)."""
    tar = await trio.to_thread.run_sync((folder / "package.tar").read_bytes)
    submitted = folder / "submitted"
    for scratch in (submitted, folder / "work"):
        await remove_tree(scratch)
    await trio.to_thread.run_sync(
        functools.partial(unpack_tar, tar, submitted, max_bytes=PACKAGE_BYTES))
    target = submitted
    if journal.get("kind") == "script":
        script = journal.get("script")
        if not (isinstance(script, str) and plain_name(script)):
            raise ValueError("its record names no script")
        target = submitted / script
    spec = await trio.to_thread.run_sync(load_job, target, node.limits)
    return renamed(spec, str(journal.get("name") or "")), tar
