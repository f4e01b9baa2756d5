"""Detectors of personal data: a candidate regex, then a check that makes the finding precise.

Every detector also says how far back from the end of a growing text a match could still be
forming (`pending`), which is all the streaming redactor holds back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

# regex, not re: the same syntax, and it releases the GIL while it scans, so a 10 MB text
# checked in a policy thread leaves the event loop free (re held it ~0.2 s per pattern).
import regex as re

from . import checks


@dataclass(frozen=True, slots=True)
class Match:
    """A span of text a detector found; the text itself is never stored with it."""

    start: int
    end: int
    detector: str
    label: str
    priority: int


# Trailing run of non-space characters: an email, token or address still being typed.
WORD_TAIL = re.compile(r"\S+\Z")
# Trailing run that could still become a phone, card or SSN number (digits with separators).
NUMBER_TAIL = re.compile(r"[+(\d][\d \t().\-/]*\Z")


class Detector:
    """Finds one kind of data. Subclasses set the class attributes and `find`."""

    name: str = ""
    label: str = ""
    # Lower wins when two findings overlap (a validated card beats a phone-looking run).
    priority: int = 5
    # Longest text a match can span: the stream never holds back more than this for it.
    max_span: int = 128
    tails: tuple[re.Pattern[str], ...] = (WORD_TAIL,)

    def find(self, text: str) -> list[Match]:
        raise NotImplementedError

    def pending(self, text: str) -> int | None:
        """Earliest index where a match reaching the end of `text` could still be forming."""
        window = max(0, len(text) - self.max_span)
        best: int | None = None
        for tail in self.tails:
            m = tail.search(text, window)
            if m and (best is None or m.start() < best):
                best = m.start()
        return best

    def _match(self, start: int, end: int) -> Match:
        return Match(start, end, self.name, self.label, self.priority)


class RegexDetector(Detector):
    """A candidate pattern and an optional check of the candidate."""

    def __init__(self, name: str, label: str, pattern: str, *, priority: int, max_span: int,
                 check: Callable[[re.Match[str]], bool] | None = None,
                 tails: tuple[re.Pattern[str], ...] = (WORD_TAIL,), flags: int = 0) -> None:
        self.name, self.label, self.priority, self.max_span = name, label, priority, max_span
        self.regex = re.compile(pattern, flags)
        self.check = check
        self.tails = tails

    def find(self, text: str) -> list[Match]:
        check = self.check
        return [self._match(m.start(), m.end()) for m in self.regex.finditer(text)
                if check is None or check(m)]


# --- email ------------------------------------------------------------------------------------

# File names such as icon@2x.png look like addresses; these "top-level domains" are extensions.
_FILE_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "css", "txt", "pdf",
                    "py", "md", "json", "yaml", "yml", "html", "zip", "gz", "tar"}


def _email_ok(m: re.Match[str]) -> bool:
    local, domain = m.group(1), m.group(2)
    return (not local.startswith(".") and ".." not in local and not local.endswith(".")
            and domain.rsplit(".", 1)[1].lower() not in _FILE_EXTENSIONS and len(m.group()) <= 254)


def email() -> Detector:
    return RegexDetector(
        "email", "EMAIL",
        r"(?<![\w.%+\-/])([A-Za-z0-9._%+-]{1,64})@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
        r"[A-Za-z]{2,24})(?![\w-]|\.[A-Za-z0-9]|:\w)",
        priority=3, max_span=254, check=_email_ok)


# --- payment cards, IBAN, national identifiers ------------------------------------------------


def _card_ok(m: re.Match[str]) -> bool:
    raw = m.group()
    separators = {c for c in raw if not c.isdigit()}
    if len(separators) > 1:
        return False
    groups = re.split(r"[ -]", raw)
    # Cards are written in groups of 4 (or Amex 4-6-5); "1 2 3 4 ..." is a list of numbers.
    if len(groups) > 1 and any(not 3 <= len(g) <= 6 for g in groups[:-1]):
        return False
    digits = "".join(groups)
    return 13 <= len(digits) <= 19 and checks.card_issuer_ok(digits) and checks.luhn_ok(digits)


def payment_card() -> Detector:
    return RegexDetector(
        "payment_card", "PAYMENT_CARD", r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)",
        priority=2, max_span=32, check=_card_ok, tails=(WORD_TAIL, NUMBER_TAIL))


class IbanDetector(Detector):
    """IBAN in capitals, compact or in groups; its country fixes the length, mod-97 the rest."""

    name, label, priority, max_span = "iban", "IBAN", 2, 48
    _candidate = re.compile(r"(?<![\w])([A-Z]{2})(\d{2})(?:[ ]?[A-Z0-9]){8,30}")
    tails = (WORD_TAIL, re.compile(r"(?<![\w])[A-Z]{2}\d{2}[A-Z0-9 ]*\Z"))

    def find(self, text: str) -> list[Match]:
        found: list[Match] = []
        for m in self._candidate.finditer(text):
            length = checks.IBAN_LENGTHS.get(m.group(1))
            if length is None:
                continue
            # The regex may run into the next word; cut at the country's length.
            count, end = 0, m.start()
            while end < len(text) and count < length:
                if text[end].isalnum():
                    count += 1
                elif text[end] != " " or text[end - 1] == " ":
                    break
                end += 1
            if count != length or (end < len(text) and text[end].isalnum()):
                continue
            compact = text[m.start():end].replace(" ", "")
            if checks.iban_ok(compact):
                found.append(self._match(m.start(), end))
        return found


def _ssn_ok(m: re.Match[str]) -> bool:
    if not m.group("sep") and not m.group("ctx"):
        return False  # nine bare digits are an order number far more often than an SSN
    return checks.us_ssn_ok(m.group("area"), m.group("group"), m.group("serial"))


class UsSsnDetector(RegexDetector):
    """Reports only the number, not the "SSN:" context that made nine bare digits count."""

    def find(self, text: str) -> list[Match]:
        return [self._match(m.start("area"), m.end()) for m in self.regex.finditer(text)
                if self.check is None or self.check(m)]


def us_ssn() -> Detector:
    return UsSsnDetector(
        "us_ssn", "US_SSN",
        r"(?P<ctx>\b(?:SSN|social security(?: number| no\.?)?)[\s:#]{0,3})?"
        r"(?<![\w-])(?P<area>\d{3})(?P<sep>[- ]?)(?P<group>\d{2})(?P=sep)(?P<serial>\d{4})"
        r"(?![\w-]|[.,]\d)",
        priority=3, max_span=40, check=_ssn_ok, tails=(WORD_TAIL, NUMBER_TAIL), flags=re.I)


def uk_nino() -> Detector:
    return RegexDetector(
        "uk_nino", "UK_NINO",
        r"(?<![\w])([A-Z]{2}) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])(?!\w)",
        priority=3, max_span=16, check=lambda m: checks.uk_nino_ok(m.group(1)),
        tails=(WORD_TAIL, re.compile(r"(?<![\w])[A-Z]{2}[ \d]*\Z")))


# --- network addresses ------------------------------------------------------------------------

# "version 1.2.3.4", "v1.2.3.4" and "section 3.1.2.4" are numbers with dots, not addresses.
_NOT_ADDRESS_BEFORE = re.compile(
    r"(?:\b(?:version|ver|release|build|rev|revision|section|chapter|figure|table|step|"
    r"rule|clause|article|paragraph|par|art|oid)\.?|§|\bv)\s*:?\s*\Z", re.I)


def _ipv4_ok(m: re.Match[str]) -> bool:
    try:
        ipaddress.IPv4Address(m.group())
    except ValueError:
        return False
    before = m.string[max(0, m.start() - 16):m.start()]
    return not _NOT_ADDRESS_BEFORE.search(before)


def ipv4() -> Detector:
    return RegexDetector(
        "ipv4", "IP_ADDRESS",
        r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)",
        priority=3, max_span=15, check=_ipv4_ok)


def _ipv6_ok(m: re.Match[str]) -> bool:
    raw = m.group()
    # "::" and "::1" alone are too short to be anyone's address (and "::" is C++ scope).
    if sum(1 for g in re.split(r"[:.]", raw) if g) < 3:
        return False
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return False
    return True


def ipv6() -> Detector:
    return RegexDetector(
        "ipv6", "IP_ADDRESS",
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})"
        r"(?![\w:]|\.\w)",
        priority=3, max_span=45, check=_ipv6_ok)


def url_credentials() -> Detector:
    """Only the user:password part is reported, so the rest of the URL stays readable."""
    return UrlCredentials()


class UrlCredentials(Detector):
    name, label, priority, max_span = "url_credentials", "URL_CREDENTIALS", 1, 512
    _regex = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://([^\s:/?#@]+:[^\s/?#@]+)@[^\s/?#@]+")

    def find(self, text: str) -> list[Match]:
        return [self._match(m.start(1), m.end(1)) for m in self._regex.finditer(text)]


# --- phone numbers ----------------------------------------------------------------------------


class PhoneDetector(Detector):
    """libphonenumber's matcher at leniency VALID: real numbering plans, dates and
    timestamps rejected. Numbers without +country are tried in each configured region."""

    name, label, priority, max_span = "phone", "PHONE", 4, 40
    tails = (WORD_TAIL, NUMBER_TAIL)

    def __init__(self, regions: tuple[str, ...]) -> None:
        self.regions = regions

    def find(self, text: str) -> list[Match]:
        if sum(c.isdigit() for c in text[:4096]) < 6 and not re.search(r"\d{2}\D?\d{2}", text):
            return []  # the matcher costs ~0.1 ms per call even on text with no number
        spans: set[tuple[int, int]] = set()
        for region in self.regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region,
                                                     leniency=phonenumbers.Leniency.VALID):
                spans.add((m.start, m.end))
        return [self._match(s, e) for s, e in sorted(spans)]


def build(name: str, *, phone_regions: tuple[str, ...]) -> Detector | None:
    """The built-in personal-data detector of that name, or None if it is not one of these."""
    factories: dict[str, Callable[[], Detector]] = {
        "email": email, "payment_card": payment_card, "iban": IbanDetector,
        "us_ssn": us_ssn, "uk_nino": uk_nino, "ipv4": ipv4, "ipv6": ipv6,
        "url_credentials": url_credentials, "phone": lambda: PhoneDetector(phone_regions),
    }
    factory = factories.get(name)
    return factory() if factory else None

