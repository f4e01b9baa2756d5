"""Stable placeholders per conversation: the model sees <EMAIL_1>, the local user sees the value.

The map is the only place the original values live. It belongs to one conversation; the store
may keep it (as JSON, inside its encryption) so a reopened conversation restores the same way,
or drop it, in which case old placeholders simply stay placeholders.
"""

from __future__ import annotations

import json
import re
import threading

from .custom import normalize_value

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")
# A placeholder cut by the stream: "<", "<EMA", "<EMAIL_1" - hold it until it closes.
_PARTIAL = re.compile(r"<(?:[A-Z][A-Z0-9_]*(?:_\d*)?)?\Z")


class Pseudonyms:
    """Placeholder map of one conversation. Policy work runs in worker threads, and two turns of
    one conversation may run at once, so new placeholders are numbered under a lock."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def placeholder(self, label: str, value: str) -> str:
        """The placeholder for this value; the same value (up to case and spacing) gets the
        same one for the whole conversation."""
        key = (label, normalize_value(value))
        with self._lock:
            found = self._by_key.get(key)
            if found is None:
                number = self._counters.get(label, 0) + 1
                self._counters[label] = number
                found = f"<{label}_{number}>"
                self._by_key[key] = found
                self._values[found] = value
        return found

    def restore(self, text: str) -> str:
        """Text with every known placeholder replaced by its original value, for display."""
        return PLACEHOLDER.sub(lambda m: self._values.get(m.group(), m.group()), text)

    def restorer(self) -> Restorer:
        """A streaming restore for the display side of a token stream."""
        return Restorer(self)

    def to_json(self) -> str:
        """Serialised map, for the store to keep encrypted with its conversation."""
        return json.dumps({"values": self._values, "counters": self._counters},
                          ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, data: str) -> Pseudonyms:
        loaded = json.loads(data)
        made = cls()
        made._counters = {str(k): int(v) for k, v in loaded["counters"].items()}
        for placeholder, value in loaded["values"].items():
            m = PLACEHOLDER.fullmatch(placeholder)
            if m is None:
                raise ValueError(f"not a placeholder: {placeholder!r}")
            made._values[placeholder] = str(value)
            made._by_key[(m.group(1), normalize_value(str(value)))] = placeholder
        return made


class Restorer:
    """Restores placeholders in a stream, holding back only a placeholder not yet closed."""

    def __init__(self, pseudonyms: Pseudonyms) -> None:
        self._pseudonyms = pseudonyms
        self._pending = ""

    def push(self, fragment: str) -> str:
        text = self._pending + fragment
        m = _PARTIAL.search(text, max(0, len(text) - 72))
        cut = m.start() if m else len(text)
        self._pending = text[cut:]
        return self._pseudonyms.restore(text[:cut])

    def finish(self) -> str:
        text, self._pending = self._pending, ""
        return self._pseudonyms.restore(text)
