"""A donor starts a job's work child as soon as the package is here, not when the first
fragment arrives: a real fork server and sandboxed child, a chief that is a recording
link. The child says when it imported the job's code; that is before the fragment."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import trio

from octop2p.engine._children import open_fork_server
from octop2p.engine._limits import Limits
from octop2p.engine._slot import child_spec
from octop2p.engine._unpack import unpack_tar
from octop2p.net._earlychild import EarlyMaker
from protocol import (
    Envelope,
    EnvelopeKind,
    Fragment,
    JobInfo,
    Message,
    Result,
    Task,
    WorkRequest,
)
from tests.octop2p.test_donor import SUBMITTER, Chief, _service, offer_folder

PROCESS = "import time\n\nLOADED = time.time()\n\n\ndef process(x):\n    return LOADED\n"


class Recording(Chief):
    """The chief's link, sending several messages in one call as a PeerLink does."""

    async def send_many(self, messages: list[Message]) -> None:
        for message in messages:
            await self.send(message)


def offer(tmp_path: Path) -> tuple[JobInfo, bytes]:
    job = tmp_path / "job"
    job.mkdir()
    (job / "job.toml").write_text('name = "early"\n')
    (job / "Split.py").write_text("def splitter():\n    yield 1\n")
    (job / "Process.py").write_text(PROCESS)
    (job / "Merge.py").write_text("def merger(result, results_dir):\n    pass\n")
    return offer_folder(job)


async def until(chief: Recording, kind: type[Message]) -> Message:
    while not any(isinstance(m, kind) for m in chief.sent):
        await trio.sleep(0.01)
    return next(m for m in chief.sent if isinstance(m, kind))


async def test_the_work_child_imports_the_job_before_the_first_fragment(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fork_server() as fs, trio.open_nursery() as nursery:
            service, _ = _service(tmp_path, forkserver=fs, cores=1)
            info, tar = offer(tmp_path)
            chief = Recording(service, tar)
            await service.on_job_info(chief, info, nursery)  # type: ignore[arg-type]
            await until(chief, WorkRequest)  # the package is here, the slot asks for work
            await trio.sleep(1.0)  # the chief takes its time: the child loads meanwhile
            sent_at = time.time()
            await service.on_fragment(chief, Fragment(  # type: ignore[arg-type]
                task=Task.PROCESS, envelope=Envelope.sign(
                    SUBMITTER, EnvelopeKind.FRAGMENT, info.job_id, 0, pickle.dumps(1),
                    ref=info.package)))
            result = await until(chief, Result)
            assert isinstance(result, Result) and result.failure is None
            loaded = pickle.loads(result.envelope.payload)
            nursery.cancel_scope.cancel()
    assert loaded < sent_at - 0.5  # imported while no fragment was there yet


async def test_early_children_no_slot_took_are_closed(tmp_path: Path) -> None:
    """A job that ends before its first fragment leaves no child behind."""
    _, tar = offer(tmp_path)
    unpack_tar(tar, tmp_path / "pkg", max_bytes=1 << 20)
    spec = child_spec("work", kind="package", job_dir=tmp_path / "pkg", script=None,
                      results_dir=None, limits=Limits(), options={"partitions": 1},
                      layers=frozenset())
    with trio.fail_after(30):
        async with open_fork_server() as fs:
            maker = EarlyMaker(fs, spec, Limits(), None)
            async with trio.open_nursery() as nursery:
                maker.start_early(nursery, 2)
            children = [early.child for early in maker._early]
            assert all(child is not None and not child.dead for child in children)
            await maker.aclose()
            assert all(child is not None and child.dead for child in children)
