"""The chat view: one Markdown widget per message, streamed through Textual's buffer."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static


class MessageView(Markdown):
    """A message; `role` is user, assistant or system."""

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(text, classes=role)
        self.role = role
        self.can_focus = True

    @property
    def text(self) -> str:
        return self.source


class Notice(Static):
    """An inline note from the daemon (a policy decision, a dropped turn) under a message."""


class ChatView(VerticalScroll):
    """Scrolls with the answer while it streams, unless the user scrolled away."""

    async def add_message(self, role: str, text: str = "") -> MessageView:
        view = MessageView(role, text)
        await self.mount(view)
        self.anchor()
        return view

    async def add_notice(self, text: str, *, severity: str = "information") -> None:
        await self.mount(Notice(text, classes=severity, markup=False))
        self.anchor()

    def messages(self) -> list[MessageView]:
        return list(self.query(MessageView))

    async def clear(self) -> None:
        await self.remove_children()
