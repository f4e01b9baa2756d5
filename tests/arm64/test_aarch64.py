"""Checks that only mean something on arm64: run by `make test-arm64` under qemu-user.

On any other machine the module is skipped; tests/arm64/run.py runs it with the arm64 Python
and the aarch64 wheels (tests/arm64/build.py), next to a subset of the rest of the suite.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from pathlib import Path

import pytest

from hush.daemon.engine.convert.testing import build_tiny_model
from hush.daemon.engine.generator import Engine, GenerationOptions

from ..conftest import Daemon

pytestmark = pytest.mark.skipif(
    platform.machine() != "aarch64", reason="arm64 only: `make test-arm64` runs it under qemu"
)

EM_AARCH64 = 183  # ELF e_machine for AArch64

# Every dependency that ships compiled code: each must be an aarch64 build, and import.
NATIVE_PACKAGES = (
    "ctranslate2", "numpy", "tokenizers", "sentencepiece", "cryptography", "pydantic_core",
    "yaml", "markupsafe", "cffi",
)


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_the_interpreter_is_arm64_and_respawns_through_qemu() -> None:
    assert platform.machine() == "aarch64"
    # Daemons are started with sys.executable: it must be the qemu wrapper, not the raw binary.
    assert sys.executable == os.environ["HUSH_ARM64_PYTHON"]


@pytest.mark.parametrize("name", NATIVE_PACKAGES)
def test_native_wheel_is_aarch64_and_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    package_dir = Path(module.__file__).parent
    libraries = [p for p in package_dir.parent.glob(f"{package_dir.name}*/**/*.so*")
                 if p.is_file()] + list(package_dir.parent.glob(f"_{name}*.so"))
    assert libraries, f"{name}: no compiled library found next to {package_dir}"
    assert {_elf_machine(p) for p in libraries} == {EM_AARCH64}


def test_ctranslate2_generates_int8_on_arm64(tmp_path: Path) -> None:
    import ctranslate2

    assert "int8" in ctranslate2.get_supported_compute_types("cpu")
    engine = Engine.load(build_tiny_model(tmp_path / "tiny"), intra_threads=1)
    generation = engine.stream(engine.prompt_ids([{"role": "user", "content": "hi"}]),
                               GenerationOptions(max_tokens=4))
    assert "".join(generation)
    assert 1 <= generation.completion_tokens <= 4


def test_hush_ask_and_policy_through_the_arm64_daemon(tiny_daemon: Daemon) -> None:
    tiny_daemon.start(wait=False)
    tiny_daemon.wait_ready(timeout=180)  # imports alone take seconds under emulation
    asked = tiny_daemon.hush("ask", "--json", "--max-tokens", "4", "hello from arm64")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout.splitlines()[-1])["type"] == "done"
    status = json.loads(tiny_daemon.hush("status", "--json").stdout)
    assert status["model"] == "tiny"
    # The built-in default policy blocks credentials on input.
    blocked = tiny_daemon.hush("policy", "test", "--direction", "input",
                               "my key is AKIAIOSFODNN7EXAMPLE")
    assert blocked.returncode == 3, blocked.stdout + blocked.stderr
