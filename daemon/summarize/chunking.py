"""Split text into token-bounded chunks on paragraph, then sentence, boundaries, with overlap.

Chunks are slices of the original text (offsets kept), so nothing is reworded before the model
reads it. Counting uses the model's own tokenizer: a chunk's count is measured on its final
text, and every chunk is guaranteed to be within the limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

CountTokens = Callable[[str], int]

# A sentence ends at . ! ? (or their CJK forms), optionally followed by closing quotes or
# brackets, then whitespace. Abbreviations ("Dr. Smith") occasionally split early; a short
# extra sentence costs nothing here.
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])[\"'\u201d\u2019)\]]*\s+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Chunk:
    """One slice of the document, as the model will read it."""

    index: int
    text: str
    tokens: int
    start: int
    """Offset of the first character in the source text."""
    end: int
    """Offset after the last character."""


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    opens_paragraph: bool


def chunk_text(
    text: str,
    *,
    count_tokens: CountTokens,
    max_tokens: int,
    overlap_tokens: int = 0,
    balance: bool = True,
) -> list[Chunk]:
    """Split `text` into chunks of at most `max_tokens` tokens each.

    A chunk ends at a paragraph break when one falls in its second half, else at a sentence
    end; a sentence longer than a chunk is cut between words (and a word longer than a chunk
    between characters). Each chunk after the first repeats up to `overlap_tokens` of whole
    sentences from the end of the one before, so a fact split across the boundary is read whole.

    With `balance`, chunk sizes are evened out (same count, smaller maximum): batched decoding
    runs the shortest prompt at full speed and steps through the rest, so even sizes are faster.
    """
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError("overlap_tokens must be between 0 and half of max_tokens")
    units = _units(text, count_tokens, max_tokens)
    if not units:
        return []
    chunks = _pack(text, units, count_tokens, max_tokens, overlap_tokens)
    if balance and len(chunks) > 1:
        total = sum(u.tokens for u in units) + overlap_tokens * (len(chunks) - 1)
        target = max(8, math.ceil(total / len(chunks)))
        # Grow the target until packing needs no more chunks than the plain pass did.
        while target < max_tokens:
            even = _pack(text, units, count_tokens, target, min(overlap_tokens, target // 2))
            if len(even) <= len(chunks):
                return even
            target = min(max_tokens, math.ceil(target * 1.06) + 1)
    return chunks


def _units(text: str, count: CountTokens, limit: int) -> list[_Unit]:
    """Sentences (or smaller pieces) with their token counts, in order."""
    units: list[_Unit] = []
    for p_start, p_end in _spans(text, _PARAGRAPH_BREAK, 0, len(text)):
        first = True
        for s_start, s_end in _spans(text, _SENTENCE_END, p_start, p_end):
            for start, end in _fit(text, s_start, s_end, count, limit):
                units.append(_Unit(start, end, count(text[start:end]), first))
                first = False
    return units


def _spans(text: str, separator: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    """Non-blank pieces of text[start:end] between separator matches, stripped."""
    spans: list[tuple[int, int]] = []
    position = start
    for match in separator.finditer(text, start, end):
        spans.append((position, match.start()))
        position = match.end()
    spans.append((position, end))
    result = []
    for a, b in spans:
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            a += len(piece) - len(piece.lstrip())
            result.append((a, a + len(stripped)))
    return result


def _fit(text: str, start: int, end: int, count: CountTokens, limit: int) -> list[tuple[int, int]]:
    """Cut a span longer than `limit` tokens between words, or characters as a last resort."""
    if count(text[start:end]) <= limit:
        return [(start, end)]
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[start:end])]
    pieces: list[tuple[int, int]] = []
    if len(words) > 1:
        first = 0
        while first < len(words):
            # Binary search for the most words that still fit.
            low, high = first + 1, len(words)
            while low < high:
                mid = (low + high + 1) // 2
                if count(text[start + words[first][0] : start + words[mid - 1][1]]) <= limit:
                    low = mid
                else:
                    high = mid - 1
            a, b = start + words[first][0], start + words[low - 1][1]
            pieces.extend(_fit(text, a, b, count, limit) if low == first + 1 else [(a, b)])
            first = low
        return pieces
    # One enormous "word" (a hash, a URL, base64): characters, a safe per-token width at a time.
    position = start
    while position < end:
        step = max(1, limit)
        while step > 1 and count(text[position : position + step]) > limit:
            step //= 2
        pieces.append((position, min(end, position + step)))
        position += step
    return pieces


def _pack(
    text: str, units: list[_Unit], count: CountTokens, limit: int, overlap: int
) -> list[Chunk]:
    chunks: list[Chunk] = []
    first = 0  # index of the first unit of the chunk being built
    while first < len(units):
        last = first  # exclusive end
        estimate = 0
        while last < len(units) and estimate + units[last].tokens + 1 <= limit:
            estimate += units[last].tokens + 1
            last += 1
        last = max(last, first + 1)  # a single unit always fits: _fit made it so
        if last < len(units):
            # Prefer to end at a paragraph break in the second half of the chunk.
            breaks = [i for i in range(first + 1, last) if units[i].opens_paragraph]
            if breaks and sum(u.tokens for u in units[first : breaks[-1]]) >= limit // 2:
                last = breaks[-1]
        # The estimate ignores how tokens merge across joins; measure and back off if needed.
        while True:
            start, end = units[first].start, units[last - 1].end
            tokens = count(text[start:end])
            if tokens <= limit or last == first + 1:
                break
            last -= 1
        chunks.append(Chunk(len(chunks), text[start:end], tokens, start, end))
        if last >= len(units):
            break
        # Overlap: whole trailing units worth at most `overlap` tokens, never the whole chunk
        # (the next chunk must move forward) and never so much that the next unit cannot join.
        back, carried, room = last, 0, limit - units[last].tokens - 2
        # The +1 counts the break between units, as the packing estimate does.
        while back - 1 > first and carried + units[back - 1].tokens + 1 <= min(overlap, room):
            back -= 1
            carried += units[back].tokens + 1
        first = back
    return chunks
