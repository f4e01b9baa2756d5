"""Vocabulary pruning (`hush model pull NAME --vocab N`): speed against llama.cpp, and quality.

Imports the model again with the product's importer and `VocabPruning(N)` (no corpus: the
default rule, earliest merges first) into a temporary directory, then:
- decode speed, side by side: the full model, the pruned model and llama.cpp on the same GGUF,
  taking turns in each repeat at the same thread count, on the same prompt (Hush's token ids,
  greedy, the same number of new tokens);
- quality on held-out text (this repository's docs and the summarizer's test corpus; the kept
  set never saw it), with the real models' logits (CTranslate2 `forward_batch`):
  - top-1 agreement: on the text as the pruned tokenizer splits it, how often the pruned model's
    most likely next token is the full model's (they differ only where the full model's choice
    was dropped);
  - perplexity of both models on that same token sequence;
  - bits per byte, each model on its own tokenization of the text (the pruned one needs more
    tokens for the same text; this figure includes that cost);
  - coverage: the share of the full tokenization's tokens the kept set contains.

    .venv/bin/python -m bench.prune_bench --model smollm2-135m --vocab 16384 [--threads 1,2]
Writes bench/results/prune-<model>.json.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hush.daemon.engine.convert.gguf_import import VocabPruning, import_gguf
from hush.daemon.engine.convert.pull import fetch_gguf
from hush.daemon.engine.generator import Engine
from hush.daemon.engine.tokenizer import read_kept
from hush.daemon.paths import CacheLayout

from . import common
from .engine_bench import RawCT2, best, decode_rate
from .llama_bench import LlamaPeer, available

# Under 512: CTranslate2's forward_batch fails past Gemma 3's 512-token sliding window.
WINDOW = 384


def held_out_text() -> str:
    root = common.ROOT
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md")),
             *sorted((root / "tests" / "summarize" / "corpus").glob("*.md")),
             *sorted((root / "tests" / "summarize" / "corpus").glob("*.txt"))]
    return "\n\n".join(p.read_text(errors="replace") for p in paths
                       if p.exists() and p.name != "benchmarks.md")


def _logits(engine: Engine, ids: Sequence[int]) -> np.ndarray[Any, np.dtype[np.float32]]:
    tokens = [engine.tokenizer.id_to_token(i) for i in ids]
    return np.array(engine.generator.forward_batch([tokens]), dtype=np.float32)[0]


def _nll(logits: np.ndarray[Any, np.dtype[np.float32]], targets: Sequence[int]) -> np.ndarray[
        Any, np.dtype[np.float64]]:
    # log-sum-exp shifted by each row's maximum: exp in float32 is vectorized, the sum is
    # float64 (np.logaddexp.reduce took minutes over Gemma's 262,144-entry rows).
    top = logits.max(axis=-1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1, dtype=np.float64))
    return lse - logits[np.arange(len(targets)), np.asarray(targets)]


def _windows(ids: Sequence[int], bos: int | None
             ) -> list[tuple[list[int], list[int], int]]:
    """(inputs, targets, skip) per window, each starting with BOS when the model wants one.

    Every token of `ids` after the first is a target exactly once: a later window's BOS
    predicts a token the previous window already scored, so its first `skip` are left out.
    """
    lead = [bos] if bos is not None else []
    out = []
    for start in range(0, len(ids) - 1, WINDOW):
        chunk = [*lead, *ids[start:start + WINDOW + 1]]
        out.append((chunk[:-1], chunk[1:], len(lead)))
    return out


def _scored(engine: Engine, ids: Sequence[int], bos: int | None, *, mapped: Sequence[int] = ()
            ) -> Iterator[tuple[Any, list[int]]]:
    """(logits, targets) of each window, in the ids of `engine`; `mapped` maps the ids first.

    One window at a time: Gemma's 262,144-entry logits are 400 MB per window."""
    for inputs, targets, skip in _windows(ids, bos):
        if mapped:
            inputs = [int(mapped[i]) for i in inputs]
            targets = [int(mapped[i]) for i in targets]
        yield _logits(engine, inputs)[skip:], targets[skip:]


def quality(full: Engine, pruned: Engine, kept: list[int]) -> dict[str, Any]:
    text = held_out_text()
    n_bytes = len(text.encode("utf-8"))
    kept_array = np.asarray(kept)
    bos = full.bos_id if full.info.add_bos else None
    small_ids = pruned.tokenizer.encode(text)
    big_ids = full.tokenizer.encode(text)
    bos_small = None if bos is None else pruned.tokenizer.token_to_id(
        full.tokenizer.id_to_token(bos))
    agree = positions = 0
    nll_full_same: list[float] = []
    nll_pruned_same: list[float] = []
    small_windows = _scored(pruned, small_ids, bos_small)
    big_windows = _scored(full, small_ids, bos_small, mapped=kept)
    for (small, targets), (big, original_targets) in zip(small_windows, big_windows,
                                                         strict=True):
        agree += int((kept_array[small.argmax(-1)] == big.argmax(-1)).sum())
        positions += len(targets)
        nll_pruned_same += list(_nll(small, targets))
        nll_full_same += list(_nll(big, original_targets))
    nll_full_own = [float(x) for logits, targets in _scored(full, big_ids, bos)
                    for x in _nll(logits, targets)]
    kept_set = set(kept)
    return {
        "held_out_bytes": n_bytes,
        "tokens_full": len(big_ids), "tokens_pruned": len(small_ids),
        "coverage": round(sum(1 for i in big_ids if i in kept_set) / len(big_ids), 4),
        "top1_agreement": round(agree / positions, 4),
        "ppl_full": round(math.exp(float(np.mean(nll_full_same))), 3),
        "ppl_pruned": round(math.exp(float(np.mean(nll_pruned_same))), 3),
        "bits_per_byte_full": round(sum(nll_full_own) / n_bytes / math.log(2), 4),
        "bits_per_byte_pruned": round(float(sum(nll_pruned_same)) / n_bytes / math.log(2), 4),
    }


def speeds(full: Path, pruned: Path, gguf: Path, threads: int, tokens: int, repeat: int,
           peer: LlamaPeer | None) -> dict[str, Any]:
    """Decode tok/s of the three, taking turns in every repeat (noise hits all alike)."""
    engines = {"full": Engine.load(full, intra_threads=threads),
               "pruned": Engine.load(pruned, intra_threads=threads)}
    try:
        # Same token ids for all three: both tokenizers split this English prompt alike.
        ids = engines["full"].prompt_ids(common.chat(common.DECODE_PROMPT))
        small = engines["pruned"].prompt_ids(common.chat(common.DECODE_PROMPT))
        kept = read_kept(pruned) or []
        same_prompt = [kept[i] for i in small] == ids
        raws = {name: RawCT2(e) for name, e in engines.items()}
        runs: dict[str, list[dict[str, Any]]] = {"full": [], "pruned": [], "llama_cpp": []}
        if peer is not None:
            peer.load(gguf, threads)
            peer.generate(ids, 8)
        for name, raw in raws.items():
            raw.run(ids if name == "full" else small, 8)  # warm-up
        for _ in range(repeat):
            runs["full"].append(raws["full"].run(ids, tokens, end=False))
            runs["pruned"].append(raws["pruned"].run(small, tokens, end=False))
            if peer is not None:
                runs["llama_cpp"].append(peer.generate(ids, tokens))
        out: dict[str, Any] = {"threads": threads, "same_prompt_ids": same_prompt,
                               "new_tokens": tokens, "repeat": repeat}
        for name, results in runs.items():
            if results:
                out[f"{name}_tok_s"] = round(decode_rate(best(results)), 2)
        print(f"  {threads} thr: {out}", flush=True)
        return out
    finally:
        for engine in engines.values():
            engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--vocab", type=int, required=True)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-llama", action="store_true")
    args = parser.parse_args()
    layout = CacheLayout.default()
    model_dir = layout.models / args.model
    gguf = fetch_gguf(args.model, layout.downloads)
    why_not = "disabled with --no-llama" if args.no_llama else available()
    tmp = Path(tempfile.mkdtemp(prefix="hush-prune-"))
    try:
        started = time.perf_counter()
        import_gguf(gguf, tmp / "model", prune=VocabPruning(args.vocab))
        build_s = time.perf_counter() - started
        kept = read_kept(tmp / "model")
        assert kept is not None
        print(f"{args.model}: kept {len(kept):,} tokens, imported in {build_s:.0f} s", flush=True)
        full, pruned = Engine.load(model_dir, intra_threads=1), Engine.load(tmp / "model",
                                                                            intra_threads=1)
        try:
            q = quality(full, pruned, kept)
            vocab_full = full.tokenizer.vocab_size
        finally:
            full.close()
            pruned.close()
        print(f"  quality: {q}", flush=True)
        peer = LlamaPeer() if why_not is None else None
        try:
            speed = {t: speeds(model_dir, tmp / "model", gguf, int(t), args.tokens, args.repeat,
                               peer) for t in args.threads.split(",")}
        finally:
            if peer is not None:
                peer.close()
        result = {"model": args.model, "vocab_full": vocab_full, "kept": len(kept),
                  "build_s": round(build_s, 1),
                  "full_model_bin_mb": round((model_dir / "model.bin").stat().st_size / 1e6, 1),
                  "pruned_model_bin_mb": round((tmp / "model" / "model.bin").stat().st_size
                                               / 1e6, 1),
                  "quality": q, "speed": speed, "llama_cpp_unavailable": why_not}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"results: {common.write_result(f'prune-{args.model}', result)}", flush=True)


if __name__ == "__main__":
    main()
