"""Config: defaults, config.toml, flag overrides, refusals with "did you mean", the default file."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from octop2p._config import (
    CONFIG_KEYS,
    DEFAULT_PORT,
    Config,
    ConfigError,
    default_toml,
    parse_address,
)
from octop2p._home import Home
from octop2p.engine._limits import Limits, OptionError
from octop2p.errors import UsageError

CPUS = os.cpu_count() or 1


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.create()
    return home


def write(home: Home, text: str) -> None:
    home.config_path.write_text(text)


def test_defaults() -> None:
    config = Config()
    assert config.listen_host == "0.0.0.0"
    assert config.listen_port == DEFAULT_PORT == 7878
    assert config.peers == ()
    assert config.discovery is True
    assert config.donate is False  # consent is opt-in
    assert config.cores == CPUS
    assert config.cpu_percent == 100
    assert config.unconfined_trusted_swarm is False
    assert config.limits == Limits()
    assert config.name and len(config.name) <= 63
    assert set(CONFIG_KEYS) == {f.name for f in dataclasses.fields(Config)}


def test_load_without_a_file_gives_the_defaults(home: Home) -> None:
    assert Config.load(home) == Config()
    assert Config.load(home.path) == Config()  # a plain path does as well


def test_toml_overrides_defaults_and_flags_override_toml(home: Home) -> None:
    write(
        home,
        'name = "lab-3"\nlisten_port = 9000\npeers = ["10.0.0.2:7878", "pc.lan"]\n'
        "donate = true\ncpu_percent = 50\n[limits]\nmemory_mb = 256\n",
    )
    config = Config.load(home)
    assert (config.name, config.listen_port, config.donate, config.cpu_percent) == (
        "lab-3",
        9000,
        True,
        50,
    )
    assert config.peers == ("10.0.0.2:7878", "pc.lan")
    assert config.limits == Limits(memory_mb=256)  # other limits keep their defaults
    flagged = Config.load(home, donate=False, listen_port=0, cores=1, peers=None, name=None)
    assert (flagged.donate, flagged.listen_port, flagged.cores) == (False, 0, 1)
    assert flagged.name == "lab-3"  # None: the flag was not given
    assert flagged.peers == config.peers


def test_flag_limits_merge_into_the_files(home: Home) -> None:
    write(home, "[limits]\nmemory_mb = 256\n")
    config = Config.load(home, limits={"cpu_seconds": 5})
    assert config.limits == Limits(memory_mb=256, cpu_seconds=5)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("donat = true\n", 1, "donat: unknown option; did you mean 'donate'?"),
        (
            "\n\n[limits]\nmemory = 3\n",
            4,
            "limits.memory: unknown limit; did you mean 'memory_mb'?",
        ),
        ("memory_mb = 3\n", 1, "put it in the [limits] table"),
        ("cores = '2'\n", 1, "cores: expected a whole number, got a string"),
        ("cores = 0\n", 1, "cores: must be 1 or more"),
        (f"cores = {CPUS + 1}\n", 1, f"more than this machine's {CPUS} cores"),
        ("cpu_percent = 101\n", 1, "cpu_percent: a share of 1 to 100"),
        ("listen_port = 70000\n", 1, "listen_port: a port is 0 to 65535"),
        ("listen_port = true\n", 1, "listen_port: expected a port number, got a boolean"),
        ("listen_host = 'not a host'\n", 1, "neither an IP address nor a host name"),
        ("donate = 'yes'\n", 1, "donate: expected true or false"),
        ("peers = 'a:1'\n", 1, 'peers: expected a list like ["HOST:PORT"]'),
        ("peers = ['a:1:2']\n", 1, "neither an IP address nor a host name"),
        ("peers = ['a:http']\n", 1, "the port must be a number"),
        ("peers = ['a:0']\n", 1, "a port is 1 to 65535"),
        ("name = ''\n", 1, "name: '': use 1 to 63 printable characters"),
        (f"name = '{'x' * 64}'\n", 1, "use 1 to 63 printable characters"),
        ("limits = 3\n", 1, "limits: expected a table of limits"),
        ("donate = true\ncores = = 2\n", 2, "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_with_file_line_and_reason(
    home: Home, text: str, line: int, message: str
) -> None:
    write(home, text)
    with pytest.raises(ConfigError) as info:
        Config.load(home)
    assert str(info.value).startswith(f"{home.config_path}:{line}: ")
    assert message in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"donat": True}, "donat: unknown option; did you mean 'donate'?"),
        ({"cores": 0}, "cores: must be 1 or more"),
        ({"listen_port": -1}, "a port is 0 to 65535"),
        ({"limits": {"wall_secs": 3}}, "did you mean 'wall_seconds'?"),
    ],
)
def test_bad_flags_are_refused(home: Home, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        Config.load(home, **overrides)
    assert "(on the command line)" in str(info.value)
    assert info.value.exit_code == 2


def test_no_bad_config_can_be_made_directly() -> None:
    with pytest.raises(OptionError, match="cpu_percent"):
        Config(cpu_percent=0)
    assert Config(peers=["h:1"]).peers == ("h:1",)  # type: ignore[arg-type]


def test_unconfined_is_logged_loudly(home: Home, caplog: pytest.LogCaptureFixture) -> None:
    write(home, "unconfined_trusted_swarm = true\n")
    with caplog.at_level(logging.WARNING, logger="octop2p._config"):
        assert Config.load(home).unconfined_trusted_swarm
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "UNCONFINED" in record.getMessage()
    assert str(home.config_path) in record.getMessage()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pc.lan:9000", ("pc.lan", 9000)),
        ("10.0.0.2", ("10.0.0.2", DEFAULT_PORT)),
        ("[fe80::1]:7000", ("fe80::1", 7000)),
        ("[::1]", ("::1", DEFAULT_PORT)),
        ("::1", ("::1", DEFAULT_PORT)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "[::1", "[::1]x", "a b:1", "h:99999", "-h:1"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(OptionError):
        parse_address(text)


configs = st.builds(
    Config,
    name=st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P"], include_characters=" "),
        max_size=63,
    ).filter(str.strip),
    listen_port=st.integers(0, 65535),
    peers=st.lists(st.sampled_from(["a:1", "10.1.2.3:7878", "[::1]:5", "pc.lan"])).map(tuple),
    discovery=st.booleans(),
    donate=st.booleans(),
    cores=st.integers(1, CPUS),
    cpu_percent=st.integers(1, 100),
    unconfined_trusted_swarm=st.booleans(),
    limits=st.builds(Limits, memory_mb=st.integers(1, 2**40), threads=st.integers(1, 64)),
)


@given(configs)
def test_to_toml_round_trips(config: Config) -> None:
    assert Config().replace(tomllib.loads(config.to_toml())) == config


def test_write_default_is_commented_and_never_overwrites(home: Home) -> None:
    assert Config.write_default(home) is True
    text = home.config_path.read_text()
    assert text == default_toml()
    assert all(line == "" or line.startswith("#") for line in text.splitlines())
    assert Config.load(home) == Config()
    home.config_path.write_text("donate = true\n")
    assert Config.write_default(home) is False
    assert Config.load(home).donate is True


def test_write_default_makes_the_home(tmp_path: Path) -> None:
    home = Home(tmp_path / "new")
    assert Config.write_default(home)
    assert home.config_path.is_file()


def test_the_default_file_documents_every_setting_at_its_default(home: Home) -> None:
    text = default_toml()
    for key in CONFIG_KEYS:
        assert re.search(rf"^# \[?{key}\]?( = |$)", text, re.M), key
    # Uncommenting every setting line gives exactly the defaults.
    settings = [
        line[2:] for line in text.splitlines() if re.match(r"# (\[limits\]$|[a-z_]+ = )", line)
    ]
    write(home, "\n".join(settings) + "\n")
    assert Config.load(home) == Config()
