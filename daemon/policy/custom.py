"""Detectors a policy defines: named regular expressions and word or phrase lists."""

from __future__ import annotations

import unicodedata

# regex, not re: the same syntax, and it releases the GIL while it scans, so a 10 MB text
# checked in a policy thread leaves the event loop free (re held it ~0.2 s per pattern).
import regex as re

from . import patterns
from .detectors import WORD_TAIL, Detector, Match
from .model import CustomDetector


def normalize(text: str) -> tuple[str, list[int] | None]:
    """NFKC + casefold, and for each normalised character the index of its source character.

    The map is None when nothing moved (ASCII text: the common, fast case). Normalising per
    base character plus its combining marks keeps "é" written either way comparable.
    """
    if text.isascii():
        return text.lower(), None
    out: list[str] = []
    index: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and unicodedata.combining(text[j]):
            j += 1
        piece = unicodedata.normalize("NFKC", text[i:j]).casefold()
        out.append(piece)
        index.extend([i] * len(piece))
        i = j
    index.append(n)
    return "".join(out), index


def normalize_value(text: str) -> str:
    """The comparison form of a value (allow-list entries, pseudonym keys)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class WordListDetector(Detector):
    """Whole words and phrases; spaces inside a phrase match any run of whitespace."""

    priority = 6

    def __init__(self, spec: CustomDetector) -> None:
        assert spec.words is not None
        self.name = spec.name
        self.label = spec.label or spec.name.upper()
        phrases = sorted({normalize_value(w) for w in spec.words if w.strip()}, key=len,
                         reverse=True)
        body = "|".join(r"\s+".join(re.escape(p) for p in phrase.split()) for phrase in phrases)
        self.regex = re.compile(rf"(?<!\w)(?:{body})(?!\w)")
        self.max_span = max(len(p) for p in phrases) * 2
        # Every proper word-prefix of a phrase ("hepatitis" of "hepatitis c"): while the text
        # ends in one, the next words could complete the phrase.
        self._prefixes = {" ".join(p.split()[:k]) for p in phrases
                          for k in range(1, len(p.split()))}
        self._max_words = max(len(p.split()) for p in phrases)

    def find(self, text: str) -> list[Match]:
        norm, index = normalize(text)
        found = []
        for m in self.regex.finditer(norm):
            start, end = (m.start(), m.end()) if index is None else (index[m.start()],
                                                                     _end(index, m.end()))
            found.append(self._match(start, end))
        return found

    def pending(self, text: str) -> int | None:
        tail = WORD_TAIL.search(text, max(0, len(text) - self.max_span))
        best = tail.start() if tail else None
        if self._prefixes:
            # The last few whole words (followed by whitespace) may start a phrase.
            window = text[-self.max_span:]
            offset = len(text) - len(window)
            words = list(re.finditer(r"\S+", window))
            for k in range(1, min(self._max_words, len(words) + 1)):
                first = words[-k]
                candidate = normalize_value(window[first.start():])
                if candidate in self._prefixes:
                    pos = offset + first.start()
                    best = pos if best is None else min(best, pos)
        return best


def _end(index: list[int], norm_end: int) -> int:
    # The source index after the last matched normalised character.
    source = index[norm_end - 1]
    nxt = norm_end
    while nxt < len(index) - 1 and index[nxt] == source:
        nxt += 1
    return index[nxt] if nxt < len(index) else index[-1]


# Patterns that can match whitespace may span words: hold back to the line start (bounded).
_SPANS_SPACE = re.compile(r"\\s|\\W|\\D|\.|\[\^| ")


class PatternDetector(Detector):
    """A named regular expression from the policy, run under a time budget (patterns.py)."""

    priority = 2

    def __init__(self, spec: CustomDetector) -> None:
        assert spec.pattern is not None
        self.name = spec.name
        self.label = spec.label or spec.name.upper()
        self.regex = patterns.compile_pattern(spec.pattern, ignore_case=spec.ignore_case)
        self.max_span = 256
        self._multiword = bool(_SPANS_SPACE.search(spec.pattern))

    def find(self, text: str) -> list[Match]:
        return [self._match(m.start(), m.end())
                for m in patterns.finditer(self.regex, text, self.name) if m.end() > m.start()]

    def pending(self, text: str) -> int | None:
        if self._multiword:
            line = text.rfind("\n", max(0, len(text) - 64)) + 1
            return max(line, len(text) - 64)
        return super().pending(text)


def build(spec: CustomDetector) -> Detector:
    return WordListDetector(spec) if spec.words is not None else PatternDetector(spec)
