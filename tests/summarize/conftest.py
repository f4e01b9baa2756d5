"""Fixtures for the summarize tests: the corpus, its key facts, and a loaded SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hush.daemon.engine.generator import Engine
from hush.daemon.engine.probe import recorded_threads

CORPUS = Path(__file__).parent / "corpus"
LONG_DOCUMENT = "kessel_river_survey.md"


@pytest.fixture(scope="session")
def facts() -> dict[str, list[list[str]]]:
    """Each corpus document's key facts; a fact is a list of accepted alternatives."""
    raw = yaml.safe_load((CORPUS / "facts.yaml").read_text(encoding="utf-8"))
    return {name: [[str(a) for a in fact] for fact in entries] for name, entries in raw.items()}


@pytest.fixture(scope="session")
def smollm2(real_cache: Path) -> Iterator[Engine]:
    model_dir = real_cache / "models" / "smollm2-135m"
    engine = Engine.load(model_dir, intra_threads=recorded_threads(model_dir))
    yield engine
    engine.close()


def facts_found(summary: str, facts: list[list[str]]) -> list[bool]:
    low = summary.lower()
    return [any(alternative.lower() in low for alternative in fact) for fact in facts]
