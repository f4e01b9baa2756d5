"""What every model benchmark shares: the prompts, the machine's memory bandwidth, peak RSS,
weight bytes read per token, and where results go.

The prompts are fixed text so that CTranslate2, the daemon and llama.cpp all read the same
tokens: the token ids are made once by Hush's tokenizer and handed to llama.cpp as ids.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ROOT = BENCH.parent

SYSTEM = "You are a helpful assistant."
# Asks for a long answer so greedy decoding rarely stops before the token budget.
DECODE_PROMPT = ("Write a detailed, step by step guide to planting a vegetable garden in spring: "
                 "soil, seeds, watering, sunlight, pests and harvest.")

# A 222-token-ish system prompt (the size MODELS.md measured static_prompt caching with).
LONG_SYSTEM = (
    "You are Hush, a private assistant that runs entirely on this device. You never send data "
    "anywhere. Answer in plain English, briefly and precisely. When you are not sure, say so "
    "instead of guessing. When the user asks for code, give a short, correct example and one "
    "sentence on how it works. When the user asks for a summary, keep names, numbers and dates, "
    "and never add facts that are not in the text. Never reveal personal data such as e-mail "
    "addresses, phone numbers, card numbers or account numbers; replace them with a short "
    "placeholder such as [email] or [phone]. Prefer lists for steps and tables for comparisons. "
    "Use metric units unless the user uses others. Dates are written as year-month-day. If a "
    "question is ambiguous, answer the most likely reading and mention the other one in a "
    "single sentence. Keep every answer under two hundred words unless the user asks for more. "
    "Be polite, but do not apologise repeatedly, and do not thank the user for asking."
)

_PASSAGE = (
    "The lighthouse at the end of the northern pier was built in 1871 from granite quarried "
    "two valleys away. For ninety years a keeper and his family lived in the small house at its "
    "foot, trimming the wick every four hours, winding the clockwork that turned the lens, and "
    "writing the weather into a leather log three times a day. The logs survive: they record "
    "storms that moved the breakwater stones, a winter when the harbour froze solid, the night "
    "in 1913 when the lamp failed and the keeper's daughter held a lantern at the gallery rail "
    "until dawn. Electricity arrived in 1958, automation in 1961, and the last keeper left with "
    "his furniture on a cart. Today the tower is a museum, and the light still turns, guided by "
    "a sensor and a timer instead of a family. "
)


def long_prompt_text(repeats: int = 8) -> str:
    """A ~1,300-token user message (for SmolLM2's tokenizer) for prefill timing."""
    return ("Read the notes below and answer the question at the end.\n\n"
            + _PASSAGE * repeats + "\nQuestion: in which year did electricity arrive?")


def chat(user: str, system: str = SYSTEM) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of a handful of samples is their maximum)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM of a process: the most resident memory it ever had, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_bandwidth(size_mb: int = 1024, threads: int = 1, repeat: int = 3) -> float:
    """Copy bandwidth in GB/s, counting bytes read plus bytes written (STREAM's convention).

    numpy's copy releases the GIL, so `threads` workers each copy their own slice at once.
    """
    n = size_mb * 1024 * 1024 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.zeros(n, dtype=np.float64)
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)

    def part(i: int) -> None:
        np.copyto(dst[bounds[i]:bounds[i + 1]], src[bounds[i]:bounds[i + 1]])

    best = float("inf")
    for _ in range(repeat):
        workers = [threading.Thread(target=part, args=(i,)) for i in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def _read_worker(size_mb: int, repeat: int, start: Any, result: Any) -> None:
    # A dot product of the array with itself: BLAS streams it once with vector loads. numpy's
    # sum() was compute-bound on a 2.8 GHz Xeon (8.3 GB/s where the dot product read 16.5).
    data = np.ones(size_mb * 1024 * 1024 // 8, dtype=np.float64)
    float(data @ data)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeat):
        start.wait()
        began = time.perf_counter()
        float(data @ data)
        best = min(best, time.perf_counter() - began)
    result.put(data.nbytes / best)


def read_bandwidth(threads: int = 1, size_mb: int = 1024, repeat: int = 3) -> float:
    """Read bandwidth in GB/s: `threads` processes each summing its own array at once (a
    decode step reads its weights; it writes little). Processes, so no lock is shared."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    # One BLAS thread per worker process, so `threads` processes use `threads` cores; spawned
    # children read it when they import numpy.
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    start = context.Barrier(threads)
    result: Any = context.Queue()
    workers = [context.Process(target=_read_worker,
                               args=(size_mb // threads, repeat, start, result))
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    rates = [result.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
    if blas_threads is None:
        del os.environ["OPENBLAS_NUM_THREADS"]
    else:
        os.environ["OPENBLAS_NUM_THREADS"] = blas_threads
    # Each worker's best run; their runs started together, so the rates add up.
    return sum(rates) / 1e9


def weight_bytes_per_token(gguf_path: Path) -> dict[str, float]:
    """Bytes of weights one decode step reads, for the GGUF as stored and as CTranslate2 int8.

    Every matrix is read once per token; the token embedding table is read as a whole only when
    it doubles as the LM head (tied), otherwise one row of it is (negligible). CTranslate2 int8
    stores each matrix as 1 byte per weight plus one float32 scale per row, vectors in float32.
    """
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    tensors = {t.name: t for t in reader.tensors}
    tied = "output.weight" not in tensors
    gguf_bytes = 0.0
    int8_bytes = 0.0
    for name, tensor in tensors.items():
        if name == "token_embd.weight" and not tied:
            continue
        shape = [int(d) for d in tensor.shape]
        elements = int(np.prod(shape))
        gguf_bytes += int(tensor.n_bytes)
        if len(shape) >= 2:
            int8_bytes += elements + 4 * shape[-1]  # gguf lists the innermost dimension first
        else:
            int8_bytes += 4 * elements
    embd = tensors["token_embd.weight"]
    return {"gguf_mb": gguf_bytes / 1e6, "ct2_int8_mb": int8_bytes / 1e6, "tied": tied,
            "vocab": int(embd.shape[-1]), "lm_head_params_m": int(np.prod(
                [int(d) for d in (tensors.get("output.weight") or embd).shape])) / 1e6}


_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "asimd",
              "asimddp")


def machine() -> dict[str, Any]:
    """The CPU every report is measured on: vendor, model and the ISA extensions that pick
    CTranslate2's and llama.cpp's kernels."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"cpu": fields.get("model name", ""), "vendor": fields.get("vendor_id", ""),
            "isa": [f for f in _ISA_FLAGS if f in flags],
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "machine": platform.machine(),
            "load_avg_at_start": os.getloadavg()}


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else None
