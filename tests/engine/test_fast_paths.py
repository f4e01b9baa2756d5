"""The default model answers the easy questions on every CPU code path hushd can take.

CI runs on whichever CPU the machine has (AMD EPYC with oneDNN, or Intel Xeon with MKL), so
the paths the machine would not pick by itself are forced: CTranslate2's AVX2 and AVX-512
kernels, GNU's OpenMP instead of LLVM's, MKL's packed weights off, one and two intra-op
threads, the whole prompt instead of the cached system-prompt prefix, and a batch of 4. Each
runs in a fresh process, since the ISA and the OpenMP runtime are fixed per process.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from hush.daemon import paths

from ..quiz import PASS_MARK, quiz_process

_FLAGS = set()
if Path("/proc/cpuinfo").exists():
    for _line in Path("/proc/cpuinfo").read_text().splitlines():
        if _line.startswith("flags"):
            _FLAGS = set(_line.split(":", 1)[1].split())
            break
X86 = platform.machine() in ("x86_64", "AMD64")

PATHS = {
    "as chosen": ({}, ()),
    "AVX2 kernels": ({"CT2_FORCE_CPU_ISA": "AVX2"}, ()),
    "AVX-512 kernels": ({"CT2_FORCE_CPU_ISA": "AVX512"}, ()),
    "GNU OpenMP": ({"HUSH_OPENMP": "gnu"}, ()),
    "MKL packed weights off": ({"CT2_PACKED_GEMM": "0"}, ()),
    "1 thread": ({}, ("--threads", "1")),
    "2 threads": ({}, ("--threads", "2")),
    "whole prompt, no cached prefix": ({}, ("--no-prefix-cache",)),
    "batch of 4": ({}, ("--batch", "4")),
}


@pytest.mark.parametrize("path", PATHS)
def test_easy_questions_on_every_fast_path(real_cache: Path, path: str) -> None:
    env, args = PATHS[path]
    isa = env.get("CT2_FORCE_CPU_ISA")
    if isa and not X86:
        pytest.skip("an x86 kernel choice")
    if isa == "AVX512" and "avx512f" not in _FLAGS:
        pytest.skip("this CPU has no AVX-512")
    result = quiz_process(paths.CacheLayout(real_cache).models / "smollm2-135m", *args,
                          env=env)
    assert result["right"] >= PASS_MARK, (
        f"{path}: {result['right']}/{result['questions']} right; wrong: {result['wrong']}")
    if "HUSH_OPENMP" in env:
        assert result["openmp"] == env["HUSH_OPENMP"]
    if "--threads" in args:
        assert result["intra_threads"] == int(args[1])
