"""Run every benchmark, one heavy thing at a time, then write docs/benchmarks.md and its plots.

    .venv/bin/python -m bench.run                 # what `make bench` runs (~20 min on 2 cores)
    .venv/bin/python -m bench.run --models smollm2-135m --skip store,policy
    .venv/bin/python -m bench.run --report-only   # re-render the doc from bench/results/

Each model benchmark runs in its own process so peak RSS is per model and a crash in one
model's run does not lose the others. llama.cpp comes from the `bench` extra, or from the
interpreter named by HUSH_BENCH_LLAMA_PYTHON; without it the reference columns stay empty.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

from . import common


@dataclass(frozen=True)
class ModelRun:
    """How much work each model gets: bigger models decode fewer tokens to fit the budget."""

    name: str
    tokens: int
    repeat: int
    summary: bool = False


DEFAULT_MODELS = (
    ModelRun("smollm2-135m", tokens=128, repeat=3, summary=True),
    ModelRun("gemma3-270m", tokens=128, repeat=2),
    ModelRun("qwen2.5-coder-0.5b", tokens=64, repeat=2),
)
# Vocabulary sizes for the pruning benchmark (`hush model pull NAME --vocab N`): about a third
# of SmolLM2's, a fifth of Qwen2.5's, an eighth of Gemma 3's.
PRUNE_SIZES = {"smollm2-135m": 16384, "qwen2.5-coder-0.5b": 32768, "gemma3-270m": 32768}
# Cheap enough to include only on request: about 3 tok/s here.
OPTIONAL_MODELS = (ModelRun("qwen2.5-coder-1.5b", tokens=32, repeat=1),)


def run(module: str, *args: str) -> bool:
    command = [sys.executable, "-m", f"bench.{module}", *args]
    print(f"\n$ {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=common.ROOT)
    print(f"  ({time.monotonic() - started:.0f} s, exit {done.returncode})", flush=True)
    return done.returncode == 0


def run_script(name: str, *args: str) -> bool:
    """The older benchmarks are plain scripts next to this one."""
    command = [sys.executable, str(common.BENCH / name), *args]
    print(f"\n$ {name} {' '.join(args)}", flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=common.ROOT)
    print(f"  ({time.monotonic() - started:.0f} s, exit {done.returncode})", flush=True)
    return done.returncode == 0


def measure_machine() -> None:
    print("memory bandwidth (1 GB read, 1 GB copy)...", flush=True)
    read = {str(t): round(common.read_bandwidth(threads=t), 2) for t in (1, 2)}
    copy = {str(t): round(common.memory_bandwidth(threads=t), 2) for t in (1, 2)}
    data = {**common.machine(), "read_bandwidth_gb_s": read, "copy_bandwidth_gb_s": copy}
    common.write_result("machine", data)
    print(f"  read {read['1']} GB/s on one core, {read['2']} on two; copy {copy['1']} / "
          f"{copy['2']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated catalog names (default: the three "
                        "small ones; add qwen2.5-coder-1.5b to include it)")
    parser.add_argument("--skip", default="",
                        help="comma-separated: engine,daemon,prune,openmp,gemm,store,policy")
    parser.add_argument("--no-llama", action="store_true", help="no llama.cpp reference")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    known = {m.name: m for m in (*DEFAULT_MODELS, *OPTIONAL_MODELS)}
    models = ([known.get(n) or ModelRun(n, 64, 2) for n in args.models.split(",")]
              if args.models else list(DEFAULT_MODELS))

    started = time.monotonic()
    failed: list[str] = []
    if not args.report_only:
        measure_machine()
        for model in models:
            if "engine" not in skip:
                extra = ["--summary"] if model.summary else []
                if args.no_llama:
                    extra.append("--no-llama")
                if not run("engine_bench", "--model", model.name, "--tokens", str(model.tokens),
                           "--repeat", str(model.repeat), *extra):
                    failed.append(f"engine {model.name}")
            if "daemon" not in skip and not run(
                "daemon_bench", "--model", model.name, "--tokens", str(model.tokens),
                "--repeat", str(model.repeat),
            ):
                failed.append(f"daemon {model.name}")
            if "prune" not in skip and model.name in PRUNE_SIZES:
                extra = ["--no-llama"] if args.no_llama else []
                if not run("prune_bench", "--model", model.name, "--vocab",
                           str(PRUNE_SIZES[model.name]), "--tokens", str(model.tokens),
                           "--repeat", str(model.repeat), *extra):
                    failed.append(f"prune {model.name}")
            if "openmp" not in skip and not run(
                "openmp_bench", "--model", model.name, "--tokens", str(model.tokens),
                "--repeat", str(model.repeat),
            ):
                failed.append(f"openmp {model.name}")
            if "gemm" not in skip and not run("gemm_probe", "--model", model.name):
                failed.append(f"gemm {model.name}")
        if "store" not in skip and not run_script("store_bench.py"):
            failed.append("store")
        if "policy" not in skip and not run_script("policy_bench.py", "--mb", "2",
                                                   "--stream-mb", "0.5"):
            failed.append("policy")
    from .report import write_report

    path = write_report([m.name for m in models])
    print(f"\nwrote {path} in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
