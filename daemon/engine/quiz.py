"""Easy questions with known answers: how often a loaded model answers right.

A small model's greedy answer to one question can flip on a rounding difference between two
CPU code paths, so quality is judged on a set: the tests ask for most of a dozen right on
every fast path, and the benchmark scores each catalog model on its own held-out quiz.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .generator import Engine, GenerationOptions, Job
from .openmp import openmp_runtime
from .probe import recorded_threads

DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Question:
    text: str
    answers: tuple[str, ...]
    """A right answer contains one of these as a whole word (case-insensitive)."""

    def is_right(self, answer: str) -> bool:
        return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", answer, re.IGNORECASE)
                   for word in self.answers)


@dataclass(frozen=True)
class Answer:
    question: Question
    text: str
    finish_reason: str | None

    @property
    def right(self) -> bool:
        return self.question.is_right(self.text)

    @property
    def loops(self) -> bool:
        return loops(self.text)


def loops(text: str, n: int = 6, times: int = 3) -> bool:
    """Whether some run of `n` words occurs `times` times: a greedy answer stuck repeating."""
    words = re.findall(r"\w+", text.lower())
    runs = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(count >= times for count in runs.values())


def load_questions(path: Path) -> list[Question]:
    """Questions from a JSON file: {"questions": [{"q": text, "a": [word, ...]}, ...]}."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Question(item["q"], tuple(item["a"])) for item in data["questions"]]


def ask_all(engine: Engine, questions: Sequence[Question], options: GenerationOptions, *,
            system: str | None = DEFAULT_SYSTEM, cache_prefix: bool = True, batch: int = 1,
            ) -> list[Answer]:
    """Each question as the first turn of a conversation, `batch` sequences per CTranslate2
    batch. `system` None leaves the system prompt to the chat template's default;
    `cache_prefix` False computes it with every question instead of using the cached prefix
    state."""
    texts: list[list[str]] = [[] for _ in questions]
    jobs = []
    for question, pieces in zip(questions, texts, strict=True):
        messages = [{"role": "user", "content": question.text}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        prompt = engine.fit_prompt(messages, options.max_tokens)
        jobs.append(Job(engine, prompt.ids, options, pieces.append,
                        static=prompt.static if cache_prefix else 0))
    for start in range(0, len(jobs), batch):
        engine.generate(jobs[start:start + batch])
    return [Answer(q, "".join(t), job.finish_reason)
            for q, t, job in zip(questions, texts, jobs, strict=True)]


def main(argv: Sequence[str] | None = None) -> None:
    """Score one model on a question file in this process and print the result as JSON.

    Run as a fresh process per fast path (CTranslate2 reads CT2_FORCE_CPU_ISA and the
    OpenMP runtime is chosen once per process): `python -m hush.daemon.engine.quiz MODEL_DIR
    QUESTIONS.json [--threads N] [--batch N] [--no-prefix-cache] [--repetition-penalty P]`.
    """
    parser = argparse.ArgumentParser(prog="python -m hush.daemon.engine.quiz")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("questions", type=Path)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: what the import probe chose)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-prefix-cache", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repetition-penalty", type=float, default=None,
                        help="default: the model's own")
    args = parser.parse_args(argv)
    engine = Engine.load(args.model_dir,
                         intra_threads=args.threads or recorded_threads(args.model_dir))
    try:
        options = GenerationOptions(max_tokens=args.max_tokens,
                                    repetition_penalty=args.repetition_penalty)
        start = time.monotonic()
        answers = ask_all(engine, load_questions(args.questions), options,
                          cache_prefix=not args.no_prefix_cache, batch=args.batch)
        seconds = time.monotonic() - start
        threads = engine.intra_threads
    finally:
        engine.close()
    print(json.dumps({
        "openmp": openmp_runtime(),
        "intra_threads": threads,
        "right": sum(a.right for a in answers),
        "questions": len(answers),
        "wrong": [a.question.text for a in answers if not a.right],
        "looping": sum(a.loops for a in answers),
        "answers": [a.text for a in answers],
        "finish_reasons": [a.finish_reason for a in answers],
        "seconds": round(seconds, 1),
    }, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
