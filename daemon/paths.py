"""Where Hush keeps things: XDG directories for a user, systemd's directories for a service.

Precedence for each directory: explicit argument (command line) > HUSH_* environment variable >
the directory systemd hands a service (RUNTIME_DIRECTORY, STATE_DIRECTORY, ...) > XDG defaults.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import HushError

SOCKET_NAME = "hushd.sock"


def _first_dir(value: str | None) -> Path | None:
    # systemd passes colon-separated lists when a unit names several directories.
    if not value:
        return None
    return Path(value.split(":")[0])


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def runtime_dir() -> Path:
    if (systemd := _first_dir(os.environ.get("RUNTIME_DIRECTORY"))) is not None:
        return systemd
    value = os.environ.get("XDG_RUNTIME_DIR")
    if value:
        return Path(value) / "hush"
    return fallback_runtime_dir()


def fallback_runtime_dir() -> Path:
    """Where the socket goes without a per-user runtime directory (a container, an ssh
    session without logind): `$TMPDIR/hush-<uid>`, /tmp by default. Any local user can create
    that name first, so the daemon and the client accept it only through `private_dir`."""
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"hush-{os.getuid()}"


def check_client_socket_dir(socket: Path) -> None:
    """Before a client connects: refuse a fallback runtime directory someone else controls.

    (A directory the client was pointed at explicitly is the user's choice; the daemon's
    credentials are checked after connecting whatever the path.)"""
    if socket.parent == fallback_runtime_dir() and os.path.lexists(socket.parent):
        private_dir(socket.parent)


def private_dir(path: Path, *, create: bool = False, group_may_enter: bool = False) -> None:
    """Refuse a directory another user could control, as OpenSSH refuses a shared ~/.ssh.

    It must be a real directory (not a symlink), owned by this user, with no permission for
    others and none for the group, except read and search with `group_may_enter` (a socket
    shared with a group). With `create`, it is made 0700 first if absent; an existing one is
    checked, never silently fixed. Raises HushError saying what to do.
    """
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # the checks below decide if it is ours
            os.mkdir(path, 0o700)
    info = os.lstat(path)  # of the name itself: a planted symlink must not be followed
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise HushError(f"{path} is not a directory (a symlink or a file); remove it and "
                        "start again", code="runtime_dir")
    if info.st_uid != os.geteuid():
        raise HushError(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}): another "
            "user may have made it to catch what you send the daemon. Remove it (it may need "
            "root), or set XDG_RUNTIME_DIR or HUSH_SOCKET to a directory of your own",
            code="runtime_dir")
    allowed = 0o050 if group_may_enter else 0
    if stat.S_IMODE(info.st_mode) & 0o077 & ~allowed:
        mode = stat.S_IMODE(info.st_mode)
        raise HushError(f"{path} has mode {mode:04o}: other users could replace the socket in "
                        f"it; run `chmod {0o700 | allowed:o} {path}`", code="runtime_dir")


def default_socket() -> Path:
    if env := os.environ.get("HUSH_SOCKET"):
        return Path(env)
    return runtime_dir() / SOCKET_NAME


def default_state_dir() -> Path:
    if env := os.environ.get("HUSH_STATE_DIR"):
        return Path(env)
    if (systemd := _first_dir(os.environ.get("STATE_DIRECTORY"))) is not None:
        return systemd
    return _xdg("XDG_STATE_HOME", ".local/state") / "hush"


def default_config_dir() -> Path:
    if env := os.environ.get("HUSH_CONFIG_DIR"):
        return Path(env)
    if (systemd := _first_dir(os.environ.get("CONFIGURATION_DIRECTORY"))) is not None:
        return systemd
    return _xdg("XDG_CONFIG_HOME", ".config") / "hush"


def default_cache_dir() -> Path:
    if env := os.environ.get("HUSH_CACHE_DIR"):
        return Path(env)
    if (systemd := _first_dir(os.environ.get("CACHE_DIRECTORY"))) is not None:
        return systemd
    return _xdg("XDG_CACHE_HOME", ".cache") / "hush"


DEFAULT_MODEL_FILE = "default-model"


def chosen_model(config_dir: Path) -> str | None:
    """The model `hush model use` made the default, if any."""
    try:
        return (config_dir / DEFAULT_MODEL_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def choose_model(config_dir: Path, name: str) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    tmp = config_dir / f".{DEFAULT_MODEL_FILE}.tmp"
    tmp.write_text(name + "\n", encoding="utf-8")
    tmp.replace(config_dir / DEFAULT_MODEL_FILE)


@dataclass(frozen=True)
class CacheLayout:
    """The cache directory: imported models and the downloads they came from."""

    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @classmethod
    def default(cls) -> CacheLayout:
        return cls(default_cache_dir())
