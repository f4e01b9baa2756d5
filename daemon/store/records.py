"""What the store hands back: frozen, already decrypted, in memory only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import IntegrityFailure

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    position: int
    role: Role | None
    """None only when the record failed authentication (see `error`)."""
    content: str
    created: float
    error: str | None = None
    """Why this record could not be read; the other messages are unaffected."""


@dataclass(frozen=True)
class Conversation:
    id: str
    created: float
    updated: float
    title: str | None
    system: str | None
    summary: str | None
    messages: tuple[Message, ...]
    failures: tuple[IntegrityFailure, ...] = ()
    """Every record that failed authentication or is missing; empty when all is intact."""


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    created: float
    updated: float
    title: str | None
    message_count: int
    error: str | None = None
    """Set when the title or the data key failed authentication."""


@dataclass(frozen=True)
class SearchHit:
    conversation_id: str
    title: str | None
    position: int | None
    """The matching message's position; None when the title matched."""
    snippet: str
