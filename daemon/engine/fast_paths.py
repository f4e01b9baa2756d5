"""The CPU code paths the engine takes, chosen by environment variables, checked at start.

CTranslate2 reads CT2_FORCE_CPU_ISA only when it first computes (a wrong value used to fail
the first request, not the start) and takes any CT2_PACKED_GEMM value; an unknown HUSH_OPENMP
value silently meant LLVM's runtime. hushd checks all three before it loads a model, and
`hush status` shows what is in force.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

from .errors import ModelError
from .openmp import RUNTIME_ENV, openmp_runtime

ISA_ENV = "CT2_FORCE_CPU_ISA"
PACKED_GEMM_ENV = "CT2_PACKED_GEMM"
_ISAS = {"x86_64": ("GENERIC", "AVX", "AVX2", "AVX512"), "aarch64": ("GENERIC", "NEON")}
_BOOLEANS = ("0", "1", "true", "false")
_RUNTIMES = ("llvm", "gnu")


def check_environment(env: Mapping[str, str] | None = None) -> None:
    """Raise ModelError naming the valid values when a fast-path variable has another."""
    env = os.environ if env is None else env
    isas = _ISAS.get(platform.machine(), ("GENERIC",))
    problems = []
    if (isa := env.get(ISA_ENV)) is not None and isa not in isas:
        problems.append(f"{ISA_ENV}={isa!r} is not one of {', '.join(isas)} on this "
                        f"{platform.machine()} CPU")
    if (packed := env.get(PACKED_GEMM_ENV)) is not None and packed.lower() not in _BOOLEANS:
        problems.append(f"{PACKED_GEMM_ENV}={packed!r} is not one of {', '.join(_BOOLEANS)}")
    if (runtime := env.get(RUNTIME_ENV)) is not None and runtime.lower() not in _RUNTIMES:
        problems.append(f"{RUNTIME_ENV}={runtime!r} is not one of {', '.join(_RUNTIMES)}")
    if problems:
        raise ModelError("; ".join(problems) + ". Fix or unset it in hushd's environment "
                         "(a unit's Environment= line or your shell).")


def describe(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What `hush status` shows: each path, and whether it is CTranslate2's own choice."""
    env = os.environ if env is None else env
    packed = env.get(PACKED_GEMM_ENV, "").lower()
    return {
        "isa": f"{env[ISA_ENV]} (forced by {ISA_ENV})" if ISA_ENV in env
               else "CTranslate2's choice for this CPU",
        "packed_gemm": f"off ({PACKED_GEMM_ENV}={env[PACKED_GEMM_ENV]})"
                       if packed in ("0", "false") else "CTranslate2's choice (MKL on Intel)",
        "openmp": openmp_runtime(),
    }


PATHS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "as chosen": ({}, ()),
    "AVX2 kernels": ({ISA_ENV: "AVX2"}, ()),
    "AVX-512 kernels": ({ISA_ENV: "AVX512"}, ()),
    "GNU OpenMP": ({RUNTIME_ENV: "gnu"}, ()),
    "MKL packed weights off": ({PACKED_GEMM_ENV: "0"}, ()),
    "1 thread": ({}, ("--threads", "1")),
    "2 threads": ({}, ("--threads", "2")),
    "whole prompt, no cached prefix": ({}, ("--no-prefix-cache",)),
    "batch of 4": ({}, ("--batch", "4")),
}
"""Each code path hushd can take, one setting changed from its own choice: the environment
for a fresh process and the arguments of `python -m hush.daemon.engine.quiz` (the tests and
bench/quality_bench.py run them all)."""


def unavailable(env: Mapping[str, str]) -> str | None:
    """Why a path's environment cannot run on this CPU, or None when it can."""
    isa = env.get(ISA_ENV)
    if isa is None:
        return None
    if isa not in _ISAS.get(platform.machine(), ()):
        return f"{isa} kernels do not exist on {platform.machine()}"
    if isa == "AVX512" and "avx512f" not in _cpu_flags():
        return "this CPU has no AVX-512"
    return None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
