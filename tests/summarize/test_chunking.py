"""Chunking invariants, with the real SmolLM2 tokenizer and with a plain word counter."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hush.daemon.engine.tokenizer import Tokenizer
from hush.daemon.summarize.chunking import chunk_text
from hush.daemon.summarize.loaders import extract_text

from .conftest import CORPUS, LONG_DOCUMENT


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def tokenizer(real_cache: Path) -> Tokenizer:
    return Tokenizer.load(real_cache / "models" / "smollm2-135m")


@pytest.fixture(scope="module")
def long_text() -> str:
    return extract_text((CORPUS / LONG_DOCUMENT).read_bytes(), filename=LONG_DOCUMENT).text


def count_with(tokenizer: Tokenizer):  # type: ignore[no-untyped-def]
    return lambda text: len(tokenizer.encode(text))


@pytest.mark.parametrize("limit", [200, 700, 1500])
def test_long_document_chunks_fit_overlap_and_cover_everything(
        tokenizer: Tokenizer, long_text: str, limit: int) -> None:
    count = count_with(tokenizer)
    overlap = limit // 10
    chunks = chunk_text(long_text, count_tokens=count, max_tokens=limit, overlap_tokens=overlap)
    assert len(chunks) >= count(long_text) // limit
    for chunk in chunks:
        assert chunk.tokens == count(chunk.text) <= limit
        assert chunk.text == long_text[chunk.start : chunk.end]
    # Coverage: consecutive chunks touch or overlap, first and last reach the ends.
    assert chunks[0].start == 0 and chunks[-1].end == len(long_text.rstrip())
    for before, after in itertools.pairwise(chunks):
        assert long_text[before.end : after.start].strip() == ""  # only a break between
        assert after.start > before.start
        if after.start < before.end:
            shared = long_text[after.start : before.end]
            assert count(shared) <= overlap + 2


def test_overlap_is_present_between_neighbours(tokenizer: Tokenizer, long_text: str) -> None:
    chunks = chunk_text(long_text, count_tokens=count_with(tokenizer), max_tokens=600,
                        overlap_tokens=80)
    overlapping = sum(after.start < before.end for before, after in itertools.pairwise(chunks))
    assert overlapping >= len(chunks) // 2


def test_boundaries_are_paragraphs_or_sentences(tokenizer: Tokenizer, long_text: str) -> None:
    chunks = chunk_text(long_text, count_tokens=count_with(tokenizer), max_tokens=500,
                        overlap_tokens=40)
    for chunk in chunks[:-1]:
        # Every chunk ends a sentence (or a heading/list line that ends a paragraph).
        follows = long_text[chunk.end : chunk.end + 2]
        assert re.search(r"[.!?:)*\"']$", chunk.text) or follows.startswith("\n"), chunk.text[-80:]
    paragraph_ends = sum(long_text[c.end : c.end + 2] == "\n\n" for c in chunks[:-1])
    assert paragraph_ends >= len(chunks) // 2  # paragraph breaks are preferred


def test_balanced_chunks_are_even(tokenizer: Tokenizer, long_text: str) -> None:
    count = count_with(tokenizer)
    plain = chunk_text(long_text, count_tokens=count, max_tokens=1000, balance=False)
    even = chunk_text(long_text, count_tokens=count, max_tokens=1000)
    assert len(even) <= len(plain)
    spread = max(c.tokens for c in even) - min(c.tokens for c in even)
    assert spread < max(c.tokens for c in plain) - min(c.tokens for c in plain)


def test_short_text_is_one_chunk_and_empty_is_none() -> None:
    assert [c.text for c in chunk_text("One. Two.", count_tokens=words, max_tokens=50)] == [
        "One. Two."]
    assert chunk_text(" \n\n ", count_tokens=words, max_tokens=50) == []


def test_overlong_sentence_and_word_are_cut() -> None:
    text = "word " * 95 + "x" * 500
    chunks = chunk_text(text, count_tokens=len, max_tokens=40)  # one token per character
    assert all(c.tokens <= 40 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


@settings(max_examples=60, deadline=None)
@given(
    paragraphs=st.lists(
        st.lists(st.text(alphabet="abcdefghij ", min_size=1, max_size=60), min_size=1,
                 max_size=6),
        min_size=1, max_size=12),
    limit=st.integers(min_value=8, max_value=60),
)
def test_any_text_chunks_within_limit(paragraphs: list[list[str]], limit: int) -> None:
    text = "\n\n".join(". ".join(sentences) + "." for sentences in paragraphs)
    chunks = chunk_text(text, count_tokens=words, max_tokens=limit, overlap_tokens=limit // 4)
    assert all(c.tokens <= limit for c in chunks)
    assert set(text.split()) <= {w for c in chunks for w in c.text.split()}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", count_tokens=words, max_tokens=10, overlap_tokens=6)
    with pytest.raises(ValueError, match="at least 8"):
        chunk_text("x", count_tokens=words, max_tokens=4)
