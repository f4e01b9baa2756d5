"""Redaction throughput: `apply("input", text)` and the stream redactor, in MB/s.

Plain English with some personal data sprinkled in (about one item per 2 KB), a few MB of it.
The policy is the shipped default, which runs every built-in detector. Writes
bench/results/policy.json. Run: `.venv/bin/python bench/policy_bench.py [--mb 4]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

from hush.daemon.policy.loader import load_policy_file

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
    "from", "it", "his", "an", "were", "are", "which", "this", "be", "or", "has", "had", "not",
    "first", "one", "their", "its", "new", "after", "who", "they", "two", "her", "she", "been",
    "other", "when", "there", "all", "during", "into", "school", "time", "may", "years", "more",
    "most", "only", "over", "city", "some", "world", "would", "where", "later", "up", "such",
    "used", "many", "can", "state", "about", "national", "out", "known", "university", "united",
    "then", "made",
]
SPRINKLE = ["jane.doe@example.com", "(415) 555-2671", "4111 1111 1111 1111", "192.168.1.20",
            "GB82 WEST 1234 5698 7654 32", "536-22-1234", "AKIAIOSFODNN7EXAMPLE",
            "+44 20 7946 0958"]


def make_text(size: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    while total < size:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
        if rng.random() < 0.08:
            sentence += " " + rng.choice(SPRINKLE)
        sentence = sentence[0].upper() + sentence[1:] + ". "
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=4.0, help="size of the text for apply()")
    parser.add_argument("--stream-mb", type=float, default=1.0, help="size streamed in tokens")
    args = parser.parse_args()
    policy = load_policy_file(ROOT / "policies" / "default.yaml")
    text = make_text(int(args.mb * 1_000_000))
    start = time.perf_counter()
    decision = policy.apply("input", text)
    apply_s = time.perf_counter() - start
    stream_text = text[: int(args.stream_mb * 1_000_000)]
    # Fragments of 2-6 characters, like a tokenizer's output.
    rng = random.Random(1)
    fragments = []
    i = 0
    while i < len(stream_text):
        n = rng.randint(2, 6)
        fragments.append(stream_text[i:i + n])
        i += n
    redactor = policy.stream("output")
    start = time.perf_counter()
    out = [redactor.push(f) for f in fragments]
    out.append(redactor.finish())
    stream_s = time.perf_counter() - start
    assert "".join(out) == policy.apply("output", stream_text).text
    result = {
        "policy": policy.name, "policy_version": policy.version,
        "machine": platform.machine(), "python": platform.python_version(),
        "apply_input_mb": round(len(text) / 1e6, 3),
        "apply_input_mb_per_s": round(len(text) / 1e6 / apply_s, 2),
        "apply_findings": sum(f.count for f in decision.findings),
        "stream_output_mb": round(len(stream_text) / 1e6, 3),
        "stream_fragments": len(fragments),
        "stream_output_mb_per_s": round(len(stream_text) / 1e6 / stream_s, 3),
        "stream_us_per_fragment": round(stream_s / len(fragments) * 1e6, 1),
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "policy.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
