"""The policy file format, validated at the boundary into frozen models (docs/policies.md).

One set of models serves both a single file and the merged policy: each file is validated on its
own (so errors name that file), then the fields each file actually set are merged in directory
order (loader.py) and validated once more into the policy that runs.
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .patterns import compile_pattern

Direction = Literal["input", "output", "storage", "documents", "export"]
DIRECTIONS: tuple[Direction, ...] = ("input", "output", "storage", "documents", "export")

BuiltinDetector = Literal[
    "email", "phone", "payment_card", "iban", "ipv4", "ipv6", "us_ssn", "uk_nino",
    "aws_access_key", "github_token", "slack_token", "stripe_key", "google_api_key",
    "openai_key", "jwt", "private_key", "high_entropy", "url_credentials",
]
BUILTIN_DETECTORS: tuple[str, ...] = BuiltinDetector.__args__  # type: ignore[attr-defined]

# Names of detectors and rules appear in audit logs and replacement labels: keep them plain.
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_TEMPLATE_FIELDS = frozenset({"label", "detector", "rule"})


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _check_template(value: str) -> str:
    # A typo such as "{lable}" would otherwise fail only when the first match is replaced.
    for _, name, _, _ in string.Formatter().parse(value):
        if name is not None and name not in _TEMPLATE_FIELDS:
            # The placeholder is not quoted back: errors never echo a policy file.
            raise ValueError("unknown placeholder; use {label}, {detector} or {rule}")
    return value


def _check_pattern(value: str | None) -> str | None:
    if value is not None:
        compile_pattern(value)  # syntax, and no catastrophic backtracking (patterns.py)
    return value


class AllowAction(_Frozen):
    """Pass the text on unchanged."""

    action: Literal["allow"]
    """Selects this action."""


class RedactAction(_Frozen):
    """Replace the matched text with a fixed replacement."""

    action: Literal["redact"]
    """Selects this action."""
    replacement: str = "[{label}]"
    """Template of the replacement; may use {label}, {detector} and {rule}."""

    _check = field_validator("replacement")(_check_template)


class MaskAction(_Frozen):
    """Hide all but the last few letters and digits; separators stay so the shape is readable."""

    action: Literal["mask"]
    """Selects this action."""
    keep_last: int = Field(default=4, ge=0, le=16)
    """How many trailing letters or digits stay visible."""
    char: str = Field(default="*", min_length=1, max_length=1)
    """The character shown in place of each hidden letter or digit."""


class PseudonymizeAction(_Frozen):
    """Replace with a placeholder such as <EMAIL_1>, stable within a conversation.

    The model sees the placeholder; the local user's display restores the original.
    """

    action: Literal["pseudonymize"]
    """Selects this action."""


class BlockAction(_Frozen):
    """Refuse the whole text; the user sees the message instead."""

    action: Literal["block"]
    """Selects this action."""
    message: str = "Blocked by policy rule '{rule}': the text contains {label}."
    """What the user sees; may use {label}, {detector} and {rule}, never the matched text."""

    _check = field_validator("message")(_check_template)


class WarnAction(_Frozen):
    """Pass the text on unchanged, and tell the user."""

    action: Literal["warn"]
    """Selects this action."""
    message: str = "The text contains {label} (policy rule '{rule}')."
    """The warning; may use {label}, {detector} and {rule}."""

    _check = field_validator("message")(_check_template)


ActionName = Literal["allow", "redact", "mask", "pseudonymize", "block", "warn"]
ActionSpec = Annotated[
    AllowAction | RedactAction | MaskAction | PseudonymizeAction | BlockAction | WarnAction,
    Field(discriminator="action"),
]
Action = ActionName | ActionSpec
"""An action: its bare name takes its defaults, a mapping with `action:` sets options."""


class Rule(_Frozen):
    """What to do, per direction, with what some detectors find."""

    name: str = Field(pattern=_NAME)
    """Names the rule in audit records and messages; a later file's rule of the same name
    replaces this one."""
    description: str = ""
    """Why the rule exists."""
    enabled: bool = True
    """A later file can switch off a rule an earlier one defined."""
    detectors: tuple[str, ...] = Field(min_length=1)
    """Built-in detectors or custom detectors (by name) this rule governs."""
    default: Action = "allow"
    """Action for every direction not named below."""
    input: Action | None = None
    """What the user sends to the model."""
    output: Action | None = None
    """What the model sends back, applied on the token stream."""
    storage: Action | None = None
    """What is written to the conversation store."""
    documents: Action | None = None
    """Text of documents given to summarize."""
    export: Action | None = None
    """What leaves through `hush history export`."""


class CustomDetector(_Frozen):
    """A named detector: a regular expression, or a list of words and phrases."""

    name: str = Field(pattern=_NAME)
    """How rules refer to it; must not be a built-in detector's name."""
    label: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{0,63}$")
    """Label in replacements and placeholders; defaults to the name in capitals."""
    pattern: str | None = None
    """A Python regular expression; the whole match is what the rule acts on."""
    ignore_case: bool = False
    """Match the pattern without regard to case (words always ignore case)."""
    words: tuple[str, ...] | None = None
    """Words or phrases matched whole, after Unicode (NFKC) and case normalisation."""

    @field_validator("pattern")
    @classmethod
    def _usable_pattern(cls, value: str | None) -> str | None:
        if value is not None and compile_pattern(value).match(""):
            raise ValueError("the pattern matches the empty string; it would match everywhere")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> CustomDetector:
        if (self.pattern is None) == (self.words is None):
            raise ValueError("give exactly one of `pattern` or `words`")
        if self.name in BUILTIN_DETECTORS:
            raise ValueError(f"{self.name!r} is a built-in detector; choose another name")
        if self.words is not None and not [w for w in self.words if w.strip()]:
            raise ValueError("`words` needs at least one non-empty word or phrase")
        return self


class AllowEntry(_Frozen):
    """Text never acted on, even when a detector finds it."""

    value: str | None = None
    """An exact value, compared after Unicode and case normalisation."""
    pattern: str | None = None
    """A regular expression the whole found text must match."""
    detectors: tuple[str, ...] = ()
    """Only for these detectors; empty means every detector."""

    @model_validator(mode="after")
    def _one_kind(self) -> AllowEntry:
        if (self.value is None) == (self.pattern is None):
            raise ValueError("give exactly one of `value` or `pattern`")
        return self

    _check = field_validator("pattern")(_check_pattern)


class Detection(_Frozen):
    """Settings of the built-in detectors."""

    phone_regions: tuple[str, ...] = Field(default=("US",), min_length=1, max_length=8)
    """Regions (ISO 3166 codes) tried for numbers written without +country code."""
    entropy_min_length: int = Field(default=20, ge=12, le=256)
    """Shortest run of token characters the high-entropy detector considers."""
    entropy_min_bits: float = Field(default=3.6, ge=2.0, le=6.0)
    """Shannon entropy per character above which such a run counts as a secret."""

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import phonenumbers  # deferred: its metadata takes a moment to import

        supported = phonenumbers.SUPPORTED_REGIONS
        bad = [r for r in value if r not in supported]
        if bad:
            raise ValueError(f"unknown region (entry {value.index(bad[0]) + 1}); expected ISO "
                             "3166 codes such as US, GB")
        return value


class Limits(_Frozen):
    """Bounds on what one request may carry."""

    max_input_chars: int = Field(default=32_000, ge=1)
    """Longest chat message accepted, in characters."""
    max_document_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """Largest document accepted for summarizing, in bytes."""
    document_types: tuple[str, ...] = (
        "text/plain", "text/markdown", "text/html", "application/pdf",
    )
    """Media types of documents accepted for summarizing."""


class Retention(_Frozen):
    """How long conversations are kept."""

    max_age_days: int | None = Field(default=None, ge=1)
    """Conversations older than this are deleted; null keeps them."""
    max_conversations: int | None = Field(default=None, ge=1)
    """Only this many most recent conversations per user are kept; null keeps all."""


class Storage(_Frozen):
    """What the conversation store keeps."""

    mode: Literal["full", "redacted", "none"] = "full"
    """full: text after `storage` rules; redacted: also redact whatever any rule's detector
    finds even where the storage action would allow it; none: store nothing."""


class Policy(_Frozen):
    """A policy file, or the merge of a policy directory."""

    name: str = "unnamed"
    """Shown by `hush status` and `hush policy show`."""
    description: str = ""
    """What the policy is for."""
    detection: Detection = Detection()
    """Settings of the built-in detectors."""
    detectors: tuple[CustomDetector, ...] = ()
    """Custom detectors: named regular expressions and word lists."""
    allow: tuple[AllowEntry, ...] = ()
    """Allow-list: text no rule acts on."""
    rules: tuple[Rule, ...] = ()
    """Rules; a detector several rules name gets the strictest of their actions."""
    limits: Limits = Limits()
    """Bounds on requests."""
    retention: Retention = Retention()
    """How long conversations are kept."""
    storage: Storage = Storage()
    """What the conversation store keeps."""
    network: Literal["deny", "allow"] = "deny"
    """deny: the daemon refuses every socket that is not a Unix socket (in-process guard)."""

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        for kind, names in (("rule", [r.name for r in self.rules]),
                            ("detector", [d.name for d in self.detectors])):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"two {kind}s have the same name (the {kind} at position "
                                     f"{names.index(name) + 1} and a later one); names must "
                                     "be unique")
                seen.add(name)
        return self


_BY_NAME: dict[str, type[BaseModel]] = {
    "allow": AllowAction, "redact": RedactAction, "mask": MaskAction,
    "pseudonymize": PseudonymizeAction, "block": BlockAction, "warn": WarnAction,
}


def action_spec(action: Action) -> ActionSpec:
    """The full form of an action given by name or as a mapping."""
    if not isinstance(action, str):
        return action
    made: ActionSpec = _BY_NAME[action].model_validate({"action": action})  # type: ignore[assignment]
    return made
