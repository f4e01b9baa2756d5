"""Load an imported model and stream generated text from it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .chat_template import plain_prompt, render_chat, uses_chat_template
from .errors import ModelError
from .model_info import ModelInfo
from .tokenizer import Tokenizer

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings. temperature 0 means greedy decoding (deterministic)."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k limit when sampling
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")
        if self.top_k < 0:
            raise ValueError("top_k must not be negative")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be positive")

    def ctranslate2_kwargs(self) -> dict[str, Any]:
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


class Generation:
    """One streamed completion: iterate it for text pieces.

    Attributes are updated as iteration proceeds and final once it ends, so the thread that
    iterates can report usage without shared engine state.
    """

    def __init__(
        self,
        engine: Engine,
        prompt_ids: Sequence[int],
        options: GenerationOptions,
        cancel: threading.Event | None,
    ) -> None:
        self._engine = engine
        self._prompt_ids = list(prompt_ids)
        self._options = options
        self._cancel = cancel
        self._started = False
        self.prompt_tokens = len(self._prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.first_token_time: float | None = None  # time.monotonic() of the first token
        self.start_time: float | None = None

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[str]:
        engine, options, cancel = self._engine, self._options, self._cancel
        tokenizer = engine.tokenizer
        decoder = tokenizer.stream_decoder()
        end_ids = engine.end_token_ids
        self.start_time = time.monotonic()
        if options.seed is not None:
            # Process-wide in CTranslate2; a seeded request is reproducible only when it is
            # the only sampling request running.
            import ctranslate2

            ctranslate2.set_random_seed(options.seed)

        def stop_requested(_step: object) -> bool:
            # Runs on CTranslate2's worker between steps: stops compute even if the consumer
            # of this iterator is slow to notice.
            return cancel is not None and cancel.is_set()

        if cancel is not None and cancel.is_set():
            self.finish_reason = "cancelled"
            return
        steps = engine.generator.generate_tokens(
            [tokenizer.id_to_token(i) for i in self._prompt_ids],
            # Never run past the context window, whatever the client asked for.
            max_length=min(options.max_tokens, engine.info.context_length - self.prompt_tokens),
            end_token=sorted(end_ids),
            callback=stop_requested,
            **options.ctranslate2_kwargs(),
        )
        try:
            for step in steps:
                if cancel is not None and cancel.is_set():
                    self.finish_reason = "cancelled"
                    break
                token_id = int(step.token_id)
                if self.first_token_time is None:
                    self.first_token_time = time.monotonic()
                if token_id in end_ids:
                    self.finish_reason = "stop"
                    break
                self.completion_tokens += 1
                piece = decoder.push(token_id)
                if piece:
                    yield piece
            else:
                if self.finish_reason is None:
                    stopped = cancel is not None and cancel.is_set()
                    self.finish_reason = "cancelled" if stopped else "length"
        finally:
            # Closing the CTranslate2 iterator tells its worker to stop after this step.
            close = getattr(steps, "close", None)
            if close is not None:
                close()
            if self.finish_reason is None:  # the consumer stopped iterating early
                self.finish_reason = "cancelled"


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

    @classmethod
    def load(cls, model_dir: Path, *, intra_threads: int = 1, inter_threads: int = 1) -> Engine:
        import ctranslate2

        model_dir = Path(model_dir)
        info = ModelInfo.load(model_dir)
        tokenizer = Tokenizer.load(model_dir)
        try:
            generator = ctranslate2.Generator(
                str(model_dir),
                device="cpu",
                compute_type=info.quantization,
                intra_threads=intra_threads,
                inter_threads=inter_threads,
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(
                f"CTranslate2 cannot load {model_dir} ({exc}). Import the model again."
            ) from exc
        return cls(generator, tokenizer, info)

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

    def stream(
        self,
        prompt_ids: Sequence[int],
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """A blocking stream of text pieces; iterate it in a worker thread."""
        if len(prompt_ids) >= self.info.context_length:
            raise ModelError(
                f"The prompt has {len(prompt_ids)} tokens; this model reads at most "
                f"{self.info.context_length}. Shorten the conversation."
            )
        return Generation(self, prompt_ids, options or GenerationOptions(), cancel)
