"""SmolLM2-135M imported from its GGUF on arm64, served by an arm64 hushd, asked by `hush ask`.

Run by `make test-arm64` under qemu-user (skipped elsewhere: the x86 suite has its own copies in
tests/engine/test_import_smollm2.py and tests/test_end_to_end.py). The import skips SmoothQuant
calibration: its numpy forward pass takes more than five minutes under emulation, and what it
checks (numpy arithmetic) is not architecture-specific; the import path, dequantization,
CTranslate2's int8 conversion and the answer are.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from hush.daemon.engine.convert.gguf_import import import_gguf
from hush.daemon.engine.model_info import ModelInfo

from ..conftest import REAL_MODEL, Daemon, _daemon
from ..quiz import daemon_quiz, passes

pytestmark = pytest.mark.skipif(
    platform.machine() != "aarch64", reason="arm64 only: `make test-arm64` runs it under qemu"
)


@pytest.fixture(scope="module")
def arm64_cache(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache whose smollm2-135m was imported on arm64 from the verified GGUF."""
    root = tmp_path_factory.mktemp("cache")
    import_gguf(smollm2_gguf, root / "models" / REAL_MODEL, quantization="int8", smooth=False)
    return root


@pytest.fixture
def arm64_daemon(short_dir: Path, arm64_cache: Path) -> Iterator[Daemon]:
    daemon = _daemon(short_dir, arm64_cache, REAL_MODEL)
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait()


def test_import_from_gguf_on_arm64(arm64_cache: Path) -> None:
    model = arm64_cache / "models" / REAL_MODEL
    assert {"model.bin", "config.json", "tokenizer.json", "hush-model.json"} <= {
        p.name for p in model.iterdir()}
    info = ModelInfo.load(model)
    assert (info.architecture, info.quantization) == ("llama", "int8")


def test_hush_ask_answers_on_arm64(arm64_daemon: Daemon) -> None:
    arm64_daemon.start(wait=False)
    arm64_daemon.wait_ready(timeout=180)  # imports alone take seconds under emulation
    asked = arm64_daemon.hush("ask", "--max-tokens", "24", "What is the capital of France?",
                              timeout=300)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip()
    # NEON kernels are one more numeric path: judged on the easy set, like the x86 ones.
    wrong = daemon_quiz(arm64_daemon.socket)
    assert passes(wrong), wrong
