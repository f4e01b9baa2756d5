"""The default model answers the easy questions on every CPU code path hushd can take.

CI runs on whichever CPU the machine has (AMD EPYC with oneDNN, or Intel Xeon with MKL), so
the paths the machine would not pick by itself are forced: CTranslate2's AVX2 and AVX-512
kernels, GNU's OpenMP instead of LLVM's, MKL's packed weights off, one and two intra-op
threads, the whole prompt instead of the cached system-prompt prefix, and a batch of 4. Each
runs in a fresh process, since the ISA and the OpenMP runtime are fixed per process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hush.daemon import paths
from hush.daemon.engine.fast_paths import PATHS, unavailable

from ..quiz import PASS_MARK, quiz_process


@pytest.mark.parametrize("path", PATHS)
def test_easy_questions_on_every_fast_path(real_cache: Path, path: str) -> None:
    env, args = PATHS[path]
    if reason := unavailable(env):
        pytest.skip(reason)
    result = quiz_process(paths.CacheLayout(real_cache).models / "smollm2-135m", *args,
                          env=env)
    assert result["right"] >= PASS_MARK, (
        f"{path}: {result['right']}/{result['questions']} right; wrong: {result['wrong']}")
    if "HUSH_OPENMP" in env:
        assert result["openmp"] == env["HUSH_OPENMP"]
    if "--threads" in args:
        assert result["intra_threads"] == int(args[1])
