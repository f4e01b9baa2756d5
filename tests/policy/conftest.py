"""Shared pieces of the policy tests: the labelled corpus and the policy it is scored under."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from hush.daemon.policy.compiled import CompiledPolicy
from hush.daemon.policy.loader import load_policy_file

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Sample:
    text: str
    spans: frozenset[tuple[str, int, int]]  # (detector, start, end)


def load_corpus() -> list[Sample]:
    samples = []
    for line in (HERE / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = row["text"]
        spans = set()
        for span in row["spans"]:
            start = text.index(span["value"])
            spans.add((span["detector"], start, start + len(span["value"])))
        samples.append(Sample(text, frozenset(spans)))
    return samples


CORPUS = load_corpus()


@pytest.fixture(scope="session")
def corpus_policy() -> CompiledPolicy:
    return load_policy_file(HERE / "corpus_policy.yaml")
