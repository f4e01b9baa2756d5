"""int8 against float32 of the same GGUF, teacher forced, on every fast path hushd can take.

For each model, the float32 import's next-token distributions over held-out text
(bench/data/agreement_text.txt) are the reference, computed once on CTranslate2's own path.
The int8 import (the cached one: SmoothQuant, and the rotation for llama models) is then run
once per path of
hush.daemon.engine.fast_paths.PATHS in a fresh process: forced AVX2 or AVX-512 kernels, GNU's
OpenMP, MKL packed weights off, 1 or 2 threads, and a batch of 4 sequences at once. Reported:
top-1 agreement (the share of positions where both predict the same token; the bar is 0.97)
and the mean KL(float32 || int8) in nats. The cached-prefix path is a generation path, so it
is covered by the quiz (quality_bench.py), not here.

    python -m bench.agreement_bench --models smollm2-135m,qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hush.daemon.engine.fast_paths import PATHS, unavailable

from . import common

TEXT = common.BENCH / "data" / "agreement_text.txt"
BAR = 0.97
# The quiz's paths that change no forward pass are left out.
SKIPPED = ("whole prompt, no cached prefix",)
F64 = npt.NDArray[np.float64]


def _log_softmax(logits: npt.NDArray[np.floating[Any]]) -> F64:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    out: F64 = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return out


def log_probs(model_dir: Path, threads: int | None, batch: int) -> list[F64]:
    """Teacher-forced log-probabilities for each paragraph of TEXT."""
    from hush.daemon.engine.generator import Engine

    engine = Engine.load(model_dir, intra_threads=threads)
    try:
        sequences = []
        for paragraph in [p for p in TEXT.read_text().split("\n\n") if p.strip()]:
            ids = engine.tokenizer.encode(paragraph.strip())
            if engine.info.add_bos and engine.bos_id is not None:
                ids.insert(0, engine.bos_id)
            sequences.append(ids)
        out = []
        for start in range(0, len(sequences), batch):
            group = sequences[start:start + batch]
            logits = np.array(engine.generator.forward_batch(group))
            out += [_log_softmax(logits[i, :len(ids)]) for i, ids in enumerate(group)]
        return out
    finally:
        engine.close()


def _child(spec: dict[str, Any]) -> None:
    threads = spec["threads"]
    ours = log_probs(Path(spec["model_dir"]), threads, spec["batch"])
    reference = np.load(spec["reference"])
    matches = positions = 0
    kl = 0.0
    for i, lp in enumerate(ours):
        ref = reference[f"p{i}"]
        matches += int((lp.argmax(-1) == ref.argmax(-1)).sum())
        positions += len(lp)
        kl += float((np.exp(ref) * (ref - lp)).sum())
    print(json.dumps({"top1": round(matches / positions, 4), "positions": positions,
                      "kl": round(kl / positions, 5)}))


def measure(int8_dir: Path, float32_dir: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hush-agree-") as tmp:
        reference = Path(tmp) / "reference.npz"
        np.savez(reference, **{f"p{i}": lp for i, lp in
                               enumerate(log_probs(float32_dir, None, 1))})
        for name, (env, args) in PATHS.items():
            if name in SKIPPED or unavailable(env):
                continue
            spec = {"model_dir": str(int8_dir), "reference": str(reference),
                    "threads": int(args[1]) if "--threads" in args else None,
                    "batch": int(args[1]) if "--batch" in args else 1}
            done = subprocess.run(
                [sys.executable, "-m", "bench.agreement_bench", "--child", json.dumps(spec)],
                env={**os.environ, **env}, capture_output=True, text=True, cwd=common.ROOT,
                check=True)
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"    {name}: top-1 {rows[name]['top1']:.3f}, KL {rows[name]['kl']:.4f}",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    from hush.daemon.engine.convert.gguf_import import import_gguf
    from hush.daemon.engine.convert.pull import fetch_gguf, pull
    from hush.daemon.paths import CacheLayout

    layout = CacheLayout.default()
    result: dict[str, Any] = {"machine": common.machine(), "bar": BAR, "models": {},
                              "import": ("int8, the default import: SmoothQuant (alpha 0.5), "
                                         "and the residual rotation for llama models")}
    for name in [m for m in args.models.split(",") if m]:
        pull(name, layout.models, layout.downloads)
        print(f"  {name}: int8 against float32", flush=True)
        with tempfile.TemporaryDirectory(prefix="hush-f32-") as tmp:
            float32_dir = Path(tmp) / name
            import_gguf(fetch_gguf(name, layout.downloads), float32_dir,
                        quantization="float32")
            result["models"][name] = measure(layout.models / name, float32_dir)
    print(f"results: {common.write_result('agreement', result)}")


if __name__ == "__main__":
    main()
