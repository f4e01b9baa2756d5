"""One catalog model, straight through CTranslate2 and through llama.cpp, side by side.

For each thread count: decode tok/s and time to first token on a short chat prompt, prefill
tok/s on a ~1,300-token prompt, time to first token with a long system prompt uncached and
cached (CTranslate2's `static_prompt`; llama.cpp's prefix reuse), and batch scaling. Both
engines get the same token ids, the same number of new tokens and greedy decoding. Optional:
summarization end to end (Hush's map-reduce summarizer with CTranslate2 batched, one prompt at
a time, and with llama.cpp doing the decoding).

Run one model per process (peak RSS is per process):
    .venv/bin/python -m bench.engine_bench --model smollm2-135m [--tokens 128] [--summary]
Writes bench/results/engine-<model>.json.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hush.daemon.engine.convert.pull import fetch_gguf
from hush.daemon.engine.generator import Engine, GenerationOptions, Job
from hush.daemon.engine.probe import recorded_choice
from hush.daemon.paths import CacheLayout

from . import common
from .llama_bench import LlamaPeer, available

VARIED_PROMPTS = (
    common.DECODE_PROMPT,
    "Explain in detail how a bicycle gearbox works, with examples of when to change gear.",
    "Write a long letter to a friend describing a week-long hiking trip in the mountains.",
    "Describe, step by step, how to bake a loaf of sourdough bread at home.",
    "Write a detailed history of the printing press and its effect on Europe.",
    "Explain how a refrigerator keeps food cold, covering every part of the cycle.",
    "Write a travel guide for a weekend in a small coastal town, day by day.",
    "Describe the life cycle of a star, from nebula to its final state, in detail.",
)


def split_static(engine: Engine, system: str, user: str) -> tuple[list[int], list[int]]:
    """The prompt's ids split where the system turn ends: the prefix two users share."""
    ids = engine.prompt_ids(common.chat(user, system))
    other = engine.prompt_ids(common.chat("A different question entirely?", system))
    shared = 0
    while shared < min(len(ids), len(other)) and ids[shared] == other[shared]:
        shared += 1
    return ids[:shared], ids[shared:]


class RawCT2:
    """Straight CTranslate2: token strings in, token ids out, no Hush code per token."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.generator = engine.generator
        self.end = sorted(engine.end_token_ids)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.engine.tokenizer.id_to_token(i) for i in ids]

    def run(self, ids: Sequence[int], max_tokens: int, *, end: bool = True,
            static: Sequence[int] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if static is not None:
            kwargs["static_prompt"] = self.tokens(static)
        produced: list[int] = []
        first = 0.0
        start = time.perf_counter()
        for step in self.generator.generate_tokens(
            self.tokens(ids), max_length=max_tokens, sampling_topk=1,
            end_token=self.end if end else [], **kwargs,
        ):
            if not produced:
                first = time.perf_counter() - start
            produced.append(int(step.token_id))
        return {"tokens": produced, "first_token_s": first,
                "total_s": time.perf_counter() - start}


def decode_rate(result: dict[str, Any]) -> float:
    """Tokens per second after the first token (the first one carries the prefill)."""
    n = len(result["tokens"])
    span = result["total_s"] - result["first_token_s"]
    return (n - 1) / span if n > 1 and span > 0 else 0.0


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of the repeats: noise on a shared machine only ever slows a run down."""
    return max(results, key=decode_rate)


def fastest_first(results: list[dict[str, Any]]) -> dict[str, Any]:
    return min(results, key=lambda r: float(r["first_token_s"]))


def summary_of(result: dict[str, Any], prompt_tokens: int) -> dict[str, float]:
    return {"new_tokens": len(result["tokens"]), "prompt_tokens": prompt_tokens,
            "decode_tok_s": round(decode_rate(result), 2),
            "first_token_ms": round(1000 * result["first_token_s"], 1)}


def engine_stream(engine: Engine, ids: list[int], tokens: int) -> dict[str, Any]:
    """Through Hush's engine layer (detokenizing, stop strings, a queue between threads)."""
    generation = engine.stream(ids, GenerationOptions(max_tokens=tokens))
    start = time.monotonic()
    first = None
    for _piece in generation:
        if first is None:
            first = time.monotonic()
    end = time.monotonic()
    n = generation.completion_tokens
    first_s = (generation.first_token_time or first or end) - start
    return {"tokens": list(range(n)), "first_token_s": first_s, "total_s": end - start}


def bench_batches(raw: RawCT2, engine: Engine, sizes: Sequence[int], tokens: int
                  ) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for size in sizes:
        prompts = [raw.tokens(engine.prompt_ids(common.chat(VARIED_PROMPTS[i % 8])))
                   for i in range(size)]
        counts = [0] * size

        def count(step: Any, counts: list[int] = counts) -> bool:
            counts[int(step.batch_id)] += 1
            return False

        start = time.perf_counter()
        raw.generator.generate_batch(prompts, max_length=tokens, sampling_topk=1, beam_size=1,
                                     include_prompt_in_result=False, end_token=raw.end,
                                     callback=count)
        seconds = time.perf_counter() - start
        out[str(size)] = {"tokens": sum(counts), "seconds": round(seconds, 3),
                          "aggregate_tok_s": round(sum(counts) / seconds, 2)}
        print(f"    batch {size}: {out[str(size)]['aggregate_tok_s']:.1f} tok/s aggregate",
              flush=True)
    return out


def bench_ct2(model_dir: Path, threads: int, tokens: int, repeat: int,
              batches: Sequence[int]) -> dict[str, Any]:
    start = time.perf_counter()
    engine = Engine.load(model_dir, intra_threads=threads)
    load_s = time.perf_counter() - start
    try:
        raw = RawCT2(engine)
        ids = engine.prompt_ids(common.chat(common.DECODE_PROMPT))
        raw.run(ids, 8)  # warm-up: the first call allocates
        decode = best([raw.run(ids, tokens) for _ in range(repeat)])
        hush = best([engine_stream(engine, ids, tokens) for _ in range(repeat)])
        long_ids = engine.prompt_ids(common.chat(common.long_prompt_text()))
        prefill = fastest_first([raw.run(long_ids, 1) for _ in range(max(1, repeat - 1))])
        static, rest = split_static(engine, common.LONG_SYSTEM, common.DECODE_PROMPT)
        uncached = fastest_first([raw.run(static + rest, 1) for _ in range(repeat)])
        raw.run(rest, 1, static=static)  # fills the cache
        cached = fastest_first([raw.run(rest, 1, static=static) for _ in range(repeat)])
        # Caching must not change the answer: greedy tokens with and without it.
        same = raw.run(rest, 24, static=static)["tokens"] == raw.run(static + rest, 24)["tokens"]
        result: dict[str, Any] = {
            "threads": threads,
            "load_s": round(load_s, 3),
            "decode": summary_of(decode, len(ids)),
            "engine_layer": summary_of(hush, len(ids)),
            "prefill": {"prompt_tokens": len(long_ids),
                        "first_token_ms": round(1000 * prefill["first_token_s"], 1),
                        "prefill_tok_s": round(len(long_ids) / prefill["first_token_s"], 1)},
            "system_prompt": {"static_tokens": len(static), "rest_tokens": len(rest),
                              "uncached_first_token_ms": round(1000 * uncached["first_token_s"], 1),
                              "cached_first_token_ms": round(1000 * cached["first_token_s"], 1),
                              "same_greedy_tokens": same},
            "_decode_tokens": len(decode["tokens"]),
        }
        print(f"  ct2 t={threads}: decode {result['decode']['decode_tok_s']} tok/s "
              f"(engine layer {result['engine_layer']['decode_tok_s']}), prefill "
              f"{result['prefill']['prefill_tok_s']} tok/s, system prompt "
              f"{result['system_prompt']['uncached_first_token_ms']} -> "
              f"{result['system_prompt']['cached_first_token_ms']} ms", flush=True)
        if batches:
            result["batch"] = bench_batches(raw, engine, batches, tokens)
        return result
    finally:
        engine.close()
        gc.collect()


def bench_llama(peer: LlamaPeer, gguf: Path, engine: Engine, threads: int, new_tokens: int,
                repeat: int) -> dict[str, Any]:
    load = peer.load(gguf, threads)
    ids = engine.prompt_ids(common.chat(common.DECODE_PROMPT))
    peer.generate(ids, 8)  # warm-up
    # Exactly as many tokens as CTranslate2 produced, end of turn or not: the same work.
    decode = best([peer.generate(ids, new_tokens) for _ in range(repeat)])
    long_ids = engine.prompt_ids(common.chat(common.long_prompt_text()))
    prefill = fastest_first([peer.generate(long_ids, 1) for _ in range(max(1, repeat - 1))])
    static, rest = split_static(engine, common.LONG_SYSTEM, common.DECODE_PROMPT)
    uncached = fastest_first([peer.generate(static + rest, 1) for _ in range(repeat)])
    cached_runs = []
    for _ in range(repeat):
        # Leave only the system prompt in the KV cache, then ask with a new user turn.
        peer.generate(static + split_static(engine, common.LONG_SYSTEM, "Hello?")[1], 1)
        cached_runs.append(peer.generate(static + rest, 1, keep_cache=True))
    cached = fastest_first(cached_runs)
    result = {
        "threads": threads,
        "version": load["version"],
        "load_s": round(load["load_s"], 3),
        "decode": summary_of(decode, len(ids)),
        "prefill": {"prompt_tokens": len(long_ids),
                    "first_token_ms": round(1000 * prefill["first_token_s"], 1),
                    "prefill_tok_s": round(len(long_ids) / prefill["first_token_s"], 1)},
        "system_prompt": {"static_tokens": len(static), "rest_tokens": len(rest),
                          "uncached_first_token_ms": round(1000 * uncached["first_token_s"], 1),
                          "cached_first_token_ms": round(1000 * cached["first_token_s"], 1)},
    }
    print(f"  llama.cpp t={threads}: decode {result['decode']['decode_tok_s']} tok/s, prefill "
          f"{result['prefill']['prefill_tok_s']} tok/s, system prompt "
          f"{result['system_prompt']['uncached_first_token_ms']} -> "
          f"{result['system_prompt']['cached_first_token_ms']} ms", flush=True)
    return result


def summary_document(paragraphs: int = 14) -> str:
    """A long document of distinct paragraphs (a few chunks for a 1,024-token chunk size)."""
    topics = ("harbour", "railway", "library", "orchard", "observatory", "market", "bridge",
              "school", "mill", "theatre", "museum", "garden", "canal", "bakery")
    parts = []
    for n in range(paragraphs):
        topic = topics[n % len(topics)]
        year = 1850 + 7 * n
        parts.append(
            f"The {topic} of Northfield opened in {year}. Its first director, {chr(65 + n)}. "
            f"Morgan, kept careful records of visitors, costs and repairs. In {year + 12} a "
            f"fire damaged the east wing, and the town raised {1200 + 35 * n} pounds to rebuild "
            f"it within two years. During the following decades the {topic} became a meeting "
            f"place for farmers, teachers and travellers, and it employed {8 + n} people at its "
            f"busiest. In {year + 60} the council debated closing it, but a petition signed by "
            f"{300 + 11 * n} residents kept it open, and it still stands today beside the old "
            f"road to the coast, where visitors can read the original ledgers in a glass case."
        )
    return "\n\n".join(parts)


def bench_summary(engine: Engine, peer: LlamaPeer | None, gguf: Path, threads: int
                  ) -> dict[str, Any]:
    from hush.daemon.summarize.summarizer import Summarizer

    text = summary_document()
    out: dict[str, Any] = {"document_tokens": len(engine.tokenizer.encode(text)),
                           "threads": threads}

    def timed(summarizer: Summarizer) -> dict[str, Any]:
        result = summarizer.summarize(text, length="short")
        return {"seconds": round(result.seconds, 2), "chunks": result.chunks,
                "rounds": result.rounds, "new_tokens": result.tokens,
                "prompt_tokens": result.prompt_tokens}

    out["ct2_batched"] = timed(Summarizer(engine, batched=True))
    out["ct2_sequential"] = timed(Summarizer(engine, batched=False))
    if peer is not None:
        peer.load(gguf, threads)
        end = sorted(engine.end_token_ids)

        def run_llama(jobs: Sequence[Job]) -> None:
            for job in jobs:
                job.start_time = time.monotonic()
                answer = peer.generate(job.prompt_ids, job.max_new_tokens + 1, stop_ids=end,
                                       repeat_penalty=job.options.repetition_penalty)
                for token in answer["tokens"]:
                    if job.on_token(token):
                        break
                job.close()

        out["llama_cpp"] = timed(Summarizer(engine, batched=False, run=run_llama))
    print(f"  summary: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per decode run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--no-llama", action="store_true")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()

    layout = CacheLayout.default()
    model_dir = layout.models / args.model
    gguf = fetch_gguf(args.model, layout.downloads)
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",") if b]
    why_not = None if not args.no_llama else "disabled with --no-llama"
    if why_not is None:
        why_not = available()
    print(f"{args.model}: {model_dir}", flush=True)
    result: dict[str, Any] = {
        "model": args.model,
        "model_bin_mb": round((model_dir / "model.bin").stat().st_size / 1e6, 1),
        "gguf_mb": round(gguf.stat().st_size / 1e6, 1),
        "probe_threads": (choice := recorded_choice(model_dir)) and choice.intra_threads,
        "weights_per_token": common.weight_bytes_per_token(gguf),
        "settings": {"new_tokens": args.tokens, "repeat": args.repeat, "greedy": True},
        "ct2": {}, "llama_cpp": {},
        "llama_cpp_unavailable": why_not,
    }
    for t in threads:
        result["ct2"][str(t)] = bench_ct2(model_dir, t, args.tokens, args.repeat, batches)
    result["ct2_peak_rss_mb"] = round(common.peak_rss_mb(), 1)

    peer = LlamaPeer() if why_not is None else None
    # Tokenizer and template only (one thread; nothing is decoded with it outside summaries).
    engine = Engine.load(model_dir, intra_threads=1)
    try:
        if peer is not None:
            for t in threads:
                tokens = result["ct2"][str(t)]["_decode_tokens"]
                result["llama_cpp"][str(t)] = bench_llama(peer, gguf, engine, t, tokens,
                                                          args.repeat)
            result["llama_cpp_peak_rss_mb"] = round(peer.peak_rss_mb(), 1)
        if args.summary:
            chosen = choice.intra_threads if choice else 1
            if chosen != 1:
                engine.close()
                engine = Engine.load(model_dir, intra_threads=chosen)
            result["summary"] = bench_summary(engine, peer, gguf, chosen)
    finally:
        engine.close()
        if peer is not None:
            peer.close()
    for t in threads:
        result["ct2"][str(t)].pop("_decode_tokens")
    result["decode_median_tok_s"] = statistics.median(
        r["decode"]["decode_tok_s"] for r in result["ct2"].values())
    print(f"results: {common.write_result(f'engine-{args.model}', result)}")


if __name__ == "__main__":
    main()
