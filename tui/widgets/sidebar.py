"""The conversation list: decrypted titles and dates, filtered by a search box."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    updated: float | None = None
    count: int = 0
    snippet: str = ""

    def label(self) -> Content:
        # Titles and snippets are the user's own text: plain Content, never parsed as markup.
        second = (f"{_when(self.updated)} · {self.count} msgs" if self.updated is not None
                  else self.snippet[:28])
        return Content.assemble(self.title[:28], "\n", (second, "dim"))


def _when(stamp: float) -> str:
    if time.time() - stamp < 86400:
        return time.strftime("%H:%M", time.localtime(stamp))
    return time.strftime("%d %b", time.localtime(stamp))


class Sidebar(Vertical):
    """Search box above the list. Posts `Sidebar.Chosen` when a conversation is opened and
    `Sidebar.SearchChanged` when the query changes (the app asks the daemon to search)."""

    class Chosen(Message):
        def __init__(self, conversation_id: str) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    class SearchChanged(Message):
        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search (Ctrl+F)", id="search")
        yield OptionList(id="conversations")

    def show(self, entries: list[Entry], *, selected: str | None = None) -> None:
        options = self.query_one("#conversations", OptionList)
        options.clear_options()
        options.add_options([
            Option(e.label(), id=e.id)
            for e in entries
        ])
        if selected is not None:
            for index, entry in enumerate(entries):
                if entry.id == selected:
                    options.highlighted = index

    @staticmethod
    def entries_from(conversations: list[dict[str, Any]]) -> list[Entry]:
        return [Entry(c["id"], c["title"] or "(untitled)" if not c.get("error")
                      else "(unreadable)", c["updated"], c["message_count"])
                for c in conversations]

    def highlighted_id(self) -> str | None:
        options = self.query_one("#conversations", OptionList)
        if options.highlighted is None:
            return None
        return options.get_option_at_index(options.highlighted).id

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Chosen(event.option.id))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))
