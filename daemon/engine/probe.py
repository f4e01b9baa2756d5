"""Pick CTranslate2's thread settings per model and machine by measuring them.

Two numbers decide how hushd uses the cores: intra-op threads (how many cores one batch
uses) and decode workers (CTranslate2 inter_threads: batches decoded at the same time, one
group of cores each). More intra-op threads are not always faster for one stream: on the
2-core development machine, with GNU libgomp, one thread decoded SmolLM2 at 40 tok/s and two
at 25, while two workers of one thread each decoded two batches at once; on LLVM's libomp
(openmp.py) two threads were the faster. So at import, for each intra-op count up to the core
count (with as many workers as fit beside it), a short greedy run times one stream and then
every worker decoding a batch of two at once; the result, and the OpenMP runtime it was
measured on, is recorded next to the model and hushd starts with it (`hush status` shows it).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ModelError
from .generator import Engine, GenerationOptions, Job
from .openmp import openmp_runtime

PROBE_FILE = "threads.json"
PROBE_MARGIN = 0.10
PROBE_BATCH = 2
_PROBE_PROMPTS = (
    "Write a short paragraph about the history of lighthouses.",
    "Explain how a bicycle gear works, in a few sentences.",
)


@dataclass(frozen=True)
class ThreadChoice:
    """What the probe measured and chose; `decode_workers` batches of `intra_threads` each."""

    intra_threads: int
    decode_workers: int
    tokens_per_s: dict[int, float]
    """Single-stream decode speed per intra-op thread count."""
    aggregate_tokens_per_s: dict[int, float]
    """Every worker decoding a batch of PROBE_BATCH at once, per intra-op thread count."""
    cpu_count: int
    openmp: str = "gnu"
    """The OpenMP runtime CTranslate2 ran on while measuring; probes written before Hush
    recorded it all ran on GNU libgomp."""


def available_cores() -> int:
    # The affinity mask, not the machine: a service limited by CPUAffinity= or a cgroup
    # cpuset sees fewer cores than os.cpu_count().
    return max(1, len(os.sched_getaffinity(0)))


def workers_for(intra_threads: int, cores: int | None = None) -> int:
    """One decode worker per group of intra-op threads keeps every core busy, none shared."""
    return max(1, (cores or available_cores()) // max(1, intra_threads))


def _measure(model_dir: Path, intra: int, workers: int, tokens: int) -> tuple[float, float]:
    """(single-stream tok/s, aggregate tok/s with every worker decoding a batch)."""
    engine = Engine.load(model_dir, intra_threads=intra, inter_threads=workers)
    try:
        prompts = [engine.prompt_ids([{"role": "user", "content": p}]) for p in _PROBE_PROMPTS]
        options = GenerationOptions(max_tokens=tokens)

        def decode(batches: list[list[list[int]]]) -> float:
            jobs = [[Job(engine, ids, options, lambda _text: None) for ids in batch]
                    for batch in batches]
            failures: list[BaseException] = []

            def run(group: list[Job]) -> None:
                try:
                    engine.generate(group)
                except BaseException as exc:  # re-raised below, on the probing thread
                    failures.append(exc)

            threads = [threading.Thread(target=run, args=(group,)) for group in jobs]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            if failures:
                raise failures[0]
            produced = sum(job.completion_tokens for group in jobs for job in group)
            return produced / elapsed if elapsed > 0 else 0.0

        decode([prompts[:1]])  # warm-up: the first call allocates
        single = decode([prompts[:1]])
        batch = [prompts[i % len(prompts)] for i in range(PROBE_BATCH)]
        aggregate = decode([batch] * workers)
        return single, aggregate
    finally:
        engine.close()


def choose(single: dict[int, float], aggregate: dict[int, float]) -> int:
    """The intra-op thread count to use, from the measured speeds.

    A person waits on one stream, so single-stream speed decides; more threads must earn their
    core by beating fewer by more than the noise of a shared machine (PROBE_MARGIN). Among the
    counts within that margin of the fastest, the best aggregate wins (then the fewest threads).
    """
    fastest = 1
    for n in sorted(single):
        if single[n] > single[fastest] * (1 + PROBE_MARGIN):
            fastest = n
    close = [n for n in sorted(single) if single[n] * (1 + PROBE_MARGIN) >= single[fastest]]
    return max(close, key=lambda n: (aggregate.get(n, 0.0), -n))


def probe_threads(model_dir: Path, *, tokens: int = 48, max_threads: int | None = None
                  ) -> ThreadChoice:
    """Measure 1..cores intra-op threads (with the workers that fit), record the choice."""
    cores = available_cores()
    limit = min(cores, max_threads or cores)
    single: dict[int, float] = {}
    aggregate: dict[int, float] = {}
    for intra in range(1, limit + 1):
        one, many = _measure(model_dir, intra, workers_for(intra, cores), tokens)
        single[intra], aggregate[intra] = round(one, 2), round(many, 2)
    intra = choose(single, aggregate)
    choice = ThreadChoice(intra, workers_for(intra, cores), single, aggregate, cores,
                          openmp_runtime())
    (model_dir / PROBE_FILE).write_text(json.dumps(asdict(choice), indent=2) + "\n",
                                        encoding="utf-8")
    return choice


def recorded_choice(model_dir: Path) -> ThreadChoice | None:
    """What the probe chose for this model, fitted to the cores this process may use now."""
    path = model_dir / PROBE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        intra = int(data["intra_threads"])
        single = {int(k): float(v) for k, v in data.get("tokens_per_s", {}).items()}
        aggregate = {int(k): float(v)
                     for k, v in data.get("aggregate_tokens_per_s", {}).items()}
        measured_on = int(data.get("cpu_count", 0))
        runtime = str(data.get("openmp", "gnu"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path} is damaged ({exc}); delete it and run "
                         "`hush model probe NAME` to measure again") from None
    cores = available_cores()
    # A model directory copied to a smaller machine: never ask for more than it has.
    intra = max(1, min(intra, cores))
    return ThreadChoice(intra, workers_for(intra, cores), single, aggregate,
                        measured_on or cores, runtime)


def recorded_threads(model_dir: Path) -> int:
    """The intra-op thread count the probe chose for this model, fitted to the cores here;
    1 for a model never probed."""
    recorded = recorded_choice(model_dir)
    return recorded.intra_threads if recorded else 1


def needs_probe(model_dir: Path) -> bool:
    """No usable measurement for this model here: none, a damaged one, or one made on another
    OpenMP runtime (whose best thread count may differ)."""
    try:
        recorded = recorded_choice(model_dir)
    except ModelError:
        return True
    return recorded is None or recorded.openmp != openmp_runtime()
