"""Real-model answers judged on a set, never on one greedy token.

SmolLM2-135M's first token for "What is the capital of France?" is "The" at -1.38 against
"La" at -1.84 even in float32, and one CPU code path answered in French: a test that bets on
one question fails on some machine. Tests here ask the easy set (tests/engine/data/
easy_questions.json, 16 questions, all right on the Intel development machine) and want at
least PASS_MARK right: a broken engine, template or kernel gets almost none right, a rounding
difference flips one or two.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hush.daemon.client import Client
from hush.daemon.engine.quiz import Question, load_questions

EASY_FILE = Path(__file__).parent / "engine" / "data" / "easy_questions.json"
PASS_MARK = 12


def easy_questions() -> list[Question]:
    return load_questions(EASY_FILE)


def quiz_process(model_dir: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 300) -> dict[str, Any]:
    """The easy quiz in a fresh process (CTranslate2's ISA and the OpenMP runtime are fixed
    per process); `env` is added to this one's environment."""
    done = subprocess.run(
        [sys.executable, "-m", "hush.daemon.engine.quiz", str(model_dir), str(EASY_FILE),
         *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _ask_daemon(socket: Path, questions: list[Question], max_tokens: int) -> list[str]:
    texts = []
    async with await Client.connect(socket) as client:
        for question in questions:
            pieces = []
            params = {"message": question.text, "options": {"max_tokens": max_tokens}}
            async for event in client.request("chat", params):
                if event["type"] == "token":
                    pieces.append(event["text"])
            texts.append("".join(pieces))
    return texts


def daemon_quiz(socket: Path, max_tokens: int = 32) -> list[str]:
    """The easy questions asked of a running daemon, each a new conversation; the wrong ones
    are returned (empty when all were right)."""
    questions = easy_questions()
    texts = asyncio.run(_ask_daemon(socket, questions, max_tokens))
    return [f"{q.text} -> {t!r}" for q, t in zip(questions, texts, strict=True)
            if not q.is_right(t)]


def passes(wrong: list[str]) -> bool:
    return len(easy_questions()) - len(wrong) >= PASS_MARK
