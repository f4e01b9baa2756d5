"""CTranslate2's threads run on LLVM's libomp (x86-64), with the same answers as on libgomp.

Each case is a fresh interpreter: which OpenMP runtime CTranslate2 binds to is decided once per
process, when it is first loaded.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REAL_MODEL

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="cmeel-libomp is installed on x86-64 only")

# Two intra-op threads: the setting libgomp made slow. KMP_SETTINGS=1 makes libomp print its
# settings when something first calls into it, which only happens if CTranslate2's OpenMP
# calls reach it.
_CHILD = """
import json, sys
from pathlib import Path
{before}
from hush.daemon.engine.generator import Engine, GenerationOptions
from hush.daemon.engine.openmp import openmp_runtime
engine = Engine.load(Path(sys.argv[1]), intra_threads=2)
ids = engine.prompt_ids([{{"role": "user", "content": "What is the capital of France?"}}])
text = "".join(engine.stream(ids, GenerationOptions(max_tokens=24)))
engine.close()
maps = Path("/proc/self/maps").read_text()
print(json.dumps({{"runtime": openmp_runtime(), "text": text,
                  "libomp_mapped": "/libomp.so" in maps}}))
"""


def _run(model_dir: Path, *, before: str = "", **env: str) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD.format(before=before), str(model_dir)],
        env={**os.environ, "KMP_SETTINGS": "1", **env}, capture_output=True, text=True,
        timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result, done.stderr


@pytest.fixture(scope="module")
def model_dir(real_cache: Path) -> Path:
    return real_cache / "models" / REAL_MODEL


def test_ctranslate2_runs_on_libomp_and_answers_as_on_libgomp(model_dir: Path) -> None:
    llvm, llvm_err = _run(model_dir)
    gnu, gnu_err = _run(model_dir, HUSH_OPENMP="gnu")
    assert llvm["runtime"] == "llvm" and llvm["libomp_mapped"]
    assert "KMP_SETTINGS" in llvm_err  # libomp was called, by CTranslate2
    assert gnu["runtime"] == "gnu" and not gnu["libomp_mapped"]
    assert "KMP_SETTINGS" not in gnu_err
    assert str(llvm["text"]).strip()
    # Greedy, same kernels, same split of the work: the runtime changes speed, not answers.
    # (Whether those answers are right, on each runtime, is test_fast_paths.py's question.)
    assert llvm["text"] == gnu["text"]


def test_too_late_to_switch_is_reported_honestly(model_dir: Path) -> None:
    # Something loaded CTranslate2 before Hush's engine package: it stays on libgomp, and
    # `hush status` must not claim otherwise.
    result, stderr = _run(model_dir, before="import ctranslate2")
    assert result["runtime"] == "gnu"
    assert "KMP_SETTINGS" not in stderr
