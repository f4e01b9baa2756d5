"""Where Hush keeps things: XDG directories for a user, systemd's directories for a service.

Precedence for each directory: explicit argument (command line) > HUSH_* environment variable >
the directory systemd hands a service (RUNTIME_DIRECTORY, STATE_DIRECTORY, ...) > XDG defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    # No per-user runtime directory (e.g. a container or an ssh session without logind).
    return Path("/tmp") / f"hush-{os.getuid()}"


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
