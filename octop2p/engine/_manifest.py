"""A job's provenance: ``manifest.json`` in its results, signed by its chief.

While the job runs, :class:`Provenance` appends one line per accepted result (its kind,
sequence number, content digest and the voters that agreed on it) to a file in the
job's work folder, a small buffer at a time, so a job of a million fragments costs the
chief no memory for it. When the job is done, :meth:`Provenance.seal` writes
``manifest.json`` into the results folder: a header (job, package, chief, a BLAKE2b-256
digest of every results file), the fragment lines, and last the chief's Ed25519
signature over everything before it. ``octop2p verify`` (:mod:`octop2p.engine._verify`)
checks it. The format is documented in ``docs/jobs.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from octop2p.engine._journal import JsonLists

if TYPE_CHECKING:
    from octop2p.engine._package import JobSpec
    from protocol import NodeIdentity

MANIFEST = "manifest.json"
FORMAT = 1
#: What the chief signs: this prefix, then the BLAKE2b-256 of the manifest's bytes before
#: its signature line. The prefix keeps a manifest signature from ever meaning anything
#: else that a node signs (handshakes, envelopes).
SIGNED_PREFIX = b"octop2p manifest v1\n"
FRAGMENT_FIELDS = ["kind", "seq", "digest", "voters"]
#: Fragment lines wait in memory up to this many bytes, then go to the file together.
BUFFER_BYTES = 64 << 10
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """BLAKE2b-256 of a file's bytes, in hex (what ``b2sum -l 256`` prints)."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def results_files(results_dir: Path) -> dict[str, str]:
    """Every regular file under ``results_dir`` (but the manifest): relative path -> digest.

    Symlinks are neither followed nor listed: a merger cannot make them, and the packer
    leaves them out."""
    files: dict[str, str] = {}
    folders = [results_dir]
    while folders:
        with os.scandir(folders.pop()) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    name = Path(entry.path).relative_to(results_dir).as_posix()
                    if name != MANIFEST:
                        files[name] = file_digest(Path(entry.path))
    return dict(sorted(files.items()))


def package_hash_of(spec: JobSpec) -> bytes:
    """The content hash of ``spec``'s package, as a chief would send it to workers."""
    from octop2p.engine._package import pack_package
    from protocol import content_hash  # crypto loads once the job is done

    return content_hash(pack_package(spec))


class Provenance:
    """The accepted results of one job, streamed to ``work_dir/provenance.jsonl``.

    ``add`` is the runner's ``on_accepted`` hook; ``seal`` writes the signed manifest."""

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / "provenance.jsonl"
        self.count = 0
        self._buffer: list[str] = []
        self._buffered = 0
        self._voters = JsonLists(separators=(",", ":"))

    def add(self, kind: str, seq: int, digest: bytes, voters: list[str]) -> None:
        """One accepted result (called on the event loop: appends, rarely writes)."""
        # What json.dumps([kind, seq, digest.hex(), voters], separators=(",", ":"))
        # writes (kind is a phase's name), the voters encoded once for the job.
        line = f'["{kind}",{seq:d},"{digest.hex()}",{self._voters.encode(voters)}]'
        self._buffer.append(line)
        self._buffered += len(line) + 2
        self.count += 1
        if self._buffered >= BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(f"{line}\n" for line in self._buffer))
            self._buffer.clear()
            self._buffered = 0

    async def seal(self, results_dir: Path, identity: NodeIdentity, *, job_id: str,
                   name: str, package: bytes) -> Path:
        """Write ``results_dir/manifest.json``, signed by ``identity`` (off the event loop)."""
        self._flush()
        header = {
            "octop2p_manifest": FORMAT,
            "job": job_id,
            "name": name,
            "package": package.hex(),
            "chief": {"id": str(identity.node_id), "public_key": identity.public_key.hex()},
            "created": round(time.time(), 3),
            "fragment_count": self.count,
            "fragment_fields": FRAGMENT_FIELDS,
        }
        return await trio.to_thread.run_sync(self._write, results_dir, identity, header)

    def _write(self, results_dir: Path, identity: NodeIdentity, header: dict[str, Any]) -> Path:
        header["files"] = results_files(results_dir)
        target = results_dir / MANIFEST
        h = hashlib.blake2b(digest_size=32)

        def put(out: Any, text: str) -> None:
            data = text.encode("utf-8")
            h.update(data)
            out.write(data)

        with open(target, "wb") as out:
            # One header line, one line per fragment: a verifier reads it line by line.
            put(out, json.dumps(header, sort_keys=True)[:-1] + ', "fragments": [\n')
            if self.path.exists():
                with open(self.path, encoding="utf-8") as lines:
                    for i, line in enumerate(lines):
                        put(out, ("" if i == 0 else ",\n") + line.rstrip("\n"))
                put(out, "\n")
            put(out, "],\n")
            signature = identity.sign(SIGNED_PREFIX + h.digest())
            out.write(f'"signature": "{signature.hex()}"}}\n'.encode("ascii"))
        return target
