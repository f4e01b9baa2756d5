"""The status bar: model, speed, context, policy, redactions and connection state."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static


class StatusBar(Static):
    """One line that re-renders only when one of its fields changes."""

    connection: reactive[str] = reactive("connecting")
    model: reactive[str] = reactive("?")
    tokens_per_s: reactive[float] = reactive(0.0)
    context_used: reactive[int] = reactive(0)
    context_limit: reactive[int] = reactive(0)
    policy: reactive[str] = reactive("")
    redactions: reactive[int] = reactive(0)

    def render(self) -> str:
        parts = [f"● {self.connection}" if self.connection == "connected"
                 else f"○ {self.connection}", f"model {self.model}"]
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.context_limit:
            parts.append(f"context {self.context_used}/{self.context_limit}")
        if self.policy:
            parts.append(f"policy {self.policy}")
        if self.redactions:
            parts.append(f"{self.redactions} redacted")
        return "  ·  ".join(parts)
