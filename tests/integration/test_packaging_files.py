"""The files in packaging/ that a desktop, a service manager or a container engine reads,
checked by the validators Debian ships (desktop-file-utils, appstream, systemd) when they
are installed, and skipped, naming the missing tool, when they are not."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import octop2p
from tests.conftest import ROOT

PACKAGING = ROOT / "packaging"
# AppStream wants a reverse-DNS component id; the desktop file keeps the name the app
# gives Qt (QGuiApplication.setDesktopFileName), which window managers match it by.
COMPONENT_ID = "org.octop2p.Octop2p"
DESKTOP = PACKAGING / "linux" / "octop2p.desktop"
AUTOSTART = PACKAGING / "linux" / "octop2p-autostart.desktop"
METAINFO = PACKAGING / "linux" / f"{COMPONENT_ID}.metainfo.xml"
ICON = PACKAGING / "linux" / "octop2p.svg"
UNIT = PACKAGING / "systemd" / "octop2p-node.service"
DOCKERFILE = PACKAGING / "Dockerfile"


def tool(name: str) -> str:
    """The path of a validator, or skip the test saying which package brings it."""
    found = shutil.which(name)
    if found is None:
        package = {"desktop-file-validate": "desktop-file-utils", "appstreamcli": "appstream",
                   "systemd-analyze": "systemd"}[name]
        pytest.skip(f"{name} is not installed (Debian package {package})")
    return found


def check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}{done.stderr}"
    return done


def desktop_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


@pytest.mark.parametrize("path", [DESKTOP, AUTOSTART], ids=lambda p: p.name)
def test_desktop_files_validate(path: Path) -> None:
    done = check(tool("desktop-file-validate"), path)
    assert done.stdout.strip() == "", done.stdout  # not even a hint


def test_startup_wm_class_is_the_desktop_file_name() -> None:
    assert desktop_entry(DESKTOP)["StartupWMClass"] == DESKTOP.name.removesuffix(".desktop")


def test_the_app_tells_qt_the_same_names() -> None:
    """Wayland matches a window to its desktop file by Qt's desktop file name, X11 by
    WM_CLASS, whose class Qt takes from the application name."""
    source = ROOT / "gui" / "_app.py"
    names = dict(re.findall(r'set(DesktopFileName|ApplicationName)\("([^"]*)"\)',
                            source.read_text() if source.exists() else ""))
    if not names:
        pytest.skip("gui/_app.py does not name the app to Qt (yet)")
    wm_class = desktop_entry(DESKTOP)["StartupWMClass"]
    assert names == {"DesktopFileName": wm_class, "ApplicationName": wm_class}


def test_autostart_starts_the_app_hidden_in_the_tray() -> None:
    entry = desktop_entry(AUTOSTART)
    assert entry["Exec"].split() == ["octop2p", "gui", "--hidden"]
    assert entry["Icon"] == desktop_entry(DESKTOP)["Icon"] == ICON.stem


def test_metainfo_validates() -> None:
    check(tool("appstreamcli"), "validate", "--no-net", METAINFO)


def test_installed_tree_validates(tmp_path: Path) -> None:
    """metainfo, desktop file and icon together, where a distribution installs them."""
    appstreamcli = tool("appstreamcli")
    share = tmp_path / "usr" / "share"
    for sub, path in (("metainfo", METAINFO), ("applications", DESKTOP),
                      ("icons/hicolor/scalable/apps", ICON)):
        (share / sub).mkdir(parents=True)
        shutil.copy(path, share / sub)
    check(appstreamcli, "validate-tree", "--no-net", tmp_path)


def test_metainfo_names_the_desktop_file_and_this_version() -> None:
    root = ET.parse(METAINFO).getroot()
    assert root.findtext("id") == COMPONENT_ID
    assert root.findtext("launchable") == DESKTOP.name
    assert root.find("releases/release").get("version") == octop2p.__version__


def test_icon_is_an_svg() -> None:
    root = ET.parse(ICON).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox") == "0 0 128 128"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_is_hardened_and_lets_the_sandbox_work() -> None:
    s = unit_settings()
    assert s["User"] == ["octop2p"] and s["StateDirectory"] == ["octop2p"]
    sysusers = (PACKAGING / "systemd" / "octop2p.sysusers").read_text()
    assert re.search(r"^u octop2p - .* /var/lib/octop2p ", sysusers, re.MULTILINE)
    assert s["Environment"] == ["OCTOP2P_HOME=%S/octop2p"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    families = s["RestrictAddressFamilies"][0].split()
    assert "AF_NETLINK" in families and "AF_PACKET" not in families  # zeroconf needs netlink
    # The sandbox makes a user and a network namespace per child, then loads its filters.
    assert set(s["RestrictNamespaces"][0].split()) == {"user", "net"}
    assert "PrivateUsers" not in s and "MemoryDenyWriteExecute" not in s
    denied = s["SystemCallFilter"][0]
    assert denied.startswith("~") and not {"@process", "@privileged"} & set(denied[1:].split())
    assert s["Nice"] == ["19"] and s["CPUSchedulingPolicy"] == ["idle"]
    assert s["IOSchedulingClass"] == ["idle"]
    # Consent: the unit never turns donation on; config.toml does.
    assert "--donate" not in s["ExecStart"][0]


def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointed at an octop2p that exists here."""
    analyze = tool("systemd-analyze")
    installed = Path(sys.executable).with_name("octop2p")
    if not installed.exists():
        pytest.skip(f"no octop2p script beside {sys.executable} to point ExecStart at")
    text = UNIT.read_text().replace("/opt/octop2p/bin/octop2p", str(installed))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_dockerfile_runs_a_headless_node_as_non_root() -> None:
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    final_stage = text.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER\s+(\S+)", final_stage, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "PySide6" not in text and "[gui" not in text  # no Qt in the image
    assert 'CMD ["node"]' in final_stage
    install = (ROOT / "docs" / "install.md").read_text()
    assert "--network host" in install and "mDNS" in install
