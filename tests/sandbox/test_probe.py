"""probe(): every layer reported, fast, and the caller left unconfined."""

from __future__ import annotations

import os
import socket
import time

from sandbox import ALL_LAYERS, LayerStatus, probe


def test_probe_reports_every_layer_quickly() -> None:
    started = time.monotonic()
    status = probe()
    assert time.monotonic() - started < 0.5
    assert set(status) == ALL_LAYERS
    for layer, found in status.items():
        assert isinstance(found, LayerStatus)
        assert found.detail, layer  # a reason either way, for `octop2p doctor`


def test_probe_leaves_the_caller_free() -> None:
    probe()
    with socket.socket() as s:  # no seccomp filter here
        s.bind(("127.0.0.1", 0))
    with open("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd") as f:
        f.read(1)  # no Landlock here
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    assert fields["NoNewPrivs"].strip() == "0"
    assert fields["Seccomp"].strip() == "0"


def test_probe_explains_what_works_here() -> None:
    status = probe()
    if status["landlock"].available:
        assert status["landlock"].detail.startswith("ABI ")
    if status["seccomp"].available:
        assert "EPERM" in status["seccomp"].detail
    for found in status.values():
        if not found.available:
            assert len(found.detail) > 20  # a sentence a user can act on
