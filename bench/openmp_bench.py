"""Single-stream decode on LLVM's libomp against CTranslate2's own GNU libgomp, side by side.

Which OpenMP runtime CTranslate2 binds to is fixed when a process first loads it, so every
measurement is a fresh child process (`HUSH_OPENMP=gnu` keeps libgomp, see
daemon/engine/openmp.py). The two runtimes take turns for each thread count in every repeat,
on the same prompt ids, greedy; the children also report their greedy tokens, which must match.

    .venv/bin/python -m bench.openmp_bench --model smollm2-135m [--tokens 128] [--repeat 3]
Writes bench/results/openmp-<model>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import common

RUNTIMES = ("llvm", "gnu")


def _child(model_dir: Path, threads: int, tokens: int) -> None:
    from hush.daemon.engine.generator import Engine
    from hush.daemon.engine.openmp import openmp_runtime

    from .engine_bench import RawCT2, decode_rate

    engine = Engine.load(model_dir, intra_threads=threads)
    try:
        raw = RawCT2(engine)
        ids = engine.prompt_ids(common.chat(common.DECODE_PROMPT))
        raw.run(ids, 8)  # warm-up: the first call allocates
        result = raw.run(ids, tokens, end=False)
    finally:
        engine.close()
    digest = hashlib.sha256(json.dumps(result["tokens"]).encode()).hexdigest()[:16]
    print(json.dumps({"runtime": openmp_runtime(), "decode_tok_s": decode_rate(result),
                      "tokens_sha": digest}), flush=True)


def measure(model_dir: Path, runtime: str, threads: int, tokens: int) -> dict[str, Any]:
    env = dict(os.environ, HUSH_OPENMP=runtime)
    done = subprocess.run(
        [sys.executable, "-m", "bench.openmp_bench", "--child", "--model-dir", str(model_dir),
         "--threads", str(threads), "--tokens", str(tokens)],
        env=env, capture_output=True, text=True, cwd=common.ROOT, check=True)
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if answer["runtime"] != runtime:
        raise RuntimeError(f"asked for the {runtime} OpenMP runtime, the child ran on "
                           f"{answer['runtime']} (is cmeel-libomp installed?)")
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(Path(args.model_dir), int(args.threads), args.tokens)
        return
    from hush.daemon.paths import CacheLayout

    model_dir = CacheLayout.default().models / args.model
    counts = [int(t) for t in args.threads.split(",") if t]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        str(t): {rt: [] for rt in RUNTIMES} for t in counts}
    for _ in range(args.repeat):
        for threads in counts:
            for runtime in RUNTIMES:
                runs[str(threads)][runtime].append(
                    measure(model_dir, runtime, threads, args.tokens))
    rows = {}
    for threads, by_runtime in runs.items():
        best = {rt: round(max(r["decode_tok_s"] for r in by_runtime[rt]), 2) for rt in RUNTIMES}
        digests = {r["tokens_sha"] for rt in RUNTIMES for r in by_runtime[rt]}
        rows[threads] = {**{f"{rt}_tok_s": best[rt] for rt in RUNTIMES},
                         "same_greedy_tokens": len(digests) == 1}
        print(f"  {args.model} {threads} thread(s): libomp {best['llvm']} tok/s, libgomp "
              f"{best['gnu']} tok/s, same tokens: {len(digests) == 1}", flush=True)
    result = {"model": args.model, "threads": rows,
              "settings": {"new_tokens": args.tokens, "repeat": args.repeat}}
    print(f"results: {common.write_result(f'openmp-{args.model}', result)}")


if __name__ == "__main__":
    main()
