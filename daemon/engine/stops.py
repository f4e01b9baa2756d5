"""Stop strings that may span several tokens, matched on the streamed text."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Holds back only the tail that could still become a stop string; releases the rest.

    `push` returns the text that is safe to show and whether a stop string completed (in which
    case the text before it is returned and nothing after it ever will be).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._pending_tail(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _pending_tail(self, buffer: str) -> int:
        # Longest suffix of the buffer that is a proper prefix of some stop string.
        for size in range(min(len(buffer), max(len(s) for s in self.stops) - 1), 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0
