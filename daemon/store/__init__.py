"""The encrypted conversation store; the design is in store.py's docstring and docs/security.md."""

from __future__ import annotations

from .errors import (
    IntegrityError,
    IntegrityFailure,
    NotFound,
    StoreError,
    StoreLocked,
)
from .export import ExportFormat
from .keyring import open_store, rotate_keys
from .keys import Argon2Params, Kek, KeySource, load_kek
from .records import (
    Conversation,
    ConversationSummary,
    Message,
    Role,
    SearchHit,
)
from .store import DATABASE_NAME, Store

__all__ = [
    "DATABASE_NAME",
    "Argon2Params",
    "Conversation",
    "ConversationSummary",
    "ExportFormat",
    "IntegrityError",
    "IntegrityFailure",
    "Kek",
    "KeySource",
    "Message",
    "NotFound",
    "Role",
    "SearchHit",
    "Store",
    "StoreError",
    "StoreLocked",
    "load_kek",
    "open_store",
    "rotate_keys",
]
