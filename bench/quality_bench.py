"""Answer quality per model and per fast path: the held-out quiz (bench/data/quiz.json).

Every CPU code path hushd can take (hush.daemon.engine.fast_paths.PATHS: CTranslate2's AVX2 or
AVX-512 kernels, GNU's OpenMP, MKL packed weights off, 1 or 2 intra-op threads, the whole prompt
instead of the cached system-prompt prefix, a batch of 4) is measured in a fresh process,
one setting changed at a time from hushd's own choice, so the figures sit side by side from one
run. Repetition penalties are compared on the same quiz with long answers: an answer loops
when some 6-word run occurs three times in it.

    python -m bench.quality_bench --models smollm2-135m,qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hush.daemon.engine.fast_paths import PATHS, unavailable

from . import common

QUIZ = common.BENCH / "data" / "quiz.json"

PENALTIES = (1.0, 1.1, 1.2)


def run(model_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One quiz in a fresh process (hush.daemon.engine.quiz) with a path's settings."""
    done = subprocess.run([sys.executable, "-m", "hush.daemon.engine.quiz", str(model_dir),
                           str(QUIZ), *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, cwd=common.ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"quiz child failed for {args} {env}:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    del result["answers"]
    return result


def measure_model(name: str, models_dir: Path, paths: list[str], penalties: bool,
                  float32_dir: Path | None) -> dict[str, Any]:
    model_dir = models_dir / name
    out: dict[str, Any] = {"paths": {}, "penalties": {}}
    for path in paths:
        env, args = PATHS[path]
        if reason := unavailable(env):
            print(f"  {name} {path}: skipped, {reason}", flush=True)
            continue
        result = run(model_dir, *args, "--max-tokens", "48", env=env)
        out["paths"][path] = result
        print(f"  {name} {path}: {result['right']}/{result['questions']} right, "
              f"{result['seconds']} s", flush=True)
    if float32_dir is not None:
        result = run(float32_dir, "--max-tokens", "48")
        out["paths"]["float32"] = result
        print(f"  {name} float32: {result['right']}/{result['questions']} right", flush=True)
    if penalties:
        for penalty in PENALTIES:
            result = run(model_dir, "--max-tokens", "160", "--repetition-penalty", str(penalty))
            out["penalties"][str(penalty)] = result
            print(f"  {name} repetition_penalty {penalty}: {result['right']}/"
                  f"{result['questions']} right, {result['looping']} looping", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--no-penalties", action="store_true")
    parser.add_argument("--float32", action="store_true",
                        help="also import each model as float32 (into a temporary directory)")
    args = parser.parse_args()
    import tempfile

    from hush.daemon.engine.convert.gguf_import import import_gguf
    from hush.daemon.engine.convert.pull import fetch_gguf, pull
    from hush.daemon.paths import CacheLayout

    layout = CacheLayout.default()
    result: dict[str, Any] = {"machine": common.machine(), "quiz": str(QUIZ.name),
                              "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        pull(name, layout.models, layout.downloads)
        with tempfile.TemporaryDirectory(prefix="hush-f32-") as tmp:
            float32_dir = None
            if args.float32:
                float32_dir = Path(tmp) / name
                import_gguf(fetch_gguf(name, layout.downloads), float32_dir,
                            quantization="float32")
            result["models"][name] = measure_model(
                name, layout.models, [p for p in args.paths.split(",") if p],
                not args.no_penalties, float32_dir)
    print(f"results: {common.write_result('quality', result)}")


if __name__ == "__main__":
    main()
