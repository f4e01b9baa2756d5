"""Conversation store benchmark: append latency (p50/p99, durable commits) and list/search time
with 10,000 conversations. Writes bench/results/store.json; runs in well under two minutes.

    .venv/bin/python bench/store_bench.py [--conversations 10000] [--appends 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hush.daemon.store import DATABASE_NAME, Store, open_store

UID = 1000
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "privacy", "local",
         "model", "offline", "policy", "summary", "document", "garden", "recipe", "travel",
         "budget", "meeting", "invoice")
RESULTS = Path(__file__).parent / "results" / "store.json"


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(function: Callable[[], object], repeat: int = 5) -> float:
    """Best of `repeat`, in milliseconds (the noise on a shared machine only adds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def bench_appends(store: Store, count: int, rng: random.Random) -> dict[str, float]:
    cid = store.create_conversation(UID, title="latency")
    samples = []
    for n in range(count):
        text = sentence(rng, 40)
        start = time.perf_counter()
        store.append(UID, cid, "user" if n % 2 == 0 else "assistant", text)
        samples.append((time.perf_counter() - start) * 1000)
    return {"count": count, "p50_ms": percentile(samples, 0.50),
            "p99_ms": percentile(samples, 0.99), "mean_ms": statistics.fmean(samples)}


def populate(store: Store, conversations: int, messages: int, rng: random.Random) -> float:
    start = time.perf_counter()
    for n in range(conversations):
        cid = store.create_conversation(UID, title=f"{sentence(rng, 4)} {n}", system="Be brief.")
        for m in range(messages):
            # One conversation in a thousand mentions a rare word, for a selective search.
            rare = " zanzibar" if n % 1000 == 0 and m == 0 else ""
            store.append(UID, cid, "user" if m % 2 == 0 else "assistant",
                         sentence(rng, 30) + rare)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=3, help="messages per conversation")
    parser.add_argument("--appends", type=int, default=1_000)
    args = parser.parse_args()
    rng = random.Random(7)

    with tempfile.TemporaryDirectory(prefix="hush-bench-") as tmp:
        root = Path(tmp)
        database = root / "state" / DATABASE_NAME
        store = open_store(database, credentials_dir=None, key_file=root / "hush.key")
        appends = bench_appends(store, args.appends, rng)
        # Filling the store is not what is measured: skip the fsync per commit meanwhile
        # (bench-only reach into the connection), then measure with the real setting again.
        store._db.execute("PRAGMA synchronous = OFF")
        populate_s = populate(store, args.conversations, args.messages, rng)
        store._db.execute("PRAGMA synchronous = FULL")
        total = store.count(UID)
        first = store.list(UID, limit=50)
        some = first[len(first) // 2].id
        results = {
            "machine": {"python": platform.python_version(), "processor": platform.machine()},
            "settings": {"synchronous": "FULL", "journal_mode": "WAL", "cipher": "AES-256-GCM"},
            "append": appends,
            "dataset": {"conversations": total, "messages_each": args.messages,
                        "populate_s": populate_s,
                        "database_mb": sum(p.stat().st_size for p in database.parent.iterdir())
                        / 1e6},
            "list_first_page_50_ms": timed(lambda: store.list(UID, limit=50)),
            "list_deep_page_50_ms": timed(lambda: store.list(UID, limit=50, offset=total - 50)),
            "list_all_ms": timed(lambda: store.list(UID, limit=total), repeat=3),
            "get_one_ms": timed(lambda: store.get(UID, some)),
            "search_rare_full_scan_ms": timed(lambda: store.search(UID, "zanzibar"), repeat=3),
            "search_rare_hits": len(store.search(UID, "zanzibar")),
            "search_common_first_50_ms": timed(lambda: store.search(UID, "privacy", limit=50)),
        }
        start = time.perf_counter()
        store.delete(UID, some)
        results["delete_one_ms"] = (time.perf_counter() - start) * 1000
        store.close()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    a, d = results["append"], results["dataset"]
    assert isinstance(a, dict) and isinstance(d, dict)
    print(f"append ({a['count']} durable commits): p50 {a['p50_ms']:.2f} ms, "
          f"p99 {a['p99_ms']:.2f} ms")
    print(f"{d['conversations']} conversations x {d['messages_each']} messages: populated in "
          f"{d['populate_s']:.1f} s, {d['database_mb']:.1f} MB on disk")
    for name in ("list_first_page_50_ms", "list_deep_page_50_ms", "list_all_ms", "get_one_ms",
                 "search_rare_full_scan_ms", "search_common_first_50_ms", "delete_one_ms"):
        print(f"{name:28} {results[name]:9.2f} ms")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
