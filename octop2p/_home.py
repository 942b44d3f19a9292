"""The node's home folder: its identity, swarm, pinned peers, job store and lock.

Every command takes `--home DIR` (or `OCTOP2P_HOME`); without either the home is
`platformdirs.user_data_dir("octop2p")`. Several nodes can run on one machine, each with
its own home, but never two nodes on one home: `Home.lock()` holds an exclusive
`fcntl.flock` on `node.pid` for as long as the node runs (`octop2p._homelock`).

Layout (the folder is created mode 0700 on first use)::

    config.toml     the node's settings (`octop2p._config.Config`); commented defaults
                    are written on first start
    node.key        the node's Ed25519 identity, mode 0600 (`protocol.NodeIdentity` bytes)
    swarm.toml      the joined swarm: its id and join code (which holds the secret), 0600
    peers.toml      swarm members pinned on first contact: node id -> public key, per swarm
    jobs/           the job store (journals, results), 0700
    packages/       job packages fetched from chiefs, by content hash, 0700
    breaches.json   sandbox breaches by chiefs' jobs here, and blocked chiefs, 0600
    control.sock    the control socket for the CLI and GUI, 0600 (made by the node)
    node.pid        the lock file; holds the pid of the node that has the home locked

Secrets are written atomically (a temporary file in the same folder, fsync, then
`os.replace`), so a crash leaves the old file or the new one, never half of one. The
protocol layer turns keys and codes into bytes and back; all file I/O is here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octop2p._homelock import HomeError, HomeLock, HomeLocked, lock_home

if TYPE_CHECKING:
    from protocol import NodeId, NodeIdentity, SwarmCode

__all__ = [
    "HOME_ENV",
    "Home",
    "HomeError",
    "HomeLock",
    "HomeLocked",
    "NoSwarm",
    "PinConflict",
    "default_home",
    "toml_string",
    "write_atomic",
]

log = logging.getLogger(__name__)

HOME_ENV = "OCTOP2P_HOME"
_PUBLIC_KEY_BYTES = 32


class NoSwarm(HomeError):
    """This node has joined no swarm: run `octop2p swarm create` or `octop2p swarm join CODE`."""


class PinConflict(HomeError):
    """A peer presented another key than the one pinned for its node id; it was refused."""

    def __init__(self, message: str, peer_id: NodeId) -> None:
        super().__init__(message)
        self.peer_id = peer_id
        self.args = (message, peer_id)


def default_home() -> Path:
    """`OCTOP2P_HOME` if set, else the platform's per-user data folder for octop2p."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs  # 20 ms, and only when no home is given

    return Path(platformdirs.user_data_dir("octop2p", appauthor=False))


def toml_string(text: str) -> str:
    """`text` as a TOML basic string, escaping what TOML requires (json misses U+007F)."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\t" or (ord(char) >= 0x20 and ord(char) != 0x7F):
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04X}")
    out.append('"')
    return "".join(out)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically: readers see the old file or the new one.

    The temporary file is made in the same folder (so `os.replace` is a rename, not a
    copy) with `mode` from the start, so a secret is never readable by others, not even
    for a moment.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse to open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Home:
    """A node's home folder and the files in it; see the module docstring for the layout.

    Making a `Home` touches nothing on disk; the folder is created (0700) by the first
    method that writes. The methods do blocking file I/O: from trio, call the ones used
    while the node runs (`pin`, `pinned`) through `trio.to_thread.run_sync`.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser().absolute()
        # pin() reads, changes and rewrites peers.toml: one writer at a time.
        self._pins_lock = threading.Lock()
        self._warned_mode = False

    @classmethod
    def locate(cls, path: Path | None = None) -> Home:
        """The home given by `--home` (`path`), else `OCTOP2P_HOME`, else the default."""
        return cls(path if path is not None else default_home())

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    # -- paths ---------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """`config.toml`: the node's settings."""
        return self.path / "config.toml"

    @property
    def key_path(self) -> Path:
        """`node.key`: the node's identity (0600)."""
        return self.path / "node.key"

    @property
    def swarm_path(self) -> Path:
        """`swarm.toml`: the joined swarm's id and join code (0600)."""
        return self.path / "swarm.toml"

    @property
    def peers_path(self) -> Path:
        """`peers.toml`: pinned swarm members."""
        return self.path / "peers.toml"

    @property
    def jobs_dir(self) -> Path:
        """`jobs/`: the job store."""
        return self.path / "jobs"

    @property
    def packages_dir(self) -> Path:
        """`packages/`: the package cache, by content hash."""
        return self.path / "packages"

    @property
    def control_socket(self) -> Path:
        """`control.sock`: the node's control socket (made by the node, mode 0600)."""
        return self.path / "control.sock"

    @property
    def lock_path(self) -> Path:
        """`node.pid`: the lock file, holding the pid of the node that has the home."""
        return self.path / "node.pid"

    # -- the folder and its lock ----------------------------------------------------------

    def create(self) -> None:
        """Make the home and its sub-folders, mode 0700, if missing. Idempotent."""
        try:
            existed = self.path.is_dir()
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not existed:
                os.chmod(self.path, 0o700)  # mkdir's mode is filtered by the umask
            for sub in (self.jobs_dir, self.packages_dir):
                if not sub.is_dir():
                    sub.mkdir(mode=0o700)
                    os.chmod(sub, 0o700)
        except OSError as exc:
            raise HomeError(
                f"cannot create the node's home {self.path}: {exc.strerror or exc}; "
                "choose another with --home or OCTOP2P_HOME"
            ) from exc
        if existed and not self._warned_mode and stat.S_IMODE(self.path.stat().st_mode) & 0o077:
            self._warned_mode = True
            # A folder the user made (say --home ~/octo) is theirs: say so, don't chmod it.
            log.warning(
                "the node's home %s can be read by other users; the secrets in it are "
                "mode 0600, but `chmod 700 %s` keeps even their names private",
                self.path,
                self.path,
            )

    def lock(self) -> HomeLock:
        """Lock the home for this node; raise `HomeLocked` if another node holds it.

        The lock is an `fcntl.flock` on `node.pid`, so it dies with the process: a crashed
        node never leaves a stale lock behind.
        """
        self.create()
        return lock_home(self.path, self.lock_path)

    # -- identity --------------------------------------------------------------------------

    def load_or_create_identity(self) -> NodeIdentity:
        """This node's identity from `node.key`, made (0600) on first use.

        A damaged key file is an error, never silently replaced: peers have pinned the key.
        """
        path = self.key_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return self._create_identity()
        except OSError as exc:
            raise HomeError(f"cannot read the node key {path}: {exc}") from exc
        _tighten(path)
        return _identity_from(path, data)

    def _create_identity(self) -> NodeIdentity:
        from protocol import NodeIdentity  # crypto loads only for commands that need a key

        self.create()
        identity = NodeIdentity.generate()
        path = self.key_path
        fd, tmp = tempfile.mkstemp(prefix=".node.key.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(identity.to_bytes())
                file.flush()
                os.fsync(file.fileno())
            # link(), unlike replace(), never overwrites: if two commands make a key at
            # once (say `octop2p id` while a node starts), one wins and both use it.
            os.link(tmp, path)
        except FileExistsError:
            return _identity_from(path, path.read_bytes())
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _fsync_dir(self.path)
        log.info("made a new node identity %s in %s", identity.node_id, path)
        return identity

    # -- swarm -----------------------------------------------------------------------------

    def swarm(self) -> SwarmCode | None:
        """The joined swarm, or None if this node has joined none."""
        path = self.swarm_path
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise HomeError(f"cannot read {path}: {exc}") from exc
        _tighten(path)
        data = _load_toml(path, text)
        code = data.get("code")
        if not isinstance(code, str):
            raise HomeError(
                f"{path} has no join code; join the swarm again: `octop2p swarm join CODE`"
            )
        from protocol import CodeError, SwarmCode

        try:
            swarm = SwarmCode.parse(code)
        except CodeError as exc:
            raise HomeError(f"{path}: the join code is damaged ({exc}); join again") from exc
        if data.get("id") not in (None, swarm.swarm_id.hex()):
            raise HomeError(f"{path}: the swarm id does not match the join code; join again")
        return swarm

    def save_swarm(self, code: SwarmCode) -> None:
        """Store `code` as this node's swarm (0600), replacing any swarm joined before.

        Peers pinned in another swarm stay in `peers.toml` under that swarm's id.
        """
        self.create()
        text = (
            "# The swarm this node belongs to. The code admits anyone who has it to the\n"
            "# swarm: keep this file secret. Written by `octop2p swarm create/join`.\n"
            f"id = {toml_string(code.swarm_id.hex())}\n"
            f"code = {toml_string(str(code))}\n"
        )
        write_atomic(self.swarm_path, text.encode("utf-8"))
        log.info("joined swarm %s", code.swarm_id.hex())

    # -- pinned peers ----------------------------------------------------------------------

    def pinned(self) -> dict[NodeId, bytes]:
        """The members of the current swarm pinned so far: node id -> public key."""
        return self._read_pins().get(self._swarm_key(), {})

    def pin(self, peer_id: NodeId, public_key: bytes) -> bool:
        """Pin `peer_id`'s key on first contact; True if new, False if already pinned.

        Raises `PinConflict` if `peer_id` was pinned with another key (trust on first use:
        the first key seen in this swarm is the one), `NoSwarm` outside a swarm.
        """
        from protocol import NodeId

        if NodeId.from_public_key(public_key) != peer_id:
            raise ValueError(f"{public_key.hex()} is not the key of node {peer_id}")
        swarm_key = self._swarm_key()
        with self._pins_lock:
            pins = self._read_pins()
            members = pins.setdefault(swarm_key, {})
            known = members.get(peer_id)
            if known == public_key:
                return False
            if known is not None:
                log.warning("peer %s presented another key than the pinned one", peer_id)
                raise PinConflict(
                    f"peer {peer_id} presented the key {public_key.hex()}, but "
                    f"{known.hex()} is pinned for it in {self.peers_path}; if that node "
                    "was reinstalled, delete its line there to trust the new key",
                    peer_id,
                )
            members[peer_id] = public_key
            self._write_pins(pins)
        log.info("pinned peer %s on first contact", peer_id)
        return True

    def _swarm_key(self) -> str:
        swarm = self.swarm()
        if swarm is None:
            raise NoSwarm()
        return swarm.swarm_id.hex()

    def _read_pins(self) -> dict[str, dict[NodeId, bytes]]:
        path = self.peers_path
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise HomeError(f"cannot read {path}: {exc}") from exc
        swarms = _load_toml(path, text).get("swarm", {})
        if not isinstance(swarms, dict):
            raise HomeError(f"{path}: `swarm` must be a table of swarms")
        pins: dict[str, dict[NodeId, bytes]] = {}
        for swarm_id, members in swarms.items():
            if not isinstance(members, dict):
                raise HomeError(f"{path}: [swarm.{swarm_id}] must be a table of peers")
            pins[swarm_id] = {}
            for text_id, key_hex in members.items():
                peer_id, key = _pin_entry(path, text_id, key_hex)
                pins[swarm_id][peer_id] = key
        return pins

    def _write_pins(self, pins: dict[str, dict[NodeId, bytes]]) -> None:
        lines = [
            "# Swarm members pinned on first contact, per swarm: node id = public key.",
            "# A peer that later shows another key under the same id is refused.",
            "# Delete a peer's line to trust it anew (say, after it was reinstalled).",
        ]
        for swarm_id in sorted(pins):
            lines += ["", f"[swarm.{toml_string(swarm_id)}]"]
            lines += [
                f"{toml_string(str(peer_id))} = {toml_string(key.hex())}"
                for peer_id, key in sorted(pins[swarm_id].items())
            ]
        self.create()
        write_atomic(self.peers_path, ("\n".join(lines) + "\n").encode("utf-8"))


def _pin_entry(path: Path, text_id: str, key_hex: object) -> tuple[NodeId, bytes]:
    from protocol import CodeError, NodeId

    try:
        peer_id = NodeId.parse(text_id)
    except CodeError as exc:
        raise HomeError(f"{path}: {exc}") from exc
    try:
        key = bytes.fromhex(key_hex) if isinstance(key_hex, str) else b""
    except ValueError:
        key = b""
    if len(key) != _PUBLIC_KEY_BYTES or NodeId.from_public_key(key) != peer_id:
        raise HomeError(
            f"{path}: the key pinned for {peer_id} is not that node's key; "
            "delete the line to pin it anew on next contact"
        )
    return peer_id, key


def _identity_from(path: Path, data: bytes) -> NodeIdentity:
    from protocol import KeyFileError, NodeIdentity

    try:
        return NodeIdentity.from_bytes(data)
    except KeyFileError as exc:
        raise HomeError(
            f"{path}: {exc}. octop2p will not make a new identity over it, as peers "
            "have pinned this one; move the file away to start over with a new id"
        ) from exc


def _load_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HomeError(f"{path} is not valid TOML: {exc}") from exc


def _tighten(path: Path) -> None:
    """Make a secret file 0600 again if someone loosened it, and say so."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was mode %03o; made it 0600, as it holds a secret", path, mode)
        os.chmod(path, 0o600)
