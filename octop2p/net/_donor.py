"""The worker side of a node: runs other people's fragments, only while donating.

For each job a chief offers (``JobInfo``), the worker fetches the package by content
hash (cached), checks the submitter's signature over it, and starts sandboxed work
children for it. Fragments come in signed by the chief; results go back signed by this
node, so the chief (or anyone later) can tell who computed what.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import sandbox
from octop2p.engine._children import Child, ChildDied, ChildProtocolError, ChildReported
from octop2p.engine._groups import collapse_groups
from octop2p.engine._limits import JobOptions, Limits
from octop2p.engine._package import PACKAGE_BYTES, missing_requirements
from octop2p.engine._runner import Pacer, describe_exit, watch_threads
from octop2p.engine._unpack import MAX_ENTRIES, UnpackError, plain_name, unpack_tar
from octop2p.net._hosted import NOT_RUN, decode_parts, encode_parts
from octop2p.net._peer import LinkClosed, PeerLink
from octop2p.net._store import content_hasher, evict_oldest
from protocol import (
    MAX_CHUNK,
    Cancel,
    Envelope,
    EnvelopeKind,
    Error,
    ErrorCode,
    Failure,
    Fragment,
    JobInfo,
    JobKind,
    PackageChunk,
    PackageRequest,
    RemoteProtocolError,
    Result,
    Task,
    WorkRequest,
    content_hash,
)

if TYPE_CHECKING:
    from octop2p.net._node import Node

log = logging.getLogger(__name__)

#: Fragments a slot asks for at first, before it knows how long one takes.
SLOT_CREDITS = 2
MAX_SLOT_BATCH = 64
#: A slot's credits in flight (asked for, on the way, or running) grow to two batches
#: of about BATCH_SECONDS each: one runs while the next crosses the network, so short
#: fragments are not paced by the round trip to the chief.
MAX_SLOT_WINDOW = 2 * MAX_SLOT_BATCH
#: ... and to no more bytes than this (but at least SLOT_CREDITS fragments), so that
#: large fragments do not pile up on the chief, on the wire or in the inbox.
MAX_SLOT_WINDOW_BYTES = 16 << 20
FETCH_SECONDS = 60.0
#: Results wait at most this long for the next one, to go back in one write.
RESULT_FLUSH_SECONDS = 0.005
RESULT_FLUSH_BYTES = 1 << 20


class WorkRefused(Exception):
    """This node will not work on a job (not donating, missing module, bad package)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class RunningJob:
    """What the owner sees of a job running on their machine ("what runs here now")."""

    job_id: str
    name: str
    chief: str
    started: float = field(default_factory=time.time)
    in_progress: set[int] = field(default_factory=set)
    done: int = 0


class WorkerJob:
    """This node's work on one job of one chief."""

    def __init__(self, service: WorkerService, link: PeerLink, info: JobInfo) -> None:
        self.service = service
        self.link = link
        self.info = info
        self.view = RunningJob(info.job_id.hex(), info.name, link.peer_id)
        self.scope = trio.CancelScope()
        # Room for every slot's whole window: a chief that keeps to our credits never
        # finds the inbox full.
        send, receive = trio.open_memory_channel[Fragment](
            MAX_SLOT_WINDOW * max(1, service.node.cores))
        self.inbox_send, self.inbox = send, receive
        options = JobOptions.from_dict(dict(info.options), default_name=info.name)
        limits, _ = options.limits.capped(service.node.limits)
        self.limits: Limits = limits
        self.partitions = int(info.options.get("partitions") or 1)

    async def run(self) -> None:
        with self.scope:
            try:
                job_dir = await self.service.fetch_package(self.link, self.info)
                with collapse_groups():  # a slot's LinkClosed must reach the handlers below
                    async with trio.open_nursery() as nursery:
                        for i in range(self.service.slots_for(self)):
                            nursery.start_soon(self._slot, job_dir, i)
            except WorkRefused as exc:
                log.warning("not working on job %s of %s: %s", self.info.name, self.link.short, exc)
                try:
                    await self.link.send(Error(code=exc.code, reason=str(exc),
                                               job_id=self.info.job_id))
                except LinkClosed:
                    pass
            except LinkClosed:
                pass
            except Exception as exc:  # noqa: BLE001 - a bug here fails this job, not the node
                log.exception("job %s of %s failed inside octop2p", self.info.name,
                              self.link.short)
                try:  # REFUSED: the chief ends our leases and hands the fragments on
                    await self.link.send(Error(code=ErrorCode.REFUSED, job_id=self.info.job_id,
                                               reason=f"the worker failed: {exc!r}"[:4096]))
                except LinkClosed:
                    pass

    def stop(self) -> None:
        self.scope.cancel()

    def _child_spec(self, job_dir: Path) -> dict[str, Any]:
        kind = "package" if self.info.kind == JobKind.PACKAGE else "script"
        policy = sandbox.Policy(
            read_paths=(str(job_dir),), memory_bytes=self.limits.memory_mb << 20,
            cpu_seconds=self.limits.cpu_seconds, max_threads=self.limits.threads,
            layers=self.service.node.layers,
        )
        return {
            "role": "work", "kind": kind, "job_dir": str(job_dir), "script": self.info.script,
            "results_dir": None, "limits": self.limits.to_dict(),
            "options": {"partitions": self.partitions,
                        "map_batch": self.info.options.get("map_batch")},
            "policy": policy.to_dict(),
        }

    async def _spawn(self, job_dir: Path) -> Child:
        fs = self.service.node.forkserver
        child = await fs.spawn(self._child_spec(job_dir),
                               max_frame=self.limits.fragment_bytes * 2 + (64 << 20))
        with trio.fail_after(self.limits.wall_seconds):
            ready = await child.receive()
        if ready[0] != "ready":
            await child.aclose()
            raise ChildProtocolError(f"child said {ready[0]!r} instead of ready")
        return child

    async def _slot(self, job_dir: Path, index: int) -> None:
        """One sandboxed child: ask for credits, run what arrives, answer, repeat."""
        child: Child | None = None
        window = SLOT_CREDITS
        pacer = Pacer()
        await self.link.send(WorkRequest(credits=window, job_id=self.info.job_id))
        try:
            while True:
                batch = [await self.inbox.receive()]
                while len(batch) < MAX_SLOT_BATCH:
                    try:
                        batch.append(self.inbox.receive_nowait())
                    except trio.WouldBlock:
                        break
                if child is None:
                    try:
                        child = await self._spawn(job_dir)
                    except ChildReported as exc:
                        await self._fail_all(batch, exc.info)
                        continue
                    if self.limits.threads > 1:
                        # seccomp cannot count threads above 1: this node counts them.
                        self.service.node.spawn(self._watch_threads, child)
                started = time.monotonic()
                ok = await self._run(child, batch)
                if not ok:
                    await child.aclose()
                    child = None
                elif child.cpu_seconds() > self.limits.cpu_seconds * 0.5:
                    await child.aclose()
                    child = None
                else:
                    pacer.record(len(batch), time.monotonic() - started)
                # Give back what ran, resized towards two batches of work in flight.
                size = sum(len(f.envelope.payload) for f in batch) // len(batch)
                target = max(SLOT_CREDITS, min(2 * pacer.size(MAX_SLOT_BATCH), MAX_SLOT_WINDOW,
                                               MAX_SLOT_WINDOW_BYTES // max(1, size)))
                credits = max(1, len(batch) + target - window)
                window += credits - len(batch)
                await self.link.send(WorkRequest(credits=credits, job_id=self.info.job_id))
        finally:
            if child is not None:
                await child.aclose()

    async def _watch_threads(self, child: Child) -> None:
        found = await watch_threads(child.pid, self.limits.threads)
        if found is not None:
            child.breach = (  # type: ignore[attr-defined]
                "threads", f"ran {found} threads at once, more than this job's limit of "
                f"{self.limits.threads} (limits.threads)")
            await child.kill()

    async def _run(self, child: Child, batch: list[Fragment]) -> bool:
        """Run a batch in ``child``; returns False if the child must be replaced."""
        by_seq = {f.envelope.seq: f for f in batch}
        for f in batch:
            self.view.in_progress.add(f.envelope.seq)
        tasks = {f.task for f in batch}
        try:
            if tasks == {Task.REDUCE}:
                for f in batch:
                    parts = decode_parts(f.envelope.payload)
                    await child.send(["reduce", f.envelope.seq, parts])
                    await self._collect(child, {f.envelope.seq}, by_seq)
            else:
                kind = "map" if tasks == {Task.MAP} else "process"
                await child.send([kind, [[f.envelope.seq, f.envelope.payload] for f in batch]])
                await self._collect(child, set(by_seq), by_seq)
            return True
        except ChildReported as exc:
            seq = exc.seq if exc.seq in by_seq else batch[0].envelope.seq
            await self._answer_failure(by_seq[seq], exc.info)
            await self._give_back(by_seq, exclude=seq)
            return False
        except (ChildDied, trio.TooSlowError, ChildProtocolError, ValueError) as exc:
            rule: str | None
            if isinstance(exc, trio.TooSlowError):
                rule, message = "wall time", (
                    f"ran for more than {self.limits.wall_seconds} s on one fragment")
                await child.kill()
            elif isinstance(exc, ChildDied):
                rule, message = getattr(child, "breach", None) or describe_exit(
                    exc.returncode, limits=self.limits.to_dict())
            else:
                rule, message = "protocol", str(exc)
            pending = sorted(self.view.in_progress & set(by_seq))
            if pending:
                await self._answer_failure(by_seq[pending[0]],
                                           {"message": message, "rule": rule})
                await self._give_back(by_seq, exclude=pending[0])
            return False
        finally:
            self.view.in_progress -= set(by_seq)

    async def _collect(self, child: Child, pending: set[int], by_seq: dict[int, Fragment]) -> None:
        """Read the child's replies to a batch and send each back as a signed Result.

        Results that follow each other closely go back together (one write, and one
        read and merge on the chief); one that keeps the child busy longer than
        RESULT_FLUSH_SECONDS does not hold back those already done.
        """
        results: list[Result] = []
        size = 0
        try:
            while pending:
                reply = None
                if results:
                    with trio.move_on_after(RESULT_FLUSH_SECONDS):
                        reply = await child.receive()
                    if reply is None or size > RESULT_FLUSH_BYTES:
                        await self.link.send_many(results)
                        results, size = [], 0
                if reply is None:
                    with trio.fail_after(self.limits.wall_seconds):
                        reply = await child.receive()
                result = self._result(reply, pending, by_seq)
                results.append(result)
                size += len(result.envelope.payload)
        finally:
            if results:  # also before the failure answers of a batch that broke off
                await self.link.send_many(results)

    def _result(self, reply: list[Any], pending: set[int], by_seq: dict[int, Fragment]) -> Result:
        """The signed Result for one reply of the child."""
        if len(reply) < 3 or type(reply[1]) is not int:
            raise ChildProtocolError(f"a malformed reply {reply[0]!r}")
        seq = reply[1]
        if seq not in pending:
            raise ChildProtocolError(f"answered fragment {seq!r}, which it was not given")
        pending.discard(seq)
        self.view.in_progress.discard(seq)
        payload = reply[2]
        data = encode_parts(payload) if isinstance(payload, list) else payload
        if not isinstance(data, bytes):
            raise ChildProtocolError("a result must be bytes")
        fragment = by_seq[seq]
        envelope = Envelope.sign(self.service.node.identity, EnvelopeKind.RESULT,
                                 self.info.job_id, seq, data, ref=fragment.envelope.digest)
        out = reply[3] if len(reply) > 3 and isinstance(reply[3], str) else ""
        self.view.done += 1
        return Result(envelope=envelope, out=out[:200_000])

    async def _answer_failure(self, fragment: Fragment, info: dict[str, Any]) -> None:
        envelope = Envelope.sign(self.service.node.identity, EnvelopeKind.RESULT,
                                 self.info.job_id, fragment.envelope.seq, b"",
                                 ref=fragment.envelope.digest)
        line = info.get("line")
        failure = Failure(
            message=str(info.get("message") or "failed")[:4000],
            rule=(str(info["rule"])[:64] if info.get("rule") else None),
            traceback=str(info.get("traceback") or "")[:65000],
            file=(str(info["file"])[:1000] if info.get("file") else None),
            line=line if isinstance(line, int) and line >= 0 else None,
        )
        await self.link.send(Result(envelope=envelope, failure=failure))

    async def _give_back(self, by_seq: dict[int, Fragment], *, exclude: int) -> None:
        """Fragments of a lost batch that never ran: the chief hands them out again."""
        for seq, fragment in by_seq.items():
            if seq != exclude and seq in self.view.in_progress:
                await self._answer_failure(
                    fragment, {"message": "not run: the child was lost", "rule": NOT_RUN}
                )

    async def _fail_all(self, batch: list[Fragment], info: dict[str, Any]) -> None:
        for fragment in batch:
            await self._answer_failure(fragment, info)


class WorkerService:
    """All the work this node does for chiefs of its swarm."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.jobs: dict[bytes, WorkerJob] = {}
        self._chunks: dict[tuple[str, bytes], trio.MemorySendChannel[PackageChunk]] = {}
        self._fetch_locks: dict[bytes, trio.Lock] = {}

    def running(self) -> list[RunningJob]:
        """What runs on this machine now, for the owner to see."""
        return [job.view for job in self.jobs.values()]

    def slots_for(self, job: WorkerJob) -> int:
        return max(1, self.node.cores // max(1, len(self.jobs)))

    async def on_job_info(self, link: PeerLink, info: JobInfo, nursery: trio.Nursery) -> None:
        if not self.node.donating:
            await link.send(Error(code=ErrorCode.NOT_DONATING,
                                  reason="this node's owner has not switched donation on",
                                  job_id=info.job_id))
            return
        if info.job_id in self.jobs:
            return
        if len(self.jobs) >= max(1, self.node.cores):
            # Every job holds at least one child: no more jobs than donated cores. REFUSED
            # makes the chief offer it again on a later heartbeat.
            await link.send(Error(code=ErrorCode.REFUSED, job_id=info.job_id,
                                  reason=f"this node already works on {len(self.jobs)} "
                                  "jobs, one per core it donates"))
            return
        missing = missing_requirements(tuple(info.options.get("requires") or ()))
        if missing:
            await link.send(Error(code=ErrorCode.REFUSED, job_id=info.job_id,
                                  reason=f"this node lacks modules the job requires: "
                                  f"{', '.join(missing)}"))
            return
        job = WorkerJob(self, link, info)
        self.jobs[info.job_id] = job
        log.info("working on job %s (%s) for chief %s", info.name, info.job_id.hex(), link.short)
        self.node.emit("working", job=info.job_id.hex(), name=info.name, chief=link.peer_id,
                       running=True)
        nursery.start_soon(self._run_job, job)

    async def _run_job(self, job: WorkerJob) -> None:
        try:
            await job.run()
        finally:
            self.jobs.pop(job.info.job_id, None)
            self.node.emit("working", job=job.info.job_id.hex(), name=job.info.name,
                           chief=job.link.peer_id, running=False)

    async def on_fragment(self, link: PeerLink, fragment: Fragment) -> None:
        envelope = fragment.envelope
        job = self.jobs.get(envelope.job_id)
        if job is None or job.link is not link or not self.node.donating:
            await link.send(Error(code=ErrorCode.NOT_DONATING if not self.node.donating
                                  else ErrorCode.NOT_FOUND, reason="not working on that job",
                                  job_id=envelope.job_id, seq=envelope.seq))
            return
        if envelope.ref != job.info.package:
            await link.send(Error(code=ErrorCode.BAD_MESSAGE, reason="fragment for another package",
                                  job_id=envelope.job_id, seq=envelope.seq))
            return
        try:
            job.inbox_send.send_nowait(fragment)
        except trio.WouldBlock:
            await link.send(Error(code=ErrorCode.BUSY, reason="more fragments than credits",
                                  job_id=envelope.job_id, seq=envelope.seq))

    def on_cancel(self, link: PeerLink, cancel: Cancel) -> None:
        job = self.jobs.get(cancel.job_id)
        if job is not None and job.link is link:
            job.stop()

    def stop_all(self) -> None:
        """Donation was switched off: stop every job now."""
        for job in list(self.jobs.values()):
            job.stop()

    def lost(self, link: PeerLink) -> None:
        for job in list(self.jobs.values()):
            if job.link is link:
                job.stop()

    def on_chunk(self, link: PeerLink, chunk: PackageChunk) -> None:
        waiter = self._chunks.get((link.peer_id, chunk.package))
        if waiter is not None:
            try:
                waiter.send_nowait(chunk)
            except (trio.WouldBlock, trio.BrokenResourceError):
                pass

    async def download(
        self, link: PeerLink, digest: bytes, size: int, dest: Path, *, cap: int
    ) -> None:
        """Fetch content by hash from a peer, in chunks, into the new file ``dest``.

        A declared ``size`` above ``cap`` is refused before the first request; every
        chunk is hashed and written as it comes, so memory stays one chunk whatever the
        peer claims, and the hash is checked before the caller unpacks anything.
        ``dest`` is removed if anything fails.
        """
        if size > cap:
            raise WorkRefused(ErrorCode.REFUSED, f"the peer offers {size} bytes, more than the "
                              f"{cap} this node accepts for it")
        key = (link.peer_id, digest)
        send, receive = trio.open_memory_channel[PackageChunk](4)
        self._chunks[key] = send
        hasher = content_hasher()
        got = 0
        try:
            async with await trio.open_file(dest, "xb") as out:
                with trio.fail_after(FETCH_SECONDS):
                    while got < size:
                        await link.send(PackageRequest(package=digest, offset=got,
                                                       length=min(MAX_CHUNK, size - got)))
                        chunk = await receive.receive()
                        if (chunk.offset != got or chunk.total != size or not chunk.data
                                or len(chunk.data) > size - got):
                            raise WorkRefused(ErrorCode.BAD_MESSAGE,
                                              "the peer sent a wrong chunk")
                        hasher.update(chunk.data)
                        await out.write(chunk.data)
                        got += len(chunk.data)
            if hasher.digest() != digest:
                raise WorkRefused(ErrorCode.BAD_MESSAGE, "the content does not match its hash")
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(partial(dest.unlink, missing_ok=True))
            if isinstance(exc, trio.TooSlowError):
                raise WorkRefused(ErrorCode.BUSY, "the download timed out") from None
            raise
        finally:
            self._chunks.pop(key, None)

    async def fetch_package(self, link: PeerLink, info: JobInfo) -> Path:
        """The job's package, unpacked read-only in the cache; fetched once per hash.

        The submitter's signature is checked every time, cached or not: a chief could
        otherwise name a cached package as another submitter's, or another job's.
        """
        if info.kind == JobKind.SCRIPT and not plain_name(info.script or ""):
            raise WorkRefused(ErrorCode.REFUSED, "a job's script must be one plain file name "
                              "inside its package")
        lock = self._fetch_locks.setdefault(info.package, trio.Lock())
        async with lock:
            cache = self.node.package_cache
            target, tar = cache / info.package.hex(), cache / f"{info.package.hex()}.tar"
            fresh = not (target.is_dir() and tar.is_file())
            if fresh:
                part = cache / f".{info.package.hex()}.{secrets.token_hex(4)}.part"
                await self.download(link, info.package, info.package_size, part,
                                    cap=PACKAGE_DOWNLOAD_BYTES)
                tar = part
            try:
                await trio.to_thread.run_sync(_verify_package, tar, info)
                if fresh:
                    await trio.to_thread.run_sync(_install_package, part, target)
            finally:
                if fresh:
                    part.unlink(missing_ok=True)
            os.utime(target)  # newest: evicted last
            in_use = {job.info.package.hex() for job in self.jobs.values()} | {target.name}
            await trio.to_thread.run_sync(
                evict_oldest, cache, self.node.settings.packages_mb << 20, in_use)
            return target


#: The most a package download may be: the package size limit plus its tar headers.
PACKAGE_DOWNLOAD_BYTES = PACKAGE_BYTES + (MAX_ENTRIES + 2) * 1536


def _verify_package(tar: Path, info: JobInfo) -> None:
    """The package file is the one named, signed by the job's submitter for this job."""
    data = tar.read_bytes()
    if content_hash(data) != info.package:
        raise WorkRefused(ErrorCode.BAD_MESSAGE, "the package does not match its hash")
    try:
        info.package_envelope(data).verify(author=info.submitter, kind=EnvelopeKind.PACKAGE,
                                           job_id=info.job_id)
    except RemoteProtocolError as exc:
        raise WorkRefused(ErrorCode.BAD_MESSAGE, f"the package is not its submitter's: {exc}") \
            from None


def _install_package(part: Path, target: Path) -> None:
    """Unpack a checked package into the cache (folder ``target``, tar beside it)."""
    unpacked = target.with_name(f".unpack-{secrets.token_hex(4)}")
    try:
        unpack_tar(part, unpacked, max_bytes=PACKAGE_BYTES)
    except UnpackError as exc:
        raise WorkRefused(ErrorCode.REFUSED, f"the package was refused: {exc}") from None
    shutil.rmtree(target, ignore_errors=True)  # left by an older node, without its tar
    os.replace(unpacked, target)
    os.replace(part, target.with_name(f"{target.name}.tar"))
