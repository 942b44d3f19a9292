"""Signed manifests through the real CLI: `octop2p run`, a networked job, `octop2p verify`,
and tampering of every kind caught."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from octop2p.engine._manifest import SIGNED_PREFIX
from protocol import NodeIdentity
from tests.conftest import EXAMPLES, run_cli
from tests.integration.nodes import NodeProcess, make_swarm


def verify(results: Path, home: Path, *extra: str) -> tuple[int, dict, str]:
    proc = run_cli("verify", results, "--home", home, "--json", *extra)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}, proc.stderr


def resign(manifest: Path, identity: NodeIdentity, *, take_key: bool) -> None:
    """Sign ``manifest`` again with ``identity`` (as a forger would, after an edit);
    ``take_key`` also puts the forger's key and id in the header."""
    text = manifest.read_text()
    body, _, _ = text.rpartition('"signature": ')
    if take_key:
        header, rest = body.split("\n", 1)
        data = json.loads(header.removesuffix(', "fragments": [') + "}")
        data["chief"] = {"id": str(identity.node_id), "public_key": identity.public_key.hex()}
        body = json.dumps(data, sort_keys=True)[:-1] + ', "fragments": [\n' + rest
    digest = hashlib.blake2b(body.encode(), digest_size=32).digest()
    signature = identity.sign(SIGNED_PREFIX + digest).hex()
    manifest.write_text(body + f'"signature": "{signature}"}}\n')


def edit_digest(manifest: Path) -> None:
    """Change one hex digit of fragment 7's digest."""
    text = manifest.read_text()
    i = text.index('"process",7,"') + len('"process",7,"')
    manifest.write_text(text[:i] + ("1" if text[i] == "0" else "0") + text[i + 1:])


@pytest.fixture(scope="module")
def run_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One `octop2p run` of primes: (its results folder, its home)."""
    tmp = tmp_path_factory.mktemp("run")
    home, out = tmp / "home", tmp / "out"
    proc = run_cli("run", EXAMPLES / "primes", "-w", "2", "-o", out, "--home", home)
    assert proc.returncode == 0, proc.stderr
    yield out, home


def test_a_runs_manifest_is_signed_by_the_home_and_verifies(run_results, tmp_path) -> None:
    out, home = run_results
    manifest = json.loads((out / "manifest.json").read_text())  # plain JSON for any reader
    node_id = run_cli("id", "--json", "--home", home)
    assert manifest["chief"]["id"] == json.loads(node_id.stdout)["id"]
    assert manifest["name"] == "primes" and manifest["fragment_count"] == 100
    assert sorted(f[1] for f in manifest["fragments"]) == list(range(100))
    assert all(f[0] == "process" and f[3][0].startswith("local-") for f in manifest["fragments"])
    count = (out / "count.txt").read_bytes()
    assert manifest["files"]["count.txt"] == hashlib.blake2b(count, digest_size=32).hexdigest()
    code, report, err = verify(out, home)
    assert code == 0, err
    assert report["ok"] and report["signer"] == "this node" and report["files"] == 2
    # Another home does not know this node: only with --chief does it vouch for it.
    code, report, _ = verify(out, tmp_path / "stranger")
    assert code == 1 and "does not know" in report["problem"]
    code, _, _ = verify(out, tmp_path / "stranger", "--chief", manifest["chief"]["id"][:7])
    assert code == 0


def test_tampered_file_extra_file_and_missing_file_are_named(run_results, tmp_path) -> None:
    out, home = run_results
    for change, expected in (
        (lambda d: (d / "count.txt").write_text("664580"), "count.txt does not match"),
        (lambda d: (d / "bonus.txt").write_text("x"), "bonus.txt is not in the manifest"),
        (lambda d: (d / "summary.json").unlink(), "summary.json is listed in the manifest "
                                                  "but missing"),
    ):
        copy = tmp_path / f"copy{len(expected)}"
        shutil.copytree(out, copy)
        change(copy)
        code, report, err = verify(copy, home)
        assert code == 1 and not report["ok"], err
        assert expected in report["problem"] and expected in err


def test_tampered_manifest_and_a_forgers_signature_are_refused(run_results, tmp_path) -> None:
    out, home = run_results
    forger = NodeIdentity.generate()
    cases = {
        # One fragment's digest changed: the chief's signature no longer holds.
        "edited": edit_digest,
        # Edited, then re-signed by another key under the chief's name.
        "resigned": lambda m: resign(m, forger, take_key=False),
        # Re-signed by another key that also names itself as the chief.
        "forged": lambda m: resign(m, forger, take_key=True),
    }
    problems = {}
    for name, change in cases.items():
        copy = tmp_path / name
        shutil.copytree(out, copy)
        before = (copy / "manifest.json").read_bytes()
        change(copy / "manifest.json")
        assert (copy / "manifest.json").read_bytes() != before
        code, report, _ = verify(copy, home)
        assert code == 1, name
        problems[name] = report["problem"]
    assert "signature of manifest.json does not match" in problems["edited"]
    assert "signature of manifest.json does not match" in problems["resigned"]
    assert f"signed by node {forger.node_id}, which this home does not know" in problems["forged"]


def test_a_tarball_verifies_and_a_changed_member_is_caught(tmp_path) -> None:
    home, out = tmp_path / "home", tmp_path / "r.tar.gz"
    proc = run_cli("run", EXAMPLES / "montecarlo_pi", "-w", "1", "-o", out, "--home", home)
    assert proc.returncode == 0, proc.stderr
    assert verify(out, home)[0] == 0
    # The same members, one of them changed.
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(out) as src, tarfile.open(forged, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name != "manifest.json":
                data = data + b" "
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    code, report, _ = verify(forged, home)
    assert code == 1 and "does not match the manifest" in report["problem"], report
    assert verify(tmp_path / "none.tar.gz", home)[0] == 2


def test_a_networked_jobs_manifest_names_the_donor_and_verifies(tmp_path: Path) -> None:
    chief_home, donor_home = make_swarm(tmp_path, ["chief", "donor"])
    chief = NodeProcess(chief_home, "--no-discovery", "--no-donate")
    donor = None
    try:
        donor = NodeProcess(donor_home, "--no-discovery", "--donate", "--cores", "1",
                            "--peer", chief.address)
        chief.wait_for_peers(1, donating=True)
        out = tmp_path / "out.tar.gz"
        proc = chief.cli("submit", str(EXAMPLES / "primes"), "-o", str(out))
        assert proc.returncode == 0, proc.stderr + chief.read_log()
        with tarfile.open(out) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest["chief"]["id"] == chief.id
        assert {tuple(f[3]) for f in manifest["fragments"]} == {(donor.id,)}
        assert manifest["fragment_count"] == 100
        status = json.loads(chief.cli("status", "--json").stdout)
        assert manifest["job"] == status[0]["job"]
        # The chief vouches for itself; the donor knows the chief as a pinned member.
        assert verify(out, chief_home)[1]["signer"] == "this node"
        code, report, err = verify(out, donor_home)
        assert code == 0 and report["signer"] == "a pinned swarm member", err
    finally:
        chief.stop()
        if donor is not None:
            donor.stop()
