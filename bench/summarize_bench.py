"""Summarize benchmark: end-to-end time for the 10,000-word corpus document, map step batched
against sequential. Writes bench/results/summarize.json and prints a summary.

    .venv/bin/python bench/summarize_bench.py [--model smollm2-135m] [--map-tokens 80]
        [--max-batch 8] [--threads N]

Both runs use the same chunks, prompts and greedy decoding, so they differ only in how the
map and reduce prompts are decoded: one CTranslate2 batch (of at most --max-batch) or one at a
time. On a shared machine, run it when nothing else is busy; the noise only adds time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from hush.daemon import paths
from hush.daemon.engine.generator import Engine
from hush.daemon.engine.probe import recorded_threads
from hush.daemon.summarize import Progress, Summarizer, extract_text

CORPUS = Path(__file__).parent.parent / "tests" / "summarize" / "corpus"
DOCUMENT = CORPUS / "kessel_river_survey.md"
RESULTS = Path(__file__).parent / "results" / "summarize.json"


def run(engine: Engine, text: str, *, batched: bool, args: argparse.Namespace) -> dict[str, object]:
    summarizer = Summarizer(engine, chunk_tokens=args.chunk_tokens, map_tokens=args.map_tokens,
                            max_batch=args.max_batch, batched=batched)
    map_done: list[float] = []

    def progress(event: Progress) -> None:
        if event.stage == "map" and event.done:
            map_done.append(event.elapsed)

    start = time.monotonic()
    result = summarizer.summarize(text, length="medium", progress=progress)
    seconds = time.monotonic() - start
    return {
        "batched": batched,
        "seconds": round(seconds, 2),
        "map_seconds": round(max(map_done), 2) if map_done else None,
        "chunks": result.chunks,
        "rounds": result.rounds,
        "completion_tokens": result.tokens,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens_per_second": round(result.tokens / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--chunk-tokens", type=int, default=1024)
    parser.add_argument("--map-tokens", type=int, default=80)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="CTranslate2 intra threads (default: what the import probe chose)")
    args = parser.parse_args()

    model_dir = paths.CacheLayout.default().models / args.model
    engine = Engine.load(model_dir, intra_threads=args.threads or recorded_threads(model_dir))
    try:
        text = extract_text(DOCUMENT.read_bytes(), filename=DOCUMENT.name).text
        runs = [run(engine, text, batched=True, args=args),
                run(engine, text, batched=False, args=args)]
    finally:
        engine.close()
    batched, sequential = runs
    report = {
        "model": args.model,
        "document_words": len(text.split()),
        "intra_threads": engine.intra_threads,
        "max_batch": args.max_batch,
        "map_tokens": args.map_tokens,
        "chunk_tokens": args.chunk_tokens,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "runs": runs,
        "speedup_end_to_end": round(float(str(sequential["seconds"]))
                                    / float(str(batched["seconds"])), 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for entry in runs:
        kind = "batched   " if entry["batched"] else "sequential"
        print(f"{kind} {entry['seconds']:>7} s end to end, map step {entry['map_seconds']} s, "
              f"{entry['chunks']} chunks, {entry['rounds']} reduce rounds")
    print(f"speedup (sequential / batched): {report['speedup_end_to_end']}x -> {RESULTS}")


if __name__ == "__main__":
    main()
