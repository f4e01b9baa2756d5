"""Run CTranslate2's threads on LLVM's OpenMP runtime rather than GNU's.

The CTranslate2 wheel for x86-64 brings GNU libgomp, and decoding one sequence on two intra-op
threads with it is slower than on one: every token is a few hundred small parallel regions,
and libgomp's barrier costs more than the work it splits (SmolLM2 on the 2-core development
machine: 55 tok/s on one thread, 27 on two; libgomp's wait-policy settings reached 30). LLVM's
libomp implements libgomp's ABI (the GOMP_* entry points), and a library loaded with
RTLD_GLOBAL before CTranslate2 comes first when CTranslate2's own references are bound, so its
parallel regions, and those of the oneDNN/MKL kernels inside it, run on libomp: 91 tok/s on
two threads, the same greedy tokens (bench/openmp_bench.py). libomp comes from the
`cmeel-libomp` wheel (x86-64 only); on a machine without it, or with HUSH_OPENMP=gnu,
CTranslate2 keeps libgomp.

This must run before anything loads CTranslate2: `hush.daemon.engine` calls it on import.
"""

from __future__ import annotations

import ctypes
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Literal

Runtime = Literal["llvm", "gnu"]

RUNTIME_ENV = "HUSH_OPENMP"
"""`gnu` keeps CTranslate2's own libgomp (for side-by-side benchmarks, or to rule libomp out
when diagnosing a problem); anything else, or unset, prefers libomp."""

_DISTRIBUTION = "cmeel-libomp"
_runtime: Runtime | None = None


def _libomp() -> Path | None:
    try:
        files = metadata.files(_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libomp.so":
            path = Path(str(file.locate()))
            return path if path.is_file() else None
    return None


def prefer_llvm_openmp() -> Runtime:
    """Load libomp globally if CTranslate2 is not loaded yet; say which runtime it will use."""
    global _runtime
    if _runtime is not None:
        return _runtime
    _runtime = "gnu"
    if os.environ.get(RUNTIME_ENV, "").strip().lower() == "gnu" or "ctranslate2" in sys.modules:
        return _runtime
    path = _libomp()
    if path is None:
        return _runtime
    try:
        ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
    except OSError:
        return _runtime  # a broken install: libgomp still works, only slower on 2+ threads
    _runtime = "llvm"
    return _runtime


def openmp_runtime() -> Runtime:
    """The OpenMP runtime CTranslate2 runs on in this process (shown by `hush status`)."""
    return _runtime or "gnu"
