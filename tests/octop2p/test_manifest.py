"""The manifest writer and verifier on their own: streaming, and hostile manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octop2p.engine._manifest import BUFFER_BYTES, MANIFEST, Provenance
from octop2p.engine._verify import verify_results
from protocol import NodeIdentity


async def sealed(tmp_path: Path, fragments: int) -> tuple[Path, NodeIdentity]:
    results = tmp_path / "results"
    (results / "sub").mkdir(parents=True)
    (results / "a.txt").write_text("a")
    (results / "sub" / "b.bin").write_bytes(b"\0" * 10)
    identity = NodeIdentity.generate()
    provenance = Provenance(tmp_path)
    for seq in range(fragments):
        provenance.add("map", seq, seq.to_bytes(16, "big"), ["N1", "N2"])
        # Lines go to the file as they come: the chief holds at most a buffer of them.
        assert sum(map(len, provenance._buffer)) <= BUFFER_BYTES
    await provenance.seal(results, identity, job_id="ab" * 16, name="j", package=b"\1" * 32)
    return results, identity


async def test_many_fragments_stream_through_a_file_and_verify(tmp_path: Path) -> None:
    results, identity = await sealed(tmp_path, 20_000)
    assert (tmp_path / "provenance.jsonl").stat().st_size > BUFFER_BYTES
    verdict = verify_results(results, [(identity.node_id, "this node")])
    assert verdict.ok, verdict.problem
    assert (verdict.fragments, verdict.files) == (20_000, 2)
    data = json.loads((results / MANIFEST).read_text())
    assert data["fragments"][5] == ["map", 5, (5).to_bytes(16, "big").hex(), ["N1", "N2"]]
    assert data["files"].keys() == {"a.txt", "sub/b.bin"}


async def test_an_empty_job_has_a_valid_manifest(tmp_path: Path) -> None:
    results, identity = await sealed(tmp_path, 0)
    assert json.loads((results / MANIFEST).read_text())["fragments"] == []
    assert verify_results(results, [(identity.node_id, "me")]).ok


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda t: t.replace('"a.txt"', '"../a.txt"'), "malformed header"),
    (lambda t: t.replace('"a.txt"', '"/etc/passwd"'), "malformed header"),
    (lambda t: t.split("\n", 1)[0] + "\n", "ends early"),
    (lambda t: t.replace('"fragment_count": 3', '"fragment_count": 2'), "header says 2"),
    (lambda t: t.rpartition('"signature"')[0], "no signature line"),
    (lambda t: "x" * 100, "not an octop2p manifest"),
    (lambda t: t.replace('["map",1,', '["map",1,[],'), "line 3 (a fragment's entry) is malformed"),
])
async def test_hostile_manifests_are_refused_with_the_reason(tmp_path: Path, edit,
                                                             problem: str) -> None:
    results, identity = await sealed(tmp_path, 3)
    manifest = results / MANIFEST
    manifest.write_text(edit(manifest.read_text()))
    verdict = verify_results(results, [(identity.node_id, "me")])
    assert not verdict.ok and problem in verdict.problem, verdict.problem


async def test_a_symlink_in_the_results_is_refused(tmp_path: Path) -> None:
    results, identity = await sealed(tmp_path, 1)
    (results / "link").symlink_to("/etc/passwd")
    verdict = verify_results(results, [(identity.node_id, "me")])
    assert not verdict.ok and "link is not a regular file" in verdict.problem
