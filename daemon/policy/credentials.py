"""Detectors of secrets: vendor token prefixes, JWTs, private key blocks, high-entropy strings."""

from __future__ import annotations

import base64
import binascii
import json

# regex, not re: the same syntax, and it releases the GIL while it scans, so a 10 MB text
# checked in a policy thread leaves the event loop free (re held it ~0.2 s per pattern).
import regex as re

from . import checks
from .detectors import WORD_TAIL, Detector, Match, RegexDetector

# Characters of base64, base64url and most vendor tokens; a boundary is anything else.
_TOKEN_CHARS = r"A-Za-z0-9_\-+/"
# "=" is base64 padding at the end of a token, but in KEY=value it separates two tokens.
_B = r"(?<![A-Za-z0-9_\-+/])"
_E = r"(?![A-Za-z0-9_\-+/=])"

_PREFIXED: dict[str, str] = {
    # AWS access key ids: the four-letter prefix names the key type.
    "aws_access_key": r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}"
                      r"(?![A-Za-z0-9])",
    "github_token": rf"{_B}(?:gh[pousr]_[A-Za-z0-9]{{36,251}}"
                    rf"|github_pat_[A-Za-z0-9_]{{22,240}}){_E}",
    "slack_token": r"(?<![\w-])xox[abposre]-(?:[A-Za-z0-9]+-){1,4}[A-Za-z0-9]{8,}(?![\w-])",
    "stripe_key": rf"{_B}(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{{16,247}}{_E}",
    "google_api_key": rf"{_B}AIza[0-9A-Za-z_\-]{{35}}{_E}",
    # OpenAI and similar: sk-, sk-proj-, sk-svcacct-, sk-ant-... followed by a long random part.
    "openai_key": rf"{_B}sk-(?:[a-z]{{2,8}}-)?[A-Za-z0-9_\-]{{20,200}}{_E}",
}


def prefixed(name: str) -> Detector:
    return RegexDetector(name, "SECRET", _PREFIXED[name], priority=1, max_span=256,
                         check=_has_digit_and_letter)


def _has_digit_and_letter(m: re.Match[str]) -> bool:
    # "sk-this-is-not-a-real-key-at-all" has the shape but not the randomness of a token.
    body = m.group()
    return any(c.isdigit() for c in body) and any(c.isalpha() for c in body)


def _jwt_ok(m: re.Match[str]) -> bool:
    header = m.group(1)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded)


def jwt() -> Detector:
    return RegexDetector(
        "jwt", "SECRET",
        r"(?<![\w.-])(eyJ[A-Za-z0-9_-]{5,})\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}(?![\w-])",
        priority=1, max_span=8192, check=_jwt_ok)


class PrivateKeyDetector(Detector):
    """PEM (and PGP) private key blocks; an unterminated block counts up to its last base64
    line, since a truncated paste still leaks the key."""

    name, label, priority, max_span = "private_key", "PRIVATE_KEY", 0, 16384
    _block = re.compile(
        r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
        r"(?:(?:(?!-----)[\s\S]){0,16000}?-----END \1-----"
        r"|(?:[ \t]*\r?\n(?:[A-Za-z0-9+/=]{8,}|[A-Za-z-]+: .*))+)")
    _end = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
    tails = (WORD_TAIL,)

    def find(self, text: str) -> list[Match]:
        if "-----BEGIN" not in text:
            return []
        return [self._match(m.start(), m.end()) for m in self._block.finditer(text)]

    def pending(self, text: str) -> int | None:
        window = max(0, len(text) - self.max_span)
        start = text.rfind("-----BEGIN", window)
        header = re.match(r"-----BEGIN ([A-Z0-9 ]*)-----", text[start:start + 80]) if (
            start >= 0) else None
        private = header is None or "PRIVATE" in header.group(1)
        if start >= 0 and private and not self._end.search(text, start):
            return start  # a block is open: hold all of it until its END line is complete
        # "-----BEG" may still become a header.
        m = re.search(r"-{1,5}[A-Z ]*\Z", text[-64:])
        tail = super().pending(text)
        if m:
            dash = len(text) - len(text[-64:]) + m.start()
            return dash if tail is None else min(dash, tail)
        return tail


class HighEntropyDetector(Detector):
    """Long runs of token characters mixing capitals, small letters and digits, with high
    Shannon entropy: API keys and passwords without a known prefix. Hex digests and UUIDs are
    left alone (they are identifiers far more often than secrets)."""

    name, label, priority, max_span = "high_entropy", "SECRET", 7, 512

    def __init__(self, min_length: int, min_bits: float) -> None:
        self.min_length, self.min_bits = min_length, min_bits
        self._candidate = re.compile(
            rf"{_B}[{_TOKEN_CHARS}]{{{min_length},{self.max_span}}}={{0,2}}{_E}")

    def find(self, text: str) -> list[Match]:
        found = []
        public = [(b.start(), b.end()) for b in _PUBLIC_BLOCK.finditer(text)] if (
            "-----BEGIN" in text) else []
        for m in self._candidate.finditer(text):
            token = m.group().rstrip("=")
            if len(token) < self.min_length or token.startswith("eyJ"):
                continue  # eyJ is base64 of '{"': encoded JSON (a JWT part), not a secret
            if any(s <= m.start() < e for s, e in public):
                continue  # certificates and public keys are meant to be shared
            # Random keys mix capitals, small letters and digits; words and hex digests do not.
            if not (any(c.isupper() for c in token) and any(c.islower() for c in token)
                    and any(c.isdigit() for c in token)):
                continue
            # CamelCase identifiers (HttpRequestHandler2) are mostly words; random keys are not:
            # in random base64 under 1 % of tokens have 60 % of their length in such runs.
            if sum(len(w) for w in _WORDISH.findall(token)) >= 0.6 * len(token):
                continue
            # Paths and dashed identifiers (my-long-name/x86_64) are words glued together.
            longest = max((len(p) for p in re.split(r"[/_\-+=]", token)), default=0)
            if longest < self.min_length * 0.6:
                continue
            if checks.shannon_bits(token) >= self.min_bits:
                found.append(self._match(m.start(), m.end()))
        return found


_WORDISH = re.compile(r"[A-Z]?[a-z]{3,}")
# Certificates and public keys, closed or (in a stream) still open.
_PUBLIC_BLOCK = re.compile(r"-----BEGIN (?![A-Z0-9 ]*PRIVATE)[A-Z0-9 ]+-----"
                           r"(?:(?!-----END)[\s\S])*(?:-----END [A-Z0-9 ]+-----)?")

SECRET_DETECTORS = (*_PREFIXED, "jwt", "private_key", "high_entropy")


def build(name: str, *, entropy_min_length: int, entropy_min_bits: float) -> Detector | None:
    """The built-in secret detector of that name, or None if it is not one of these."""
    if name in _PREFIXED:
        return prefixed(name)
    if name == "jwt":
        return jwt()
    if name == "private_key":
        return PrivateKeyDetector()
    if name == "high_entropy":
        return HighEntropyDetector(entropy_min_length, entropy_min_bits)
    return None
