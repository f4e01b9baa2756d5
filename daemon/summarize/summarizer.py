"""Map-reduce summaries that fit a small model's context, with progress and cancel.

Map: the document is cut into token-bounded chunks (chunking.py) and each is summarized; all
chunks decode as one CTranslate2 batch (or batches of `max_batch`), which is several times
faster in aggregate than one after another. Reduce: the partial summaries are grouped so each
group fits one prompt and summarized again, round after round, until everything fits a single
prompt; that last prompt asks for the length and form the user chose.

Everything here blocks; the daemon runs `summarize` in a worker thread. No document text is
logged.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..engine.generator import Engine, GenerationOptions, Job
from ..errors import HushError
from .chunking import chunk_text

log = logging.getLogger("hushd.summarize.summarizer")

Length = Literal["short", "medium", "long"]
Stage = Literal["map", "reduce"]
RunBatch = Callable[[Sequence[Job]], None]


class SummaryCancelled(HushError):
    """The summary was cancelled; `done` of `total` steps had finished."""

    code = "cancelled"

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"summary cancelled after {done} of {total} steps")
        self.done = done
        self.total = total


@dataclass(frozen=True)
class Progress:
    """How far a summary is: model calls (chunks, then reduce steps) done of the total."""

    stage: Stage
    done: int
    total: int
    """Estimated before the reduce rounds run; it can change by a step or two."""
    elapsed: float
    eta_seconds: float | None
    """Rough: seconds per finished step so far times the steps left; None before the first."""


@dataclass(frozen=True)
class SummaryResult:
    text: str
    chunks: int
    """Chunks in the map step (1: the document fit one prompt, no reduce)."""
    rounds: int
    """Reduce rounds, the final one included (0 when the document fit one prompt)."""
    tokens: int
    """Tokens generated, all steps together."""
    prompt_tokens: int
    """Tokens read, all steps together."""
    seconds: float
    truncated: bool
    """Some step hit its token limit and was cut (the text may end abruptly in places)."""


@dataclass(frozen=True)
class _Style:
    sentences: str
    bullets: str
    max_tokens: int


_STYLES: dict[Length, _Style] = {
    "short": _Style("2 or 3 sentences", "3 bullet points", 120),
    "medium": _Style("5 or 6 sentences", "5 bullet points", 240),
    "long": _Style("about 10 sentences", "8 to 10 bullet points", 420),
}

# Small models (SmolLM2-135M) follow a short, plain instruction placed after the text best.
# Partial summaries are given back as plain text with the same instruction: asking a 135M model
# to "combine notes" made it invent a document of its own.
_MAP = "{text}\n\nSummarize the text above in 3 sentences. Keep names, numbers and dates."
_MERGE = _MAP
_FINAL_DOC = "{text}\n\nSummarize the text above in {form}."
_FINAL_NOTES = _FINAL_DOC


class Summarizer:
    """Summarizes text with one loaded engine.

    Args:
        engine: the loaded model.
        chunk_tokens: largest chunk the model reads at once (lowered to fit the context).
        overlap_tokens: text repeated between neighbouring chunks.
        map_tokens: answer budget for each chunk's (and each intermediate) summary.
        max_batch: most prompts decoded together; bounds memory (each holds its KV cache).
        batched: False decodes one prompt at a time (for benchmarks and comparisons).
        run: decodes a batch of jobs; defaults to `engine.generate`. The daemon can pass a
            function that goes through its scheduler instead.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        chunk_tokens: int = 1024,
        overlap_tokens: int = 64,
        map_tokens: int = 150,
        max_batch: int = 8,
        batched: bool = True,
        repetition_penalty: float = 1.15,
        run: RunBatch | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self.batched = batched
        self.repetition_penalty = repetition_penalty
        self._run = run or engine.generate
        self.pad_id = engine.tokenizer.encode("\n")[0]
        context = engine.info.context_length
        answer = max(map_tokens, *(s.max_tokens for s in _STYLES.values()))
        overhead = max(
            len(self._ids(template, "", "x" * 40)) for template in (_MAP, _MERGE, _FINAL_NOTES)
        )
        # Margin: tokens can merge differently at the join between instruction and text.
        room = context - overhead - answer - 16
        if room < 3 * map_tokens:
            raise HushError(
                f"the model's context ({context} tokens) is too small to summarize in parts",
                code="model",
            )
        self.chunk_tokens = min(chunk_tokens, room)
        self.overlap_tokens = min(overlap_tokens, self.chunk_tokens // 4)
        self.map_tokens = map_tokens

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text))

    def summarize(
        self,
        text: str,
        *,
        length: Length = "short",
        bullets: bool = False,
        cancel: threading.Event | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> SummaryResult:
        """Summarize `text` (blocking).

        `progress` is called from this thread and from CTranslate2's decoding thread; keep it
        quick (an asyncio caller hops to its loop with `call_soon_threadsafe`).

        Raises:
            SummaryCancelled: `cancel` was set; decoding stops at its next step.
        """
        cancel = cancel or threading.Event()
        style = _STYLES[length]
        form = style.bullets + " starting with '- '" if bullets else style.sentences
        run = _Run(self, cancel, progress)
        if self.count_tokens(text) <= self.chunk_tokens:
            run.plan(1)
            final = run.step("map", [self._ids(_FINAL_DOC, text, form)], style.max_tokens)
            return run.result(final[0], chunks=1, rounds=0)

        chunks = chunk_text(text, count_tokens=self.count_tokens, max_tokens=self.chunk_tokens,
                            overlap_tokens=self.overlap_tokens)
        run.plan(len(chunks) + self._reduce_estimate(len(chunks)))
        notes = run.step("map", [self._ids(_MAP, c.text) for c in chunks], self.map_tokens)
        rounds = 0
        while True:
            notes = [n for n in notes if n] or ["(nothing found)"]
            rounds += 1
            groups = self._groups(notes)
            if len(groups) == 1:
                ids = self._ids(_FINAL_NOTES, groups[0], form)
                final = run.step("reduce", [ids], style.max_tokens)
                run.replan(0)
                return run.result(final[0], chunks=len(chunks), rounds=rounds)
            run.replan(len(groups) + self._reduce_estimate(len(groups)))
            notes = run.step("reduce", [self._ids(_MERGE, g) for g in groups], self.map_tokens)

    def _ids(self, template: str, text: str, form: str = "") -> list[int]:
        content = template.format(text=text, form=form)
        return self.engine.prompt_ids([{"role": "user", "content": content}])

    def _groups(self, notes: list[str]) -> list[str]:
        """Join notes into as few texts of at most chunk_tokens as order allows."""
        groups: list[list[str]] = [[]]
        for note in notes:
            candidate = "\n\n".join([*groups[-1], note])
            if groups[-1] and self.count_tokens(candidate) > self.chunk_tokens:
                groups.append([note])
            else:
                groups[-1].append(note)
        # A note is at most map_tokens and a group holds at least 3 of them, so every round
        # shrinks the count and the loop ends.
        return ["\n\n".join(g) for g in groups]

    def _reduce_estimate(self, pieces: int) -> int:
        """Model calls the reduce rounds will need for `pieces` notes, the final one included."""
        per_group = max(2, self.chunk_tokens // (self.map_tokens + 4))
        steps = 0
        while pieces > per_group:
            pieces = math.ceil(pieces / per_group)
            steps += pieces
        return steps + 1


class _TrackedJob(Job):
    """A job that reports once when it finishes, from whichever thread sees that."""

    def __init__(self, engine: Engine, ids: list[int], options: GenerationOptions,
                 cancel: threading.Event, on_done: Callable[[_TrackedJob], None]) -> None:
        self.parts: list[str] = []
        super().__init__(engine, ids, options, self.parts.append, cancel)
        self._on_done = on_done
        self._reported = False

    def on_token(self, token_id: int) -> bool:
        stop = super().on_token(token_id)
        if self.finish_reason is not None:
            self._report()
        return stop

    def close(self) -> None:
        super().close()
        self._report()

    def _report(self) -> None:
        if not self._reported and self.finish_reason != "cancelled":
            self._reported = True
            self._on_done(self)


class _Run:
    """Bookkeeping for one summarize call: counts, timing, progress, cancel."""

    def __init__(self, owner: Summarizer, cancel: threading.Event,
                 progress: Callable[[Progress], None] | None) -> None:
        self.owner = owner
        self.cancel = cancel
        self.progress = progress
        self.start = time.monotonic()
        self.done = 0
        self.total = 1
        self.stage: Stage = "map"
        self.tokens = 0
        self.prompt_tokens = 0
        self.truncated = False
        self._lock = threading.Lock()

    def plan(self, total: int) -> None:
        self.total = total
        self._report()

    def replan(self, remaining: int) -> None:
        self.total = self.done + remaining

    def step(self, stage: Stage, prompts: list[list[int]], max_tokens: int) -> list[str]:
        """Decode `prompts` (batched unless the owner says not) and return cleaned answers."""
        self._check()
        self.stage = stage
        options = GenerationOptions(max_tokens=max_tokens,
                                    repetition_penalty=self.owner.repetition_penalty)
        jobs = [_TrackedJob(self.owner.engine, ids, options, self.cancel, self._finished)
                for ids in prompts]
        size = self.owner.max_batch if self.owner.batched else 1
        order = sorted(jobs, key=lambda job: job.prompt_tokens)
        for first in range(0, len(order), size):
            self._check()
            batch = order[first : first + size]
            _pad(batch, self.owner.pad_id)
            self.owner._run(batch)
        self._check()
        for job in jobs:
            self.prompt_tokens += job.prompt_tokens
            self.tokens += job.completion_tokens
            self.truncated |= job.finish_reason == "length"
        return [_clean("".join(job.parts), job.finish_reason == "length") for job in jobs]

    def result(self, text: str, *, chunks: int, rounds: int) -> SummaryResult:
        seconds = time.monotonic() - self.start
        log.info("summary: %d chunks, %d rounds, %d tokens out, %.1f s",
                 chunks, rounds, self.tokens, seconds)
        return SummaryResult(text, chunks, rounds, self.tokens, self.prompt_tokens, seconds,
                             self.truncated)

    def _check(self) -> None:
        if self.cancel.is_set():
            raise SummaryCancelled(self.done, self.total)

    def _finished(self, job: _TrackedJob) -> None:
        with self._lock:
            self.done += 1
            self.total = max(self.total, self.done)
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.progress(Progress(self.stage, self.done, self.total, elapsed, eta))


def _pad(batch: list[_TrackedJob], pad_id: int) -> None:
    """Left-pad prompts in a batch to one length with a newline token.

    CTranslate2 reads the shortest prompt of a batch in one forward pass and steps through
    the other prompts' extra tokens one decoding step at a time: four ~900-token chunks that
    differ by 60 tokens took 13 s to read instead of about 6. Leading newlines are text the
    model already ignores, and equal lengths make the whole batch one forward pass.
    """
    longest = max(job.prompt_tokens for job in batch)
    for job in batch:
        extra = longest - job.prompt_tokens
        if extra:
            job.prompt_ids = [pad_id] * extra + job.prompt_ids
            # Still fits: the longest prompt of the batch left room for the answer.
            job.prompt_tokens = len(job.prompt_ids)


def _clean(text: str, cut: bool) -> str:
    """Drop repeated sentences (small greedy models loop) and a sentence cut off mid-way."""
    text = text.strip()
    if cut:
        end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("\n"))
        if text.endswith((".", "!", "?")):
            end = len(text)
        if end > len(text) // 2:
            text = text[: end + 1].strip()
    seen: set[str] = set()
    lines = []
    for line in text.splitlines():
        kept = []
        for sentence in re.split(r"(?<=[.!?])\s+", line):
            key = re.sub(r"\W+", " ", sentence).strip().lower()
            if key and key in seen:
                continue
            seen.add(key)
            kept.append(sentence)
        if kept or not line.strip():
            lines.append(" ".join(kept))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
