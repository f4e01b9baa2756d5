"""Where CTranslate2's single-stream decode time goes: its int8 GEMMs, one by one.

CTranslate2 on x86 without Intel MKL's fast path (AMD CPUs) runs its int8 matrix products
through oneDNN's GEMM API. `ONEDNN_VERBOSE=1` makes oneDNN print every call with its shape and
time; a decode step with one sequence is a row of matrix-vector products (M=1), one per weight
matrix. This runs greedy decoding in a child process with that switch on and sums, per weight
shape: calls per token, time per call, and the rate at which those calls read weights (int8
bytes / time). A rate far below the memory bandwidth means the kernel, not memory, is the limit.

    .venv/bin/python -m bench.gemm_probe --model smollm2-135m [--threads 1,2]
Writes bench/results/gemm-<model>.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from typing import Any

from hush.daemon.paths import CacheLayout

from . import common

_CHILD = """
import sys, time
from pathlib import Path
from hush.daemon.engine.generator import Engine, GenerationOptions
from bench import common
engine = Engine.load(Path(sys.argv[1]), intra_threads=int(sys.argv[2]))
ids = engine.prompt_ids(common.chat(common.DECODE_PROMPT))
generation = engine.stream(ids, GenerationOptions(max_tokens=int(sys.argv[3])))
print("hush-begin", flush=True)
"".join(generation)
print(f"hush-end {generation.completion_tokens} {generation.first_token_time}", flush=True)
engine.close()
"""


def probe(model_dir: str, threads: int, tokens: int) -> dict[str, Any]:
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    done = subprocess.run([sys.executable, "-c", _CHILD, model_dir, str(threads), str(tokens)],
                          env=env, capture_output=True, text=True, cwd=common.ROOT, check=True)
    calls: dict[str, list[float]] = collections.defaultdict(list)
    other_ms = 0.0
    produced = tokens
    for line in done.stdout.splitlines():
        if line.startswith("hush-end"):
            produced = int(line.split()[1])
        if not line.startswith("onednn_verbose,exec,cpu,gemm_api"):
            continue
        fields = line.split(",")
        shape, ms = fields[-2], float(fields[-1])
        if "src_u8" in line and shape.startswith("1x"):
            calls[shape].append(ms)  # one sequence: a matrix-vector product per weight
        elif "src_u8" not in line:
            other_ms += ms  # attention's float32 products
    rows = []
    for shape, times in sorted(calls.items(), key=lambda kv: -sum(kv[1])):
        k, n = (int(x) for x in shape.split(":")[1].split("x"))
        per_call = sum(times) / len(times)
        rows.append({"shape_k_x_n": f"{k}x{n}", "calls_per_token": round(len(times) / produced, 1),
                     "ms_per_call": round(per_call, 4),
                     "ms_per_token": round(sum(times) / produced, 3),
                     "weights_gb_s": round(k * n / per_call / 1e6, 2)})
    int8_ms = sum(r["ms_per_token"] for r in rows)
    return {"threads": threads, "tokens": produced, "gemms": rows,
            "int8_gemm_ms_per_token": round(int8_ms, 2),
            "f32_gemm_ms_per_token": round(other_ms / produced, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model_dir = str(CacheLayout.default().models / args.model)
    result = {"model": args.model,
              "runs": {t: probe(model_dir, int(t), args.tokens) for t in args.threads.split(",")}}
    for t, run in result["runs"].items():
        print(f"  {t} thr: int8 GEMMs {run['int8_gemm_ms_per_token']} ms/token; "
              + ", ".join(f"{g['shape_k_x_n']} {g['weights_gb_s']} GB/s" for g in run["gemms"]),
              flush=True)
    print(f"results: {common.write_result(f'gemm-{args.model}', result)}", flush=True)


if __name__ == "__main__":
    main()
