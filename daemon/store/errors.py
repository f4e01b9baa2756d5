"""What the store raises on purpose; every message names the thing and says how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ErrorCode, HushError


class StoreError(HushError):
    """The store cannot do what was asked: a missing or wrong key, an unknown conversation."""

    code: ErrorCode = "store"


class StoreLocked(StoreError):
    """The key is a passphrase nobody has typed yet; `hush unlock` sends it."""

    code = "locked"


class NotFound(StoreError):
    """No conversation with that id belongs to the asking uid (another uid's looks the same)."""

    code = "not_found"


@dataclass(frozen=True)
class IntegrityFailure:
    """One record that failed authentication or is missing, named so a person can find it."""

    conversation_id: str
    kind: str
    """"key", "title", "system", "summary", "head" or "message"."""
    position: int
    reason: str

    @property
    def message(self) -> str:
        where = f"message {self.position}" if self.kind == "message" else self.kind
        return f"conversation {self.conversation_id}, {where}: {self.reason}"


class IntegrityError(StoreError):
    """A record was changed, moved or removed outside Hush; the rest of the store stays readable."""

    code = "integrity"

    def __init__(self, failure: IntegrityFailure) -> None:
        super().__init__(
            f"{failure.message}. The record was changed, moved or removed outside Hush; the rest "
            "of the conversation is still readable. Restore the state directory from a backup "
            "to recover it."
        )
        self.failure = failure
