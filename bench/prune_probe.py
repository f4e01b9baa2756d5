"""Vocabulary pruning, measured before anyone wires it into the importer.

Keeps the tokens a corpus actually uses (the most frequent ones up to `--keep`, plus every
control, byte and user-defined token), then:
- speed: imports the GGUF again with only those rows in the embedding/LM head (the speed-probe
  model lives in a temporary directory and is deleted) and times greedy decode against the
  full model, same thread count;
- quality on held-out text, from the *full* model's logits (CTranslate2 `forward_batch`):
  a pruned LM head computes the same logits for the kept tokens, so the pruned model's next-token
  distribution is the full one renormalized over the kept set. Reported: coverage (share of
  held-out tokens the kept set contains), perplexity over covered positions full vs pruned, and
  top-1 agreement (pruned argmax equals full argmax; a position whose full argmax was pruned
  counts as a disagreement). Tokens outside the kept set would be spelled with smaller pieces by
  a pruned tokenizer: the coverage figure says how often.

Corpus (what decides the kept set): Python's own documentation (pydoc topics), the licences in
/usr/share/common-licenses and the standard library's sources. Held-out text: this repository's
docs, README and the summarizer's test corpus. Neither is ideal; both are on every machine.

    .venv/bin/python -m bench.prune_probe --model gemma3-270m [--keep 32768] [--threads 2]
Writes bench/results/prune-<model>.json.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hush.daemon.engine.catalog import fetch_gguf
from hush.daemon.engine.generator import Engine
from hush.daemon.paths import CacheLayout

from . import common


def corpus_text(limit_bytes: int = 6_000_000) -> str:
    parts: list[str] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    topics = stdlib / "pydoc_data" / "topics.py"
    if topics.exists():
        parts.append(topics.read_text(errors="replace"))
    licences = Path("/usr/share/common-licenses")
    if licences.is_dir():
        parts += [p.read_text(errors="replace") for p in sorted(licences.iterdir()) if p.is_file()]
    size = sum(len(p) for p in parts)
    for path in sorted(stdlib.glob("*.py")):
        if size > limit_bytes:
            break
        text = path.read_text(errors="replace")
        parts.append(text)
        size += len(text)
    return "\n".join(parts)


def held_out_text() -> str:
    root = common.ROOT
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md")),
             *sorted((root / "tests" / "summarize" / "corpus").glob("*.md")),
             *sorted((root / "tests" / "summarize" / "corpus").glob("*.txt"))]
    return "\n\n".join(p.read_text(errors="replace") for p in paths
                       if p.exists() and p.name != "benchmarks.md")


def kept_ids(engine: Engine, gguf: Path, keep: int, must: list[int]) -> list[int]:
    from gguf import GGUFReader

    reader = GGUFReader(gguf)
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    # Type 1 is a normal token; the rest are control, byte and user-defined tokens. Single
    # characters stay too: byte-level BPE spells every byte with one, so all text still encodes.
    byte_level = str(reader.fields["tokenizer.ggml.model"].contents()) == "gpt2"
    special = [i for i, (t, s) in enumerate(zip(types, tokens, strict=True))
               if int(t) != 1 or (byte_level and len(s) == 1)]
    counts: collections.Counter[int] = collections.Counter()
    text = corpus_text()
    step = 100_000
    for start in range(0, len(text), step):
        counts.update(engine.tokenizer.encode(text[start:start + step]))
    chosen = dict.fromkeys([*special, *must])
    for token, _n in counts.most_common():
        if len(chosen) >= keep:
            break
        chosen.setdefault(token)
    print(f"  corpus {len(text) / 1e6:.1f} MB, {len(counts):,} distinct tokens used; "
          f"{len(special):,} special, byte and single-character tokens kept", flush=True)
    return sorted(chosen)


def quality(engine: Engine, kept: list[int], window: int = 384) -> dict[str, Any]:
    # Under 512: CTranslate2's forward_batch fails past Gemma 3's 512-token sliding window.
    ids = engine.tokenizer.encode(held_out_text())
    mask = np.zeros(engine.tokenizer.vocab_size, dtype=bool)
    mask[kept] = True
    nll_full: list[float] = []
    nll_pruned: list[float] = []
    agree = covered = positions = 0
    bos = [engine.bos_id] if engine.bos_id is not None else []
    for start in range(0, len(ids) - 1, window):
        chunk = bos + ids[start:start + window + 1]
        logits = np.array(engine.generator.forward_batch([chunk[:-1]]), dtype=np.float32)[0]
        targets = np.array(chunk[1:])
        vocab = logits.shape[-1]
        if vocab != mask.shape[0]:
            mask = np.pad(mask, (0, vocab - mask.shape[0]))
        full_lse = np.logaddexp.reduce(logits, axis=-1)
        pruned_lse = np.logaddexp.reduce(np.where(mask, logits, -np.inf), axis=-1)
        target_logit = logits[np.arange(len(targets)), targets]
        is_kept = mask[targets]
        full_top = logits.argmax(-1)
        pruned_top = np.where(mask, logits, -np.inf).argmax(-1)
        positions += len(targets)
        covered += int(is_kept.sum())
        agree += int((full_top == pruned_top).sum())
        nll_full += list((full_lse - target_logit)[is_kept])
        nll_pruned += list((pruned_lse - target_logit)[is_kept])
    return {"held_out_tokens": positions, "coverage": round(covered / positions, 4),
            "ppl_full_covered": round(float(np.exp(np.mean(nll_full))), 3),
            "ppl_pruned_covered": round(float(np.exp(np.mean(nll_pruned))), 3),
            "top1_agreement": round(agree / positions, 4)}


def build_pruned(gguf: Path, kept: list[int], out: Path) -> None:
    """Import the GGUF again with only the kept rows of the embedding / LM head (no SmoothQuant:
    a speed probe, not a product model)."""
    from hush.daemon.engine import gguf_import
    from hush.daemon.engine.architectures import build_decoder_spec

    source = gguf_import._GGUF(gguf)
    original = source.tensor
    rows = np.array(kept)

    def tensor(name: str) -> Any:
        value = original(name)
        return value[rows] if name in ("token_embd.weight", "output.weight") else value

    source.tensor = tensor  # type: ignore[method-assign]
    arch = str(source.require("general.architecture"))
    vocab = gguf_import._read_vocab(source)
    spec, _ = build_decoder_spec(source, arch)
    tokens = [vocab.tokens[i] for i in kept]
    spec.register_vocabulary(tokens)
    eos = source.get("tokenizer.ggml.eos_token_id")
    bos = source.get("tokenizer.ggml.bos_token_id")
    spec.config.bos_token = vocab.tokens[int(bos)] if bos is not None else tokens[0]
    spec.config.eos_token = vocab.tokens[int(eos)] if eos is not None else tokens[0]
    spec.config.unk_token = ""
    spec.config.layer_norm_epsilon = float(
        source.require(f"{arch}.attention.layer_norm_rms_epsilon"))
    spec.validate()
    spec.optimize(quantization="int8")
    out.mkdir(parents=True)
    spec.save(str(out))


def decode_speed(model_dir: Path, prompt: list[str], end: list[str], threads: int,
                 tokens: int, repeat: int) -> float:
    import ctranslate2

    generator = ctranslate2.Generator(str(model_dir), device="cpu", compute_type="int8",
                                      intra_threads=threads)
    try:
        best = 0.0
        for n in range(repeat + 1):
            stamps = []
            for _step in generator.generate_tokens(prompt, max_length=tokens, sampling_topk=1,
                                                   end_token=end):
                stamps.append(time.perf_counter())
            if n and len(stamps) > 1:  # the first run is a warm-up
                best = max(best, (len(stamps) - 1) / (stamps[-1] - stamps[0]))
        return best
    finally:
        generator.unload_model()
        del generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--keep", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=0, help="0: the import probe's choice")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    layout = CacheLayout.default()
    model_dir = layout.models / args.model
    gguf = fetch_gguf(args.model, layout.downloads)
    engine = Engine.load(model_dir, intra_threads=args.threads or None)
    threads = engine.intra_threads
    try:
        prompt_ids = engine.prompt_ids(common.chat(common.DECODE_PROMPT))
        end_ids = sorted(engine.end_token_ids)
        kept = kept_ids(engine, gguf, args.keep, [*prompt_ids, *end_ids])
        print(f"{args.model}: keeping {len(kept):,} of {engine.tokenizer.vocab_size:,} tokens",
              flush=True)
        q = quality(engine, kept)
        print(f"  quality: {q}", flush=True)
        prompt = [engine.tokenizer.id_to_token(i) for i in prompt_ids]
        end = [engine.tokenizer.id_to_token(i) for i in end_ids]
    finally:
        engine.close()
    full = decode_speed(model_dir, prompt, end, threads, args.tokens, args.repeat)
    tmp = Path(tempfile.mkdtemp(prefix="hush-prune-"))
    try:
        started = time.perf_counter()
        build_pruned(gguf, kept, tmp / "model")
        build_s = time.perf_counter() - started
        pruned = decode_speed(tmp / "model", prompt, end, threads, args.tokens, args.repeat)
        size = (tmp / "model" / "model.bin").stat().st_size / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"model": args.model, "threads": threads, "vocab_full": engine.tokenizer.vocab_size,
              "kept": len(kept), "decode_full_tok_s": round(full, 2),
              "decode_pruned_tok_s": round(pruned, 2), "speedup": round(pruned / full, 3),
              "pruned_model_bin_mb": round(size, 1), "build_s": round(build_s, 1),
              "full_model_bin_mb": round((model_dir / "model.bin").stat().st_size / 1e6, 1),
              "quality": q, "settings": {"tokens": args.tokens, "repeat": args.repeat}}
    print(f"  decode {full:.1f} -> {pruned:.1f} tok/s ({pruned / full:.2f}x)", flush=True)
    print(f"results: {common.write_result(f'prune-{args.model}', result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
