"""Load an imported model and stream generated text from it."""

from __future__ import annotations

import dataclasses
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .chat_template import plain_prompt, render_chat, uses_chat_template
from .errors import ModelError
from .model_info import ModelInfo
from .stops import StopMatcher
from .tokenizer import Tokenizer

FinishReason = Literal["stop", "length", "cancelled"]

STATIC_CACHE_TOKENS = 2048
"""Most prompt-prefix tokens whose model state one loaded model keeps cached (about 95 MB of
float32 keys and values for SmolLM2, less for the others)."""
DEFAULT_REPETITION_PENALTY = 1.1
"""For models the catalog has not measured (Ollama's default too). Greedy answers with 1.0
looped to max_tokens on 5 of 30 quiz questions with SmolLM2 and 1 with Qwen2.5-Coder-0.5B;
with 1.1 none did, and neither got fewer right (bench/quality_bench.py)."""
MIN_CACHED_PREFIX = 8
"""Shorter shared prefixes save too little prefill to be worth a cache entry."""
_PREFIX_MEMO = 64
# Two first messages that share no leading character class, so the ids they share are the
# template's alone.
_PREFIX_PROBES = ("0", "Hello")


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings. temperature 0 means greedy decoding (deterministic)."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k limit when sampling
    top_p: float = 1.0
    repetition_penalty: float | None = None
    """1 leaves scores alone; None takes the model's measured default (Engine)."""
    seed: int | None = None
    stop: tuple[str, ...] = ()
    """Strings that end the answer when generated; they may span several tokens."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")
        if self.top_k < 0:
            raise ValueError("top_k must not be negative")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be positive")

    def ctranslate2_kwargs(self) -> dict[str, Any]:
        """The options CTranslate2 applies to a whole batch: jobs that share them can batch."""
        if self.temperature == 0:
            # Greedy: CTranslate2 takes the argmax when sampling from the top 1.
            return {"sampling_topk": 1, "repetition_penalty": self.repetition_penalty}
        return {
            # CTranslate2's sampling_topk=0 means the full vocabulary.
            "sampling_topk": self.top_k,
            "sampling_topp": self.top_p,
            "sampling_temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
        }

    def batch_key(self) -> tuple[Any, ...]:
        return (*sorted(self.ctranslate2_kwargs().items()), self.seed)


@dataclass(frozen=True)
class Prompt:
    """Token ids ready for the model, and what the context budget cost."""

    ids: list[int]
    dropped_turns: int = 0
    """Oldest turns (after the system prompt) left out so the rest fits the context."""
    static: int = 0
    """How many leading ids every conversation with this system prompt shares: CTranslate2
    caches the model state after them (static_prompt), so a repeated system prompt is not
    computed again."""


class Job:
    """One sequence to generate. Runs on CTranslate2's thread; text goes to `emit`.

    Counts, timings and the finish reason are final once `Engine.generate` returns.
    """

    def __init__(
        self,
        engine: Engine,
        prompt_ids: Sequence[int],
        options: GenerationOptions,
        emit: Callable[[str], None],
        cancel: threading.Event | None = None,
        *,
        static: int = 0,
    ) -> None:
        if options.repetition_penalty is None:
            options = dataclasses.replace(options,
                                          repetition_penalty=engine.repetition_penalty)
        self.prompt_ids = list(prompt_ids)
        # Only a proper prefix can be cached: the model must still read something after it.
        self.static = static if 0 < static < len(self.prompt_ids) else 0
        self.options = options
        self.cancel = cancel or threading.Event()
        self._emit = emit
        self._end_ids = engine.end_token_ids
        self._decoder = engine.tokenizer.stream_decoder()
        self._stops = StopMatcher(options.stop)
        room = engine.info.context_length - len(self.prompt_ids)
        if room < 1:
            raise ModelError(
                f"The prompt has {len(self.prompt_ids)} tokens; this model reads at most "
                f"{engine.info.context_length}. Shorten it by {1 - room} tokens."
            )
        # Never run past the context window, whatever the client asked for.
        self.max_new_tokens = min(options.max_tokens, room)
        self.prompt_tokens = len(self.prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.start_time: float | None = None
        self.first_token_time: float | None = None  # time.monotonic() of the first token
        self.end_time: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def batch_key(self) -> tuple[object, ...]:
        """Jobs with equal keys can decode in one batch: same sampling, same cached prefix.
        A seeded sampling job decodes alone: its draws must not depend on its neighbours."""
        alone = (id(self),) if self.options.seed is not None and self.options.temperature else ()
        return (*self.options.batch_key(), tuple(self.prompt_ids[: self.static]), *alone)

    def on_token(self, token_id: int) -> bool:
        """Handle one generated token; True tells CTranslate2 to stop this sequence."""
        if self.finish_reason is not None:
            return True
        if self.first_token_time is None:
            self.first_token_time = time.monotonic()
        if self.cancel.is_set():
            return self._finish("cancelled")
        if token_id in self._end_ids:
            return self._finish("stop")
        self.completion_tokens += 1
        text, stopped = self._stops.push(self._decoder.push(token_id))
        if text:
            self._emit(text)
        if stopped:
            return self._finish("stop")
        if self.completion_tokens >= self.max_new_tokens:
            return self._finish("length")
        return False

    def _finish(self, reason: FinishReason) -> bool:
        if reason != "cancelled" and (tail := self._stops.flush()):
            self._emit(tail)
        self.finish_reason = reason
        self.end_time = time.monotonic()
        return True

    def close(self) -> None:
        """Called once generation ended for the whole batch."""
        if self.finish_reason is None:
            # CTranslate2 stopped without telling us why: its own length limit.
            self._finish("cancelled" if self.cancel.is_set() else "length")


class Generation:
    """A blocking iterator over one job's text, for callers without a scheduler.

    Runs the job on a helper thread; stopping the iteration early cancels it.
    """

    def __init__(self, engine: Engine, prompt_ids: Sequence[int], options: GenerationOptions,
                 cancel: threading.Event | None) -> None:
        self._queue: queue.SimpleQueue[str | BaseException | None] = queue.SimpleQueue()
        self.job = Job(engine, prompt_ids, options, self._queue.put, cancel)
        self._engine = engine
        self._started = False

    def __getattr__(self, name: str) -> Any:
        # prompt_tokens, completion_tokens, finish_reason, first_token_time, start_time
        return getattr(self.job, name)

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[str]:
        def work() -> None:
            try:
                self._engine.generate([self.job])
            except BaseException as exc:  # re-raised in the iterating thread
                self._queue.put(exc)
            self._queue.put(None)

        worker = threading.Thread(target=work, name="hush-generation", daemon=True)
        worker.start()
        try:
            while (item := self._queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.job.cancel.set()
            worker.join()


# CTranslate2 takes an unsigned 32-bit seed; its all-ones value means "from random_device".
_SEED_RANGE = (1 << 32) - 1


_SEED_LOCK = threading.Lock()
"""CTranslate2's random seed is process-wide: one sampled batch at a time hands it over."""


class _SeedHandoff:
    """Sets CTranslate2's seed for one sampled batch and holds it until the batch has drawn.

    A thread whose generator is not seeded yet takes the process-wide seed at its first
    draw. Held from `set` to the first token, no other batch changes the seed in between: a
    seeded batch (on its fresh threads) starts from its seed, and an unseeded one that is a
    thread's first gets a fresh random seed, so two workers' threads never draw alike.
    """

    def __init__(self, seed: int | None) -> None:
        self._seed = secrets.randbelow(_SEED_RANGE) if seed is None else seed % _SEED_RANGE
        self._held = False

    def set(self) -> None:
        import ctranslate2

        _SEED_LOCK.acquire()
        self._held = True
        ctranslate2.set_random_seed(self._seed)

    def drawn(self) -> None:
        if self._held:
            self._held = False
            _SEED_LOCK.release()


class Engine:
    """A loaded model: CTranslate2 generator, tokenizer and metadata."""

    def __init__(self, generator: Any, tokenizer: Tokenizer, info: ModelInfo) -> None:
        self.generator = generator
        self.tokenizer = tokenizer
        self.info = info
        ids = (tokenizer.token_to_id(t) for t in info.end_of_turn_tokens)
        self.end_token_ids: frozenset[int] = frozenset(i for i in ids if i is not None)
        if not self.end_token_ids:
            raise ModelError(
                f"None of the model's end-of-turn tokens {list(info.end_of_turn_tokens)} is in "
                "its vocabulary; import the model again."
            )
        self.bos_id = tokenizer.token_to_id(info.bos_token) if info.bos_token else None
        self.repetition_penalty = info.repetition_penalty or DEFAULT_REPETITION_PENALTY
        """For requests that set none: measured per catalog model, recorded at import."""
        self.intra_threads = 1
        self.inter_threads = 1
        self._prefix_lock = threading.Lock()
        self._prefixes: dict[str | None, list[int]] = {}
        self._cached: set[tuple[int, ...]] = set()
        self._cached_tokens = 0

    @classmethod
    def load(cls, model_dir: Path, *, intra_threads: int, inter_threads: int = 1) -> Engine:
        """Load a model directory. The caller picks the thread counts (probe.recorded_threads
        gives what the import probe measured), so loading needs no measurement."""
        from .executable_memory import require_executable_memory

        require_executable_memory()
        model_dir = Path(model_dir)
        info = ModelInfo.load(model_dir)
        tokenizer = Tokenizer.load(model_dir)
        engine = cls(None, tokenizer, info)
        engine.generator = engine._open_generator(intra_threads, inter_threads)
        engine.intra_threads = intra_threads
        engine.inter_threads = inter_threads
        return engine

    def _open_generator(self, intra_threads: int, inter_threads: int) -> Any:
        import ctranslate2

        model_dir = self.info.path
        if model_dir is None:
            raise ModelError("The model's directory is unknown; load it with Engine.load.")
        try:
            return ctranslate2.Generator(
                str(model_dir),
                device="cpu",
                compute_type=self.info.quantization,
                intra_threads=intra_threads,
                inter_threads=inter_threads,
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(
                f"CTranslate2 cannot load {model_dir} ({exc}). Import the model again."
            ) from exc

    def prompt_text(self, messages: Sequence[Mapping[str, str]]) -> str:
        template = self.info.chat_template
        if template is not None and uses_chat_template(template):
            return render_chat(
                template,
                messages,
                bos_token=self.info.bos_token,
                eos_token=self.info.eos_token,
                add_generation_prompt=True,
            )
        return plain_prompt(messages)

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        ids = self.tokenizer.encode(self.prompt_text(messages))
        # Templates like Llama 3's write the BOS text themselves; do not double it.
        if self.info.add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids.insert(0, self.bos_id)
        if not ids:
            raise ModelError("The prompt is empty; there is nothing to continue.")
        return ids

    def fit_prompt(self, messages: Sequence[Mapping[str, str]], max_tokens: int) -> Prompt:
        """Render the conversation so that it and room for the answer fit the context.

        When it does not fit, the oldest turns after the system prompt go first, and the
        result says how many; the newest message is never dropped. Nothing is truncated
        silently: a newest message that cannot fit on its own is an error saying by how much.
        """
        context = self.info.context_length
        # Room for the answer, but never so much that a long answer request evicts history.
        reserve = min(max_tokens, context // 4)
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = list(messages[len(system) :])
        static = self._shared_prefix(system[0]["content"] if system else None)
        dropped = 0
        while True:
            ids = self.prompt_ids([*system, *turns])
            if len(ids) + reserve <= context:
                cached = self._cache_slot(static) if ids[: len(static)] == static else 0
                return Prompt(ids, dropped, cached)
            if len(turns) <= 1:
                over = len(ids) + reserve - context
                raise ModelError(
                    f"The message is too long for this model: {len(ids)} prompt tokens plus "
                    f"{reserve} reserved for the answer exceed its context of {context} by "
                    f"{over} tokens. Shorten it by at least {over} tokens."
                )
            # Drop the oldest turn, and its answer with it so roles keep alternating.
            drop = 2 if len(turns) > 2 and turns[1]["role"] == "assistant" else 1
            del turns[:drop]
            dropped += drop

    def _shared_prefix(self, system: str | None) -> list[int]:
        """The ids every conversation with this system prompt starts with, whatever its user
        asks: the system prompt as the template renders it (or the template's own default one
        when there is none), up to where the first user message begins. Found by rendering
        two different first messages and keeping what their ids share, so it holds for
        templates that fold the system prompt into the first user turn (Gemma) and for
        completion mode too. Empty when that is too short to be worth caching."""
        with self._prefix_lock:
            if system in self._prefixes:
                return self._prefixes[system]
        head = [{"role": "system", "content": system}] if system is not None else []
        try:
            renders = [self.prompt_ids([*head, {"role": "user", "content": probe}])
                       for probe in _PREFIX_PROBES]
        except ModelError:
            renders = [[]]  # a template that rejects the probe: nothing is cached
        shared = renders[0]
        for other in renders[1:]:
            same = 0
            while same < min(len(shared), len(other)) and shared[same] == other[same]:
                same += 1
            shared = shared[:same]
        prefix = shared if len(shared) >= MIN_CACHED_PREFIX else []
        with self._prefix_lock:
            if len(self._prefixes) >= _PREFIX_MEMO:
                self._prefixes.clear()  # renders are cheap; a bound matters more than hits
            self._prefixes[system] = prefix
        return prefix

    def _cache_slot(self, prefix: Sequence[int]) -> int:
        """How many leading ids to pass as CTranslate2's cached static prompt (0: none).

        CTranslate2 keeps each static prompt's model state for as long as the model stays
        loaded and never evicts one, so the prefixes it is handed are counted: past
        STATIC_CACHE_TOKENS, a new system prompt is computed with the rest of its prompt
        instead of being cached. The model holder's idle unload frees them all.
        """
        if not prefix:
            return 0
        key = tuple(prefix)
        with self._prefix_lock:
            if key not in self._cached:
                if self._cached_tokens + len(key) > STATIC_CACHE_TOKENS:
                    return 0
                self._cached.add(key)
                self._cached_tokens += len(key)
        return len(key)

    def generate(self, jobs: Sequence[Job]) -> None:
        """Decode several jobs as one CTranslate2 batch (blocking; run it in a thread).

        The jobs must share `options.batch_key()`. Each job stops on its own (end of turn,
        stop string, its max_tokens, cancel) without holding back the others.
        """
        if not jobs:
            return
        key = jobs[0].batch_key()
        if any(job.batch_key() != key for job in jobs):
            raise ValueError("jobs in one batch must share their sampling options and their "
                             "cached system prompt")
        live = [job for job in jobs if not job.cancel.is_set()]
        now = time.monotonic()
        for job in jobs:
            job.start_time = now
        try:
            if live:
                self._decode(live)
        finally:
            for job in jobs:
                job.close()

    def _decode(self, jobs: Sequence[Job]) -> None:
        options = jobs[0].options
        generator, static = self.generator, jobs[0].static  # static is part of the batch key
        seeded = options.temperature > 0 and options.seed is not None
        if seeded:
            # CTranslate2 seeds each of its worker threads' generators once, at the thread's
            # first draw, from the process-wide seed; a running generator's threads ignore
            # later seeds. Only a generator with fresh threads starts from this one, so a
            # seeded batch gets its own (one model load) and its prompt in full.
            generator, static = self._open_generator(self.intra_threads, 1), 0
        tokens = self.tokenizer.id_to_token
        starts = [job.prompt_ids[static:] for job in jobs]
        shortest = min(len(ids) for ids in starts)
        # CTranslate2 forwards the shortest prompt at once and steps through the rest of the
        # longer ones, counting those steps against max_length.
        max_length = max(job.max_new_tokens + len(ids) - shortest
                         for job, ids in zip(jobs, starts, strict=True))
        cached: dict[str, Any] = {}
        if static:
            cached = {"static_prompt": [tokens(i) for i in jobs[0].prompt_ids[:static]],
                      "cache_static_prompt": True}
        seed = _SeedHandoff(options.seed if seeded else None) if options.temperature > 0 else None

        def on_step(step: Any) -> bool:
            if seed is not None:
                seed.drawn()
            return jobs[int(step.batch_id)].on_token(int(step.token_id))

        try:
            if seed is not None:
                seed.set()
            generator.generate_batch(
                [[tokens(i) for i in ids] for ids in starts],
                max_length=max_length,
                beam_size=1,
                include_prompt_in_result=False,
                end_token=sorted(self.end_token_ids),
                callback=on_step,
                **cached,
                **options.ctranslate2_kwargs(),
            )
        finally:
            if seed is not None:
                seed.drawn()
            if generator is not self.generator:
                generator.unload_model()
                del generator

    def stream(
        self,
        prompt_ids: Sequence[int],
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """A blocking iterator of text pieces for a single prompt."""
        return Generation(self, prompt_ids, options or GenerationOptions(), cancel)

    def close(self) -> None:
        """Free the model now. CTranslate2 aborts the process if a generator whose callback
        stopped a sequence is left for the interpreter's final teardown, so owners call this."""
        generator, self.generator = self.generator, None
        if generator is not None:
            generator.unload_model()
            del generator
