"""Daemon settings: validated once at start-up from YAML and the command line, then frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import paths
from .errors import HushError
from .protocol import DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_BYTES, describe_validation

DEFAULT_MODEL = "smollm2-135m"
CONFIG_NAME = "hushd.yaml"


class Limits(BaseModel):
    """Bounds on what one client may ask of the daemon."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_frame_bytes: int = Field(default=DEFAULT_MAX_FRAME_BYTES, ge=1024)
    """Largest frame accepted, in bytes; larger payloads must be chunked."""
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=2, le=1000)
    """Deepest JSON nesting accepted in a frame."""
    max_inflight: int = Field(default=8, ge=1)
    """Requests one connection may have open at once."""
    max_connections: int = Field(default=64, ge=1)
    """Simultaneous client connections."""
    max_connections_per_uid: int = Field(default=8, ge=1)
    """Connections one uid may hold at once, so one user cannot lock the others out; root and
    the daemon's own uid are not held to it."""
    owner_reserve: int = Field(default=4, ge=0)
    """Of `max_connections`, this many only root and the daemon's own uid may take, so other
    users together can never lock the service owner out (others always keep one)."""
    hello_timeout_s: float = Field(default=5.0, gt=0)
    """A connection that has not completed its hello this long after connecting is closed."""
    max_queued: int = Field(default=32, ge=1)
    """Generations waiting for the model before new ones are answered `busy`."""
    idle_timeout_s: float = Field(default=600.0, gt=0)
    """A connection with nothing in flight that sends nothing for this long is closed."""
    max_unsent_bytes: int = Field(default=64 * 1024, ge=4096)
    """Output one connection may have waiting for its client to read, in the kernel's socket
    buffer and again in hushd's own; past it, sending waits for the client."""
    send_timeout_s: float = Field(default=15.0, gt=0)
    """A client that reads none of its waiting output this long, however little there is,
    has its requests cancelled and its connection closed."""

    @property
    def room_for_others(self) -> int:
        """Connections users other than the owner may hold together (always at least one)."""
        return max(1, self.max_connections - self.owner_reserve)


class Settings(BaseModel):
    """Everything hushd needs to run; paths default to XDG (user) or systemd (service) dirs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    socket: Path = Field(default_factory=paths.default_socket)
    """Unix socket to listen on, unless systemd passes one (socket activation)."""
    socket_mode: int = 0o600
    """Permission bits of the socket; 0o660 together with `socket_group` shares it."""
    socket_group: str | None = None
    """Group that may use the socket (with socket_mode 0o660)."""
    allow_uids: tuple[int, ...] = ()
    """Peers allowed in besides the daemon's own uid (checked with SO_PEERCRED)."""
    allow_gids: tuple[int, ...] = ()
    """Peers in one of these groups (primary or supplementary) are allowed in too."""
    allow_groups: tuple[str, ...] = ()
    """The same by group name, e.g. [hush] for the system service's socket group."""
    state_dir: Path = Field(default_factory=paths.default_state_dir)
    """Where the encrypted conversation store lives."""
    config_dir: Path = Field(default_factory=paths.default_config_dir)
    key_file: Path | None = None
    """Key-encryption key file (default <config_dir>/hush.key, created 0600 on first run);
    a systemd credential named hush.key takes precedence."""
    policy_dir: Path | None = None
    """Directory of YAML policies; defaults to <config_dir>/policies."""
    cache_dir: Path = Field(default_factory=paths.default_cache_dir)
    """Models and downloads (read-only for the daemon)."""
    model: str = DEFAULT_MODEL
    """Name of the model in <cache_dir>/models to serve."""
    intra_threads: int = Field(default=0, ge=0)
    """CTranslate2 threads per generation; 0 uses the value the import probe measured."""
    lazy_load: bool = False
    """Load the model on the first request instead of at start (READY=1 then comes sooner)."""
    keep_alive_s: float | None = Field(default=None, gt=0)
    """Unload the model after this long without requests; None keeps it loaded."""
    decode_workers: int = Field(default=0, ge=0, le=64)
    """Batches decoded at the same time (CTranslate2 inter_threads); 0: cores / intra_threads."""
    max_batch: int = Field(default=8, ge=1, le=64)
    """Most sequences decoded together in one batch."""
    system_prompt: str = "You are a helpful assistant."
    """Used when a request names none. Small models answer best with a short, plain one."""
    repetition_penalty: float | None = Field(default=None, gt=0)
    """For requests that set none; None uses each model's measured default (`hush model
    list`). 1.0 turns the penalty off."""
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """How long SIGTERM lets in-flight generations finish before they are cancelled."""
    inbox_dir: Path | None = None
    """A directory to watch: each document dropped there is summarized once it stops
    growing, and the summary written to `outbox_dir`."""
    outbox_dir: Path | None = None
    """Where inbox summaries and error notes go (default: <inbox_dir>/summaries)."""
    limits: Limits = Limits()

    @property
    def models_dir(self) -> Path:
        return paths.CacheLayout(self.cache_dir).models


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Merge the YAML config file (if any) with command-line overrides and validate once."""
    data: dict[str, Any] = {}
    explicit = config_file is not None
    if config_file is None:
        config_dir = overrides.get("config_dir") or paths.default_config_dir()
        config_file = Path(config_dir) / CONFIG_NAME
    if config_file.exists():
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            raise HushError(f"{config_file}{where}: invalid YAML: {exc}", code="config") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise HushError(f"{config_file}: expected a mapping of settings", code="config")
        data.update(loaded or {})
    elif explicit:
        raise HushError(f"config file {config_file} does not exist", code="config")
    data.update({k: v for k, v in overrides.items() if v is not None})
    if "model" not in data:
        chosen = paths.chosen_model(Path(data.get("config_dir") or paths.default_config_dir()))
        if chosen:
            data["model"] = chosen
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise HushError(f"{config_file}: {describe_validation(exc)}", code="config") from None
