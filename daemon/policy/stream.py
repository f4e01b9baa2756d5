"""Policy on a token stream: personal data split across tokens is still caught.

The redactor keeps the unreleased tail of the stream. On each fragment it asks the detectors how
far back a match could still be forming (usually just the last, unfinished word, or a number
with its separators), releases everything before that at once with actions applied, and keeps
the rest. A short slice of already released text stays as left context for the detectors
(word boundaries, "version 1.2.3.4"); findings that begin inside it were dealt with already.
"""

from __future__ import annotations

from .compiled import CompiledPolicy, Decision, Rendered
from .model import Direction
from .pseudonyms import Pseudonyms

CONTEXT_CHARS = 32


class StreamRedactor:
    """Feed fragments with `push`, then call `finish`; each returns text safe to show now."""

    def __init__(self, policy: CompiledPolicy, direction: Direction,
                 pseudonyms: Pseudonyms | None = None) -> None:
        self.policy = policy
        self.direction = direction
        self._pseudonyms = pseudonyms if pseudonyms is not None else Pseudonyms()
        self._context = ""
        self._held = ""
        self._done = Rendered()
        self._released: list[str] = []
        self._storage_off = direction == "storage" and policy.storage_mode == "none"

    @property
    def blocked(self) -> bool:
        return self._done.block_message is not None or self._storage_off

    @property
    def held(self) -> int:
        """Characters received but not yet released (for tests and metrics)."""
        return len(self._held)

    def push(self, fragment: str) -> str:
        """Take the next fragment; return the text that can be released now (maybe "")."""
        if self.blocked:
            return ""
        self._held += fragment
        return self._drain(final=False)

    def finish(self) -> str:
        """End of stream: release what was held, with actions applied."""
        if self.blocked:
            return ""
        return self._drain(final=True)

    def decision(self) -> Decision:
        """Everything released so far and the actions taken, like `CompiledPolicy.apply`."""
        if self._storage_off:
            return self.policy.apply("storage", "")
        out = Rendered(text="".join(self._released), block_message=self._done.block_message,
                       warnings=self._done.warnings, counts=self._done.counts)
        return self.policy.decision(self.direction, out)

    def _drain(self, *, final: bool) -> str:
        text = self._context + self._held
        base = len(self._context)
        cut = len(text)
        if not final:
            pending = self.policy.pending(text)
            if pending is not None:
                cut = max(pending, base)
            if cut == base:
                return ""  # all of it may still be part of a match: nothing to scan yet
        matches = [m for m in self.policy.detect(text) if m.start >= base]
        if not final:
            for m in matches:
                if m.end > cut:
                    # A match reaching into the held tail could still grow: hold all of it.
                    cut = min(cut, m.start)
            if cut == base:
                return ""
        before_block = self._done.block_message
        part = self.policy.render(self.direction, text, matches, base, cut, self._pseudonyms,
                                  into=self._done)
        self._context = text[max(0, cut - CONTEXT_CHARS):cut]
        self._held = text[cut:]
        if part.block_message is not None and before_block is None:
            self._held = ""
            return ""
        self._released.append(part.text)
        return part.text
