"""The thread probe: measured on the real default model, chosen by a rule, read back by hushd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hush.daemon.client import Client
from hush.daemon.engine import probe
from hush.daemon.engine.errors import ModelError
from hush.daemon.engine.openmp import openmp_runtime
from hush.daemon.engine.probe import choose, needs_probe, probe_threads, recorded_choice

from ..conftest import REAL_MODEL, Daemon


@pytest.fixture
def model_copy(real_cache: Path, tmp_path: Path) -> Path:
    """The real model's files linked into a directory of the test's own (threads.json there)."""
    source = real_cache / "models" / REAL_MODEL
    target = tmp_path / REAL_MODEL
    target.mkdir()
    for item in source.iterdir():
        if item.name != probe.PROBE_FILE:
            (target / item.name).symlink_to(item)
    return target


def test_single_stream_speed_decides() -> None:
    # Two threads clearly faster alone: chosen even though one thread batches better.
    assert choose({1: 40.0, 2: 60.0}, {1: 150.0, 2: 90.0}) == 2
    # Two threads slower alone (what CTranslate2 did here): one thread, two workers.
    assert choose({1: 40.0, 2: 25.0}, {1: 150.0, 2: 60.0}) == 1


def test_within_the_noise_the_better_aggregate_wins() -> None:
    assert choose({1: 40.0, 2: 42.0}, {1: 150.0, 2: 80.0}) == 1
    assert choose({1: 40.0, 2: 42.0}, {1: 70.0, 2: 80.0}) == 2
    # Equal in every way: the fewer threads, leaving cores to other work.
    assert choose({1: 40.0, 2: 40.0}, {1: 80.0, 2: 80.0}) == 1


def test_probe_measures_the_real_model_and_records_its_choice(model_copy: Path) -> None:
    choice = probe_threads(model_copy, tokens=8)
    cores = probe.available_cores()
    assert sorted(choice.tokens_per_s) == list(range(1, cores + 1))
    assert all(v > 0 for v in choice.tokens_per_s.values())
    assert all(v > 0 for v in choice.aggregate_tokens_per_s.values())
    assert choice.intra_threads == choose(choice.tokens_per_s, choice.aggregate_tokens_per_s)
    assert choice.decode_workers == cores // choice.intra_threads
    assert choice.openmp == openmp_runtime()
    assert recorded_choice(model_copy) == choice
    assert not needs_probe(model_copy)


def test_a_probe_from_another_openmp_runtime_is_measured_again(model_copy: Path) -> None:
    assert needs_probe(model_copy)  # none yet
    # Written before Hush recorded the runtime: every such probe ran on GNU libgomp.
    (model_copy / probe.PROBE_FILE).write_text(json.dumps(
        {"intra_threads": 1, "decode_workers": 2, "tokens_per_s": {"1": 50.0, "2": 20.0},
         "cpu_count": 2}))
    recorded = recorded_choice(model_copy)
    assert recorded is not None and recorded.openmp == "gnu"
    assert needs_probe(model_copy) == (openmp_runtime() != "gnu")
    (model_copy / probe.PROBE_FILE).write_text("{not json")
    assert needs_probe(model_copy)  # damaged: measuring again rewrites it


def test_damaged_probe_file_says_how_to_measure_again(model_copy: Path) -> None:
    (model_copy / probe.PROBE_FILE).write_text('{"intra_threads": "many"}')
    with pytest.raises(ModelError, match="hush model probe"):
        recorded_choice(model_copy)


def test_probe_file_from_a_bigger_machine_is_fitted_to_this_one(model_copy: Path) -> None:
    # Written by the first version of the probe (no aggregate figures) on a 64-core machine.
    (model_copy / probe.PROBE_FILE).write_text(json.dumps(
        {"intra_threads": 64, "tokens_per_s": {"1": 10.0, "64": 90.0}, "cpu_count": 64}))
    choice = recorded_choice(model_copy)
    assert choice is not None
    assert choice.intra_threads == probe.available_cores()
    assert choice.decode_workers == 1
    assert choice.aggregate_tokens_per_s == {}


async def _status_with_probe_file(daemon: Daemon, recorded: dict[str, Any]) -> dict[str, Any]:
    """Start the daemon with `recorded` as its model's threads.json; its `status` answer."""
    model_dir = daemon.cache_dir / "models" / daemon.model
    (model_dir / probe.PROBE_FILE).write_text(json.dumps(recorded))
    try:
        daemon.start()
        async with await Client.connect(daemon.socket) as client:
            status: dict[str, Any] = await client.call("status")
    finally:
        (model_dir / probe.PROBE_FILE).unlink()
    return status


async def test_status_shows_the_thread_settings_and_where_they_came_from(
        tiny_daemon: Daemon) -> None:
    status = await _status_with_probe_file(tiny_daemon, {
        "intra_threads": 1, "decode_workers": 2, "tokens_per_s": {"1": 50.0},
        "aggregate_tokens_per_s": {"1": 120.0}, "cpu_count": 2, "openmp": openmp_runtime()})
    assert status["threads_from"] == "probe"
    assert status["openmp"] == openmp_runtime()
    assert status["intra_threads"] == 1
    assert status["decode_workers"] == probe.available_cores()


@pytest.mark.skipif(openmp_runtime() != "llvm", reason="runs on the runtime older probes used")
async def test_status_says_when_the_probe_ran_on_another_openmp_runtime(
        tiny_daemon: Daemon) -> None:
    # Written before Hush recorded the runtime: every such probe ran on GNU libgomp.
    status = await _status_with_probe_file(tiny_daemon, {
        "intra_threads": 1, "decode_workers": 2, "tokens_per_s": {"1": 50.0}, "cpu_count": 2})
    assert status["openmp"] == "llvm"
    assert status["threads_from"].startswith("probe, measured on the gnu OpenMP runtime")
    assert f"hush model probe {tiny_daemon.model}" in status["threads_from"]
