"""The default model is chosen by the machine's memory, from what the benchmarks measured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hush.daemon import paths
from hush.daemon.engine import catalog
from hush.tui import cli

from .conftest import REAL_MODEL, Daemon


@pytest.mark.parametrize(("memory_mb", "expected"), [
    (1_900, "smollm2-135m"),  # a 2 GB board
    # A 4 GB board: Qwen2.5-Coder-0.5B fits but answered no more of the quiz than SmolLM2
    # (23 of 30 each; the tie goes to the smaller), at less than half its speed.
    (3_800, "smollm2-135m"),
    (7_800, "qwen2.5-coder-1.5b"),  # an 8 GB board, and this 24 GB machine
    (24_000, "qwen2.5-coder-1.5b"),
    (500, "smollm2-135m"),  # nothing fits: the smallest
])
def test_best_fit_is_the_best_measured_model_that_fits(memory_mb: int, expected: str) -> None:
    assert catalog.best_fit(memory_mb).name == expected


def test_every_chat_model_is_measured_and_the_completion_model_never_picked() -> None:
    for entry in catalog.CATALOG.values():
        if entry.name == "gemma3-270m":
            assert entry.measured is None  # a base model: completes text, no chat
        else:
            assert entry.measured is not None
            assert 0 < entry.measured.quiz_right <= catalog.QUIZ_QUESTIONS


def test_machine_memory_is_read_and_a_cgroup_limit_counts() -> None:
    total = catalog.machine_memory_mb()
    meminfo = Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]
    assert 0 < total <= int(meminfo) // 1024


def _env(monkeypatch: pytest.MonkeyPatch, cache: Path, config: Path) -> None:
    monkeypatch.setenv("HUSH_CACHE_DIR", str(cache))
    monkeypatch.setenv("HUSH_CONFIG_DIR", str(config))


def test_a_plain_pull_installs_the_best_fit_and_makes_it_the_default(
        real_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A 2 GB board: SmolLM2, already in this cache, so no download.
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    os.symlink(paths.CacheLayout(real_cache).models / REAL_MODEL, cache / "models" / REAL_MODEL)
    _env(monkeypatch, cache, tmp_path / "config")
    monkeypatch.setattr(catalog, "machine_memory_mb", lambda: 1_900)
    assert cli.main(["model", "pull"]) == 0
    assert paths.chosen_model(tmp_path / "config") == REAL_MODEL
    out = capsys.readouterr()
    assert "best measured model for this machine's 1.9 GB" in out.err
    assert "now the default" in out.out
    # Once chosen (or chosen with `hush model use`), a plain pull keeps it, whatever fits.
    monkeypatch.setattr(catalog, "machine_memory_mb", lambda: 24_000)
    assert cli.main(["model", "pull"]) == 0
    assert paths.chosen_model(tmp_path / "config") == REAL_MODEL
    assert f"{REAL_MODEL}: installed, the default" in capsys.readouterr().out


def test_model_list_shows_tiers_quality_speed_and_the_pick(
        tiny_daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, tiny_daemon.cache_dir, tmp_path / "config")
    monkeypatch.setattr(catalog, "machine_memory_mb", lambda: 3_800)
    assert cli.main(["model", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {name: line for line in lines for name in catalog.CATALOG if f" {name} " in line}
    assert rows["smollm2-135m"].startswith(">")  # this machine's pick
    assert not rows["qwen2.5-coder-0.5b"].startswith(">")
    assert "23/30" in rows["smollm2-135m"] and "87" in rows["smollm2-135m"]
    assert "too big for this machine" in rows["qwen2.5-coder-1.5b"]
    assert "completion only" in rows["gemma3-270m"]
    assert any(line.split()[:2] == ["*", "tiny"] or line.split()[:1] == ["tiny"]
               for line in lines)  # the installed models follow
