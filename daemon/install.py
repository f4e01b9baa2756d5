"""`hushd install` / `hushd uninstall`: put the running virtualenv under systemd.

`make install` creates the dedicated virtualenv and runs `hushd install --system` from it;
this module writes the units (with that virtualenv's path), the sysusers entry, a default
configuration and policy, seals a new key-encryption key with `systemd-creds`, pulls the
default model and enables the socket. Upgrades run the same steps: existing configuration,
keys and the state directory are kept, and the daemon migrates its store when it starts.
`--root DIR` writes under DIR instead of / (for packaging and tests) and runs no systemctl.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from .errors import HushError
from .paths import DEFAULT_MODEL_FILE, choose_model, chosen_model

Say = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """Where each piece goes, for the system or for one user."""

    units: Path
    config: Path
    cache: Path
    sysusers: Path | None
    user: bool

    @classmethod
    def for_scope(cls, *, user: bool, root: Path) -> Layout:
        if user:
            home = Path(os.environ.get("HOME", str(Path.home())))
            def xdg(var: str, default: str) -> Path:
                return Path(os.environ.get(var) or home / default)
            return cls(units=root / xdg("XDG_CONFIG_HOME", ".config").relative_to("/")
                       / "systemd/user",
                       config=root / xdg("XDG_CONFIG_HOME", ".config").relative_to("/") / "hush",
                       cache=root / xdg("XDG_CACHE_HOME", ".cache").relative_to("/") / "hush",
                       sysusers=None, user=True)
        return cls(units=root / "etc/systemd/system", config=root / "etc/hush",
                   cache=root / "var/cache/hush", sysusers=root / "usr/lib/sysusers.d/hush.conf",
                   user=False)


def default_source() -> Path:
    """The checkout this package was installed from in editable mode (daemon/ is in it)."""
    return Path(str(resources.files("hush.daemon"))).resolve().parent


def _source(source: Path, *parts: str) -> Path:
    """Files that live beside the package in a checkout: units, policies, README."""
    candidate = source.joinpath(*parts)
    if not candidate.exists():
        raise HushError(f"cannot find {'/'.join(parts)} in {source}; run `make install` "
                        "from a checkout of Hush, or pass --source CHECKOUT", code="install")
    return candidate


def _write(path: Path, text: str, say: Say, *, mode: int = 0o644, keep: bool = False) -> None:
    if keep and path.exists():
        say(f"kept {path}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(path)
    say(f"wrote {path}")


def _run(cmd: list[str], say: Say, *, input: bytes | None = None,
         env: dict[str, str] | None = None) -> None:
    say("$ " + " ".join(cmd))
    result = subprocess.run(cmd, input=input, capture_output=True, env=env)
    if result.returncode != 0:
        raise HushError(f"{cmd[0]} failed: {result.stderr.decode(errors='replace').strip()}",
                        code="install")


def install(*, user: bool, root: Path = Path("/"), model: str | None = None,
            pull_model: bool = True, source: Path | None = None, say: Say = print) -> None:
    """`model` None: the one an earlier install chose (an upgrade keeps it), else the best
    measured model that fits this machine's memory, as a plain `hush model pull` picks it."""
    live = root == Path("/")
    layout = Layout.for_scope(user=user, root=root)
    model = model or _installed_choice(layout)
    if model is None:
        from .engine import catalog

        memory = catalog.machine_memory_mb()
        model = catalog.best_fit(memory).name
        say(f"model: {model}, the best measured one for {memory / 1024:.1f} GB of memory")
    venv = Path(sys.prefix)
    source = source or default_source()
    units = _source(source, "systemd", "user") if user else _source(source, "systemd")
    for name in ("hushd.service", "hushd.socket"):
        text = (units / name).read_text(encoding="utf-8").replace("@VENV@", str(venv))
        _write(layout.units / name, text, say)
    readme = _source(source, "README.md")
    _write(root / (venv / "share/doc/hush/README.md").relative_to("/"), readme.read_text(), say)
    if layout.sysusers is not None:
        _write(layout.sysusers, (_source(source, "systemd") / "hush.sysusers").read_text(), say)
        if live:
            _run(["systemd-sysusers"], say)
    if not user:
        example = (_source(source, "systemd") / "hushd.yaml.example").read_text()
        _write(layout.config / "hushd.yaml", example.replace("@MODEL@", model), say,
               mode=0o640, keep=True)
        _seal_key(layout.config / "hush.key.cred", live=live, say=say)
    elif chosen_model(layout.config) != model:
        # The user daemon reads its model from the choice `hush model use` also writes.
        choose_model(layout.config, model)
        say(f"wrote {layout.config / DEFAULT_MODEL_FILE}")
    # Only the balanced default is active; the others are examples to copy from.
    for policy in sorted(_source(source, "policies").glob("default.yaml")):
        _write(layout.config / "policies" / policy.name, policy.read_text(), say, keep=True)
    if pull_model:
        if live:
            _run([str(venv / "bin" / "hush"), "model", "pull", model], say,
                 env=dict(os.environ, HUSH_CACHE_DIR=str(layout.cache)))
        else:
            say(f"would pull {model} into {layout.cache}")
    if live:
        scope = ["--user"] if user else []
        _run(["systemctl", *scope, "daemon-reload"], say)
        _run(["systemctl", *scope, "enable", "--now", "hushd.socket"], say)
        say("installed: `hush status` answers once the socket is up (the daemon starts on "
            "first use)")


def _installed_choice(layout: Layout) -> str | None:
    if layout.user:
        return chosen_model(layout.config)
    try:
        settings = yaml.safe_load((layout.config / "hushd.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    model = settings.get("model") if isinstance(settings, dict) else None
    return model if isinstance(model, str) and model else None


def _seal_key(cred: Path, *, live: bool, say: Say) -> None:
    """Create the key-encryption key once, sealed by systemd-creds; never replace one."""
    if cred.exists():
        say(f"kept {cred} (existing key: replacing it would lock you out of your data)")
        return
    if not live:
        say(f"would seal a new key into {cred} with systemd-creds")
        return
    if shutil.which("systemd-creds") is None:
        raise HushError("systemd-creds is missing (systemd 250 or newer is needed to seal "
                        "the key); install it or use a key file, see docs/security.md",
                        code="install")
    cred.parent.mkdir(parents=True, exist_ok=True)
    _run(["systemd-creds", "encrypt", "--name=hush.key", "-", str(cred)], say,
         input=secrets.token_bytes(32))
    cred.chmod(0o600)


def uninstall(*, user: bool, root: Path = Path("/"), purge: bool = False,
              say: Say = print) -> None:
    live = root == Path("/")
    layout = Layout.for_scope(user=user, root=root)
    scope = ["--user"] if user else []
    if live:
        subprocess.run(["systemctl", *scope, "disable", "--now", "hushd.socket",
                        "hushd.service"], capture_output=True)
    for name in ("hushd.service", "hushd.socket"):
        (layout.units / name).unlink(missing_ok=True)
        say(f"removed {layout.units / name}")
    if layout.sysusers is not None:
        layout.sysusers.unlink(missing_ok=True)
    if purge:
        for path in (layout.config, layout.cache):
            shutil.rmtree(path, ignore_errors=True)
            say(f"deleted {path}")
        say("your conversations in the state directory were left; delete it by hand to "
            "remove them too")
    else:
        say(f"kept {layout.config}, {layout.cache} and the state directory (use --purge "
            "to delete configuration and models)")
    if live:
        subprocess.run(["systemctl", *scope, "daemon-reload"], capture_output=True)
