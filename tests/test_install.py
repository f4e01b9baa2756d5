"""`hushd install` into a scratch root: what a packager or an upgrade would see."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from hush.daemon.engine import catalog

ROOT = Path(__file__).resolve().parent.parent


def _hushd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hush.daemon", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_system_install_writes_units_for_this_venv(tmp_path: Path) -> None:
    result = _hushd("install", "--system", "--root", str(tmp_path), "--no-model")
    assert result.returncode == 0, result.stderr
    service = (tmp_path / "etc/systemd/system/hushd.service").read_text()
    assert f"ExecStart={sys.prefix}/bin/hushd --config /etc/hush/hushd.yaml" in service
    assert "@VENV@" not in service
    assert (tmp_path / "etc/systemd/system/hushd.socket").exists()
    assert "u hush" in (tmp_path / "usr/lib/sysusers.d/hush.conf").read_text()
    config = tmp_path / "etc/hush/hushd.yaml"
    assert "allow_groups: [hush]" in config.read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    assert "seal a new key" in result.stdout
    # The service serves the model a plain `hush model pull` would pick for this machine.
    best = catalog.best_fit(catalog.machine_memory_mb()).name
    assert yaml.safe_load(config.read_text())["model"] == best
    assert "@MODEL@" not in config.read_text()


def test_install_names_the_model_it_would_pull(tmp_path: Path) -> None:
    result = _hushd("install", "--system", "--root", str(tmp_path), "--model",
                    "qwen2.5-coder-0.5b")
    assert result.returncode == 0, result.stderr
    assert "would pull qwen2.5-coder-0.5b" in result.stdout
    config = yaml.safe_load((tmp_path / "etc/hush/hushd.yaml").read_text())
    assert config["model"] == "qwen2.5-coder-0.5b"
    # An upgrade keeps the configured model and pulls that one, not a new pick.
    again = _hushd("install", "--system", "--root", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "would pull qwen2.5-coder-0.5b" in again.stdout


def test_upgrade_keeps_configuration_and_key(tmp_path: Path) -> None:
    assert _hushd("install", "--system", "--root", str(tmp_path), "--no-model").returncode == 0
    config = tmp_path / "etc/hush/hushd.yaml"
    config.write_text("model: my-own\n")
    cred = tmp_path / "etc/hush/hush.key.cred"
    cred.write_bytes(b"sealed")
    again = _hushd("install", "--system", "--root", str(tmp_path), "--no-model")
    assert again.returncode == 0, again.stderr
    assert config.read_text() == "model: my-own\n"
    assert cred.read_bytes() == b"sealed"
    assert "kept" in again.stdout and "lock you out" in again.stdout


def test_user_install_and_uninstall_keep_data(tmp_path: Path) -> None:
    env = dict(os.environ, HOME="/home/alice", XDG_CONFIG_HOME="", XDG_CACHE_HOME="")
    result = _hushd("install", "--user", "--root", str(tmp_path), "--no-model", env=env)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "home/alice/.config/systemd/user/hushd.service"
    assert f"ExecStart={sys.prefix}/bin/hushd" in unit.read_text()
    policy = tmp_path / "home/alice/.config/hush/policies/default.yaml"
    assert policy.exists()
    best = catalog.best_fit(catalog.machine_memory_mb()).name
    chosen = tmp_path / "home/alice/.config/hush/default-model"
    assert chosen.read_text().strip() == best
    removed = _hushd("uninstall", "--user", "--root", str(tmp_path), env=env)
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists() and policy.exists()


def test_install_needs_a_scope() -> None:
    result = _hushd("install")
    assert result.returncode == 2 and "--system" in result.stderr
