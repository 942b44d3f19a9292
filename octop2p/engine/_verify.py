"""``octop2p verify``: check a results folder or tarball against its signed manifest.

Results may come from a machine the user does not control, so everything here is
hostile input: the manifest is read line by line with bounded lines, every path it
names is only compared with the files actually found (never opened from the manifest's
word), and a tarball is read member by member without being unpacked.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from octop2p.engine._manifest import FORMAT, MANIFEST, SIGNED_PREFIX, file_digest
from octop2p.engine._results import MARKER
from octop2p.errors import UsageError
from protocol import CodeError, NodeId, verify_signature

#: The header line holds the file list: generous, but bounded.
MAX_HEADER = 64 << 20
MAX_LINE = 64 << 10  # one fragment line
_SIGNATURE = re.compile(rb'"signature": "([0-9a-f]{128})"\}\n?')
_HEX = re.compile(r"[0-9a-f]{64}")


class ManifestMismatch(Exception):
    """The results do not match their manifest, or its signature is not the chief's."""


@dataclass
class Verdict:
    """What ``verify`` found."""

    ok: bool
    problem: str = ""
    job: str = ""
    name: str = ""
    chief: str = ""
    signer: str = ""  # who the chief is to this home ("this node", "swarm member", ...)
    fragments: int = 0
    files: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line verdict."""
        if not self.ok:
            return f"NOT VERIFIED: {self.problem}"
        return (f"verified: {self.files} files and {self.fragments} accepted results of job "
                f"{self.name} ({self.job[:12]}), signed by chief {self.chief} ({self.signer})")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problem": self.problem, "job": self.job, "name": self.name,
                "chief": self.chief, "signer": self.signer, "fragments": self.fragments,
                "files": self.files}


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return (bool(name) and "\0" not in name and not path.is_absolute()
            and ".." not in path.parts and path.as_posix() == name)


def _read_manifest(stream: IO[bytes]) -> tuple[dict[str, Any], int]:
    """The checked header and the number of fragment lines; raises ManifestMismatch."""
    h = hashlib.blake2b(digest_size=32)
    first = stream.readline(MAX_HEADER)
    suffix = b', "fragments": [\n'
    if not first.endswith(suffix):
        raise ManifestMismatch(f"{MANIFEST} is not an octop2p manifest (or its header was cut)")
    h.update(first)
    try:
        header = json.loads(first[: -len(suffix)] + b"}")
    except ValueError as exc:
        raise ManifestMismatch(f"{MANIFEST} has a malformed header: {exc}") from None
    _check_header(header)
    count = 0
    while True:
        line = stream.readline(MAX_LINE)
        if line == b"],\n":
            h.update(line)
            break
        if not line.endswith(b"\n"):
            raise ManifestMismatch(f"{MANIFEST} ends early or has an over-long line "
                                   f"(after {count} fragments)")
        h.update(line)
        try:
            kind, seq, digest, voters = json.loads(line.rstrip(b",\n"))
            if not (isinstance(kind, str) and isinstance(seq, int) and isinstance(digest, str)
                    and isinstance(voters, list)):
                raise ValueError("wrong field types")
        except (ValueError, TypeError) as exc:
            raise ManifestMismatch(
                f"{MANIFEST}: line {count + 2} (a fragment's entry) is malformed ({exc})") from None
        count += 1
    last = stream.read(200)
    found = _SIGNATURE.fullmatch(last)
    if found is None:
        raise ManifestMismatch(f"{MANIFEST} has no signature line where it should end")
    if count != header["fragment_count"]:
        raise ManifestMismatch(f"{MANIFEST} lists {count} fragments, its header says "
                               f"{header['fragment_count']}")
    key = bytes.fromhex(header["chief"]["public_key"])
    if not verify_signature(key, SIGNED_PREFIX + h.digest(), bytes.fromhex(found[1].decode())):
        raise ManifestMismatch(
            f"the signature of {MANIFEST} does not match its content and the chief key it "
            "names: it was changed after the chief signed it, or signed by another key")
    return header, count


def _check_header(header: Any) -> None:
    try:
        assert isinstance(header, dict) and header["octop2p_manifest"] == FORMAT
        chief = header["chief"]
        key = bytes.fromhex(chief["public_key"])
        assert len(key) == 32 and isinstance(header["fragment_count"], int)
        files = header["files"]
        assert isinstance(files, dict)
        for name, digest in files.items():
            assert isinstance(digest, str) and _HEX.fullmatch(digest), name
            assert _safe_name(name) and name not in (MANIFEST, MARKER), name
        claimed = NodeId.parse(chief["id"])
    except (AssertionError, KeyError, TypeError, ValueError, CodeError) as exc:
        raise ManifestMismatch(f"{MANIFEST} has a malformed header ({exc!r})") from None
    if NodeId.from_public_key(key) != claimed:
        raise ManifestMismatch(f"{MANIFEST} names chief {chief['id']}, but the key it gives "
                               "is another node's")


def _compare(listed: dict[str, str], found: dict[str, str]) -> None:
    for name, digest in sorted(listed.items()):
        if name not in found:
            raise ManifestMismatch(f"{name} is listed in the manifest but missing")
        if found[name] != digest:
            raise ManifestMismatch(f"{name} does not match the manifest (its content changed)")
    extra = sorted(set(found) - set(listed))
    if extra:
        raise ManifestMismatch(f"{extra[0]} is not in the manifest (a file was added)")


def _folder_files(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if name in (MANIFEST, MARKER) or (path.is_dir() and not path.is_symlink()):
            continue
        if path.is_symlink() or not path.is_file():
            raise ManifestMismatch(f"{name} is not a regular file")
        found[name] = file_digest(path)
    return found


def _check_folder(root: Path) -> tuple[dict[str, Any], int, dict[str, str]]:
    manifest = root / MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        raise ManifestMismatch(f"{root} has no {MANIFEST}: these results cannot be verified")
    with open(manifest, "rb") as stream:
        header, count = _read_manifest(stream)
    return header, count, _folder_files(root)


def _check_tarball(path: Path) -> tuple[dict[str, Any], int, dict[str, str]]:
    found: dict[str, str] = {}
    header: dict[str, Any] | None = None
    count = 0
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isdir():
                    continue
                if not member.isfile() or not _safe_name(name):
                    raise ManifestMismatch(f"{member.name} is not a regular file in the results")
                stream = tar.extractfile(member)
                assert stream is not None
                if name == MANIFEST:
                    header, count = _read_manifest(stream)  # type: ignore[arg-type]
                    continue
                h = hashlib.blake2b(digest_size=32)
                while chunk := stream.read(1 << 20):
                    h.update(chunk)
                found[name] = h.hexdigest()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ManifestMismatch(f"{path} is not a readable .tar.gz: {exc}") from None
    if header is None:
        raise ManifestMismatch(f"{path} has no {MANIFEST}: these results cannot be verified")
    return header, count, found


def verify_results(path: Path, known: Iterable[tuple[NodeId, str]],
                   chief: str | None = None) -> Verdict:
    """Check the results at ``path`` (a folder or .tar.gz).

    The signer must be ``chief`` (a node id) when given, else one of ``known`` (node id,
    what it is to this home): a manifest re-signed by a stranger's key is refused."""
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if not path.is_dir() and not path.name.endswith(".tar.gz"):
        raise UsageError(f"{path} is neither a results folder nor a .tar.gz")
    verdict = Verdict(ok=False)
    try:
        header, count, found = (_check_folder(path) if path.is_dir() else _check_tarball(path))
        verdict.job, verdict.name = str(header.get("job", "")), str(header.get("name", ""))
        verdict.chief, verdict.fragments = header["chief"]["id"], count
        verdict.files, verdict.manifest = len(found), header
        signer = NodeId.parse(verdict.chief)
        if chief is not None:
            if not verdict.chief.startswith(chief.upper()):
                raise ManifestMismatch(f"signed by node {verdict.chief}, not by {chief}")
            verdict.signer = "the chief you named"
        else:
            names = dict(known)
            if signer not in names:
                raise ManifestMismatch(
                    f"signed by node {verdict.chief}, which this home does not know (neither "
                    "this node nor a pinned swarm member); if you trust it, pass --chief ID")
            verdict.signer = names[signer]
        _compare(header["files"], found)
    except ManifestMismatch as exc:
        verdict.problem = str(exc)
        return verdict
    verdict.ok = True
    return verdict
