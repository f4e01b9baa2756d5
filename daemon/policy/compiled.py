"""A policy ready to run: detectors built, actions resolved per direction, immutable.

Requests take a reference to one CompiledPolicy when they start and keep it to the end; reload
builds a new one and swaps the reference, so no request ever sees half of a change.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import regex

from ..errors import HushError
from . import credentials, custom, detectors, patterns
from .detectors import Detector, Match
from .model import (
    DIRECTIONS,
    ActionSpec,
    AllowEntry,
    BlockAction,
    Direction,
    Limits,
    MaskAction,
    Policy,
    PseudonymizeAction,
    RedactAction,
    Retention,
    WarnAction,
    action_spec,
)
from .pseudonyms import Pseudonyms

# When rules disagree about a detector, the strictest action wins: adding a file can tighten a
# policy without editing the files before it.
STRICTNESS = {"allow": 0, "warn": 1, "mask": 2, "pseudonymize": 3, "redact": 4, "block": 5}
_STORAGE_OFF = "This policy stores nothing (storage mode none)."


class UnknownDetector(ValueError):
    """A rule names a detector that is neither built in nor defined; `where` locates it."""

    def __init__(self, rule_index: int, detector_index: int, name: str) -> None:
        super().__init__(f"unknown detector {name!r}")
        self.where = ("rules", rule_index, "detectors", detector_index)
        self.name = name


@dataclass(frozen=True)
class Finding:
    """What a rule did: counts only, never the matched text (safe for the audit trail)."""

    rule: str
    detector: str
    direction: Direction
    action: str
    count: int


@dataclass(frozen=True)
class Decision:
    """Outcome of applying a policy to one text in one direction."""

    text: str
    """The text as the direction passes it on ("" when blocked)."""
    blocked: bool
    block_message: str | None
    warnings: tuple[str, ...]
    findings: tuple[Finding, ...]
    policy_version: str


@dataclass(frozen=True)
class _Governing:
    rule: str
    spec: ActionSpec


@dataclass(frozen=True)
class _Allow:
    value: str | None
    pattern: regex.Pattern[str] | None
    detectors: frozenset[str]

    @classmethod
    def of(cls, entry: AllowEntry) -> _Allow:
        return cls(custom.normalize_value(entry.value) if entry.value is not None else None,
                   patterns.compile_pattern(entry.pattern) if entry.pattern is not None
                   else None,
                   frozenset(entry.detectors))

    def covers(self, match: Match, found: str) -> bool:
        if self.detectors and match.detector not in self.detectors:
            return False
        if self.value is not None:
            return custom.normalize_value(found) == self.value
        return self.pattern is not None and patterns.fullmatch(self.pattern, found, "allow-list")


@dataclass
class Rendered:
    """Text of one span after actions, and what was done (internal to engine and stream)."""

    text: str = ""
    block_message: str | None = None
    warnings: list[str] = field(default_factory=list)
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)


class CompiledPolicy:
    """An immutable, runnable policy. Build with `compile_policy` or the loader."""

    def __init__(self, policy: Policy, *, version: str, sources: tuple[str, ...] = ()) -> None:
        self.policy = policy
        self.version = version
        self.sources = sources
        self.name = policy.name
        custom_specs = {d.name: d for d in policy.detectors}
        det = policy.detection
        built: dict[str, Detector] = {}
        actions: dict[str, dict[str, _Governing]] = {d: {} for d in DIRECTIONS}
        for r_index, rule in enumerate(policy.rules):
            if not rule.enabled:
                continue
            for d_index, name in enumerate(rule.detectors):
                if name not in built:
                    made = (detectors.build(name, phone_regions=det.phone_regions)
                            or credentials.build(name, entropy_min_length=det.entropy_min_length,
                                                 entropy_min_bits=det.entropy_min_bits)
                            or (custom.build(custom_specs[name]) if name in custom_specs
                                else None))
                    if made is None:
                        raise UnknownDetector(r_index, d_index, name)
                    built[name] = made
                for direction in DIRECTIONS:
                    chosen = getattr(rule, direction)
                    spec = action_spec(chosen if chosen is not None else rule.default)
                    current = actions[direction].get(name)
                    if current is None or STRICTNESS[spec.action] > STRICTNESS[
                            current.spec.action]:
                        actions[direction][name] = _Governing(rule.name, spec)
        if policy.storage.mode == "redacted":
            # Whatever a rule's detector finds is redacted before it is stored, even where the
            # storage action alone would let it through.
            for name, gov in actions["storage"].items():
                if STRICTNESS[gov.spec.action] < STRICTNESS["redact"]:
                    actions["storage"][name] = _Governing(gov.rule, RedactAction(action="redact"))
        self.detectors: tuple[Detector, ...] = tuple(built.values())
        self._actions = actions
        self._allow = tuple(_Allow.of(e) for e in policy.allow)
        plain: dict[regex.Pattern[str], int] = {}
        self._own_pending: list[Detector] = []
        for d in self.detectors:
            if type(d).pending is Detector.pending:
                for tail in d.tails:
                    plain[tail] = max(plain.get(tail, 0), d.max_span)
            else:
                self._own_pending.append(d)
        self._tails = tuple(plain.items())

    # --- what the rest of the daemon reads ---------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self.policy.limits

    @property
    def retention(self) -> Retention:
        return self.policy.retention

    @property
    def storage_mode(self) -> str:
        return self.policy.storage.mode

    @property
    def network_deny(self) -> bool:
        return self.policy.network == "deny"

    def check_input(self, text: str) -> str | None:
        """Why a chat message is refused by the limits, or None."""
        if len(text) > self.limits.max_input_chars:
            return (f"The message has {len(text)} characters; this policy accepts at most "
                    f"{self.limits.max_input_chars}.")
        return None

    def check_document(self, size: int, media_type: str) -> HushError | None:
        """The error to answer when the limits refuse a document, or None."""
        if size > self.limits.max_document_bytes:
            return HushError(f"The document has {size} bytes; this policy accepts at most "
                             f"{self.limits.max_document_bytes}.", code="too_large")
        if media_type not in self.limits.document_types:
            return HushError(f"Documents of type {media_type} are not accepted by this policy; "
                             f"accepted: {', '.join(self.limits.document_types)}.",
                             code="unsupported")
        return None

    # --- detection ---------------------------------------------------------------------------

    def detect(self, text: str) -> list[Match]:
        """Non-overlapping findings of every detector a rule uses, allow-list applied."""
        candidates: list[Match] = []
        for d in self.detectors:
            candidates.extend(d.find(text))
        return [m for m in _resolve(candidates)
                if not any(a.covers(m, text[m.start:m.end]) for a in self._allow)]

    def pending(self, text: str) -> int | None:
        """Earliest index where a match still forming at the end of `text` could start."""
        best: int | None = None
        for tail, span in self._tails:
            m = tail.search(text, max(0, len(text) - span))
            if m and (best is None or m.start() < best):
                best = m.start()
        for d in self._own_pending:
            p = d.pending(text)
            if p is not None and (best is None or p < best):
                best = p
        return best

    # --- actions -----------------------------------------------------------------------------

    def apply(self, direction: Direction, text: str, *,
              pseudonyms: Pseudonyms | None = None) -> Decision:
        """The text as `direction` passes it on, and what was done to it."""
        if direction == "storage" and self.storage_mode == "none":
            return Decision("", True, _STORAGE_OFF, (), (), self.version)
        out = self.render(direction, text, self.detect(text), 0, len(text),
                          pseudonyms if pseudonyms is not None else Pseudonyms())
        return self.decision(direction, out)

    def decision(self, direction: Direction, out: Rendered) -> Decision:
        findings = tuple(Finding(rule, det, direction, action, n)
                         for (rule, det, action), n in sorted(out.counts.items()))
        blocked = out.block_message is not None
        return Decision("" if blocked else out.text, blocked, out.block_message,
                        tuple(dict.fromkeys(out.warnings)), findings, self.version)

    def render(self, direction: Direction, text: str, matches: Iterable[Match], start: int,
               end: int, pseudonyms: Pseudonyms, into: Rendered | None = None) -> Rendered:
        """Apply actions to the matches lying in text[start:end]; return that span rendered."""
        out = into if into is not None else Rendered()
        table = self._actions[direction]
        pieces: list[str] = []
        pos = start
        for m in matches:
            if m.start < start or m.end > end:
                continue
            gov = table.get(m.detector)
            if gov is None:
                continue
            spec, found = gov.spec, text[m.start:m.end]
            out.counts[(gov.rule, m.detector, spec.action)] += 1
            fields = {"label": m.label, "detector": m.detector, "rule": gov.rule}
            if isinstance(spec, RedactAction):
                replacement = spec.replacement.format(**fields)
            elif isinstance(spec, MaskAction):
                replacement = _mask(found, spec.keep_last, spec.char)
            elif isinstance(spec, PseudonymizeAction):
                replacement = pseudonyms.placeholder(m.label, found)
            elif isinstance(spec, BlockAction):
                if out.block_message is None:
                    out.block_message = spec.message.format(**fields)
                continue
            else:
                if isinstance(spec, WarnAction):
                    out.warnings.append(spec.message.format(**fields))
                continue
            pieces.append(text[pos:m.start])
            pieces.append(replacement)
            pos = m.end
        pieces.append(text[pos:end])
        out.text = "".join(pieces)
        return out


def _mask(found: str, keep_last: int, char: str) -> str:
    visible = 0
    chars = list(found)
    for i in range(len(chars) - 1, -1, -1):
        if chars[i].isalnum():
            if visible < keep_last:
                visible += 1
            else:
                chars[i] = char
    return "".join(chars)


def _resolve(candidates: list[Match]) -> list[Match]:
    """Keep the best of overlapping findings: lower priority value, then longer, then earlier."""
    if len(candidates) <= 1:
        return candidates
    candidates.sort(key=lambda m: (m.priority, m.start - m.end, m.start))
    starts: list[int] = []
    kept: list[Match] = []
    for m in candidates:
        i = bisect.bisect_left(starts, m.start)
        if i > 0 and kept[i - 1].end > m.start:
            continue
        if i < len(kept) and kept[i].start < m.end:
            continue
        starts.insert(i, m.start)
        kept.insert(i, m)
    return kept


def compile_policy(policy: Policy, *, version: str = "unversioned",
                   sources: tuple[str, ...] = ()) -> CompiledPolicy:
    """Build the runnable form; raises UnknownDetector for a rule naming no detector."""
    return CompiledPolicy(policy, version=version, sources=sources)
