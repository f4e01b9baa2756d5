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
