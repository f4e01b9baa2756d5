"""Pick CTranslate2's intra-op thread count per model and machine by measuring it.

More threads are not always faster for one stream: on the 2-core development machine one
thread decoded SmolLM2 faster than two. So at import a short greedy run is timed for each
thread count up to the core count, and the fastest is recorded next to the model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ModelError

PROBE_FILE = "threads.json"
PROBE_MARGIN = 0.10
_PROBE_PROMPT = "Write a short paragraph about the history of lighthouses."


@dataclass(frozen=True)
class ThreadChoice:
    intra_threads: int
    tokens_per_s: dict[int, float]
    cpu_count: int


def available_cores() -> int:
    # The affinity mask, not the machine: a service limited by CPUAffinity= or a cgroup
    # cpuset sees fewer cores than os.cpu_count().
    return max(1, len(os.sched_getaffinity(0)))


def _decode_speed(model_dir: Path, threads: int, tokens: int) -> float:
    from .generator import Engine, GenerationOptions

    engine = Engine.load(model_dir, intra_threads=threads)
    try:
        prompt = engine.prompt_ids([{"role": "user", "content": _PROBE_PROMPT}])
        options = GenerationOptions(max_tokens=tokens)
        "".join(engine.stream(prompt, options))  # warm-up: first call allocates
        generation = engine.stream(prompt, options)
        started = time.monotonic()
        for _piece in generation:
            pass
        elapsed = time.monotonic() - started
        return generation.completion_tokens / elapsed if elapsed > 0 else 0.0
    finally:
        engine.close()


def probe_threads(model_dir: Path, *, tokens: int = 48, max_threads: int | None = None
                  ) -> ThreadChoice:
    """Measure decode speed for 1..cores threads, record the fastest in threads.json."""
    cores = available_cores()
    limit = min(cores, max_threads or cores)
    speeds = {n: round(_decode_speed(model_dir, n, tokens), 2) for n in range(1, limit + 1)}
    # More threads must earn their core: within the noise of a shared machine, the smaller
    # count wins, leaving the other cores to a second decode worker.
    best = 1
    for n in sorted(speeds):
        if speeds[n] > speeds[best] * (1 + PROBE_MARGIN):
            best = n
    choice = ThreadChoice(best, speeds, cores)
    (model_dir / PROBE_FILE).write_text(json.dumps(asdict(choice), indent=2) + "\n",
                                        encoding="utf-8")
    return choice


def recorded_threads(model_dir: Path) -> int | None:
    """The thread count the probe chose for this model, if it ran and the machine agrees."""
    path = model_dir / PROBE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        threads = int(data["intra_threads"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} is damaged ({exc}); delete it and run "
                         "`hush model probe NAME` to measure again") from None
    # A model directory copied to a smaller machine: never ask for more than it has.
    return max(1, min(threads, available_cores()))
