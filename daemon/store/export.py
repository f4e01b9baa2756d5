"""A conversation as Markdown or JSON for `hush history export`; rendering only, no I/O."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Literal

from .records import Conversation

ExportFormat = Literal["markdown", "json"]
FORMATS: tuple[ExportFormat, ...] = ("markdown", "json")


def render(conversation: Conversation, fmt: ExportFormat) -> str:
    if fmt == "json":
        return json.dumps(asdict(conversation), ensure_ascii=False, indent=2) + "\n"
    if fmt == "markdown":
        return _markdown(conversation)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _markdown(conversation: Conversation) -> str:
    lines = [f"# {conversation.title or 'Untitled conversation'}", "",
             f"_{conversation.id}, started {_stamp(conversation.created)}_", ""]
    if conversation.system:
        lines += ["## System", "", conversation.system, ""]
    if conversation.summary:
        lines += ["## Summary", "", conversation.summary, ""]
    for message in conversation.messages:
        if message.error is not None:
            lines += [f"## Message {message.position}: unreadable", "", f"> {message.error}", ""]
            continue
        role = (message.role or "unknown").capitalize()
        lines += [f"## {role}", "", message.content, ""]
    shown = {message.position for message in conversation.messages if message.error}
    for failure in conversation.failures:
        if failure.kind != "message" or failure.position not in shown:
            lines += [f"> Integrity: {failure.message}", ""]
    return "\n".join(lines)
