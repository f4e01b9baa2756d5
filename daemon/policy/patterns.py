"""Regular expressions a policy author writes (custom detectors, allow-list patterns).

They run on the `regex` module with a time limit, not on Python's `re`: `re` backtracks without
bound and holds the GIL while it does, so one pattern such as `(a|aa)+$` froze every client for
seconds. RE2 (google-re2) was measured against it and not chosen: its `\\w`, `\\b` and `\\d` are
ASCII-only, so `\\w+` redacted "Jos" of "José" and let the rest through; it refuses lookarounds
and backreferences that existing policies use; and its Python binding was 2.5 times slower
than `re` on a 1 MB text, where `regex` was twice as fast (details in docs/policies.md).

So a pattern is bounded twice: `compile_pattern` refuses one that already backtracks
catastrophically on short repetitive probes (`hush policy check` says so, and a reload keeps
the previous policy), and every search runs under a time budget that grows with the text; past
it the request fails with a `policy` error naming the detector instead of hanging. `regex`
releases the GIL while it matches, so a search that does run long stalls only its own thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import regex

from ..errors import HushError

BASE_BUDGET_S = 0.5
"""Time one pattern may spend on one text, plus PER_MCHAR_BUDGET_S per million characters."""
PER_MCHAR_BUDGET_S = 0.5
PROBE_BUDGET_S = 0.05
"""Time a pattern may spend on one probe when it is compiled (probes are at most 4 KB)."""
_LONG_PROBE = 4096
_SHORT_PROBE = 64
_PROBE_CHARS = 16
_REPRESENTATIVES = "a1 -.\t"
_METACHARACTERS = frozenset("()[]{}|*+?^$\\")


class PatternTimeout(HushError):
    """A policy pattern ran past its time budget; the request fails closed."""

    code = "policy"

    def __init__(self, detector: str) -> None:
        super().__init__(
            f"the policy's detector {detector} took too long on this text (its pattern "
            "backtracks); the request was refused rather than passed unchecked. Rewrite the "
            "pattern without nested repetition and check it with `hush policy check FILE`")
        self.detector = detector


def budget(text: str) -> float:
    """Seconds one pattern may spend on `text`."""
    return BASE_BUDGET_S + PER_MCHAR_BUDGET_S * len(text) / 1_000_000


def compile_pattern(pattern: str, *, ignore_case: bool = False) -> regex.Pattern[str]:
    """Compile a policy author's pattern; ValueError (naming no file content) if unusable."""
    try:
        # VERSION0: the same syntax and Unicode semantics as Python's re.
        compiled = regex.compile(pattern, regex.V0 | (regex.IGNORECASE if ignore_case else 0))
    except regex.error as exc:
        pos = getattr(exc, "pos", None)  # set by regex, missing from its stubs
        where = f" at position {pos}" if pos is not None else ""
        raise ValueError(f"expected a valid regular expression (an error{where})") from None
    for probe in _probes(pattern):
        try:
            compiled.search(probe, timeout=PROBE_BUDGET_S)
        except TimeoutError:
            raise ValueError(
                f"the pattern took over {PROBE_BUDGET_S * 1000:g} ms on a {len(probe)}-character "
                "repetitive text (catastrophic backtracking, as in (a+)+ or (a|aa)+); rewrite "
                "it without nested or overlapping repetition") from None
    return compiled


def _probes(pattern: str) -> Iterator[str]:
    """Repetitions of the characters a pattern can match, each after at most one other
    character and ended by one it likely cannot: the inputs on which nested or overlapping
    quantifiers backtrack. Long ones for polynomial blow-up, short ones with every prefix."""
    literal = [c for c in pattern if c.isprintable() and c not in _METACHARACTERS]
    chars = list(dict.fromkeys([*literal, *_REPRESENTATIVES]))[:_PROBE_CHARS]
    units = [*chars, "".join(chars)]
    for unit in units:
        body = (unit * (_LONG_PROBE // len(unit) + 1))[:_LONG_PROBE]
        yield body + "\x00"
        yield body
    for prefix in ("", *chars):
        for unit in units:
            body = (unit * (_SHORT_PROBE // len(unit) + 1))[:_SHORT_PROBE]
            yield prefix + body + "\x00"


def finditer(compiled: regex.Pattern[str], text: str, detector: str
             ) -> Iterator[regex.Match[str]]:
    """Every match in `text`, within the time budget; PatternTimeout past it."""
    try:
        yield from compiled.finditer(text, timeout=budget(text))
    except TimeoutError:
        raise PatternTimeout(detector) from None


def fullmatch(compiled: regex.Pattern[str], text: str, detector: str) -> bool:
    """Whether the whole of `text` matches, within the time budget."""
    try:
        return compiled.fullmatch(text, timeout=budget(text)) is not None
    except TimeoutError:
        raise PatternTimeout(detector) from None
