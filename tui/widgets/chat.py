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


WELCOME = (
    "Ask anything. The model runs on this machine, the conversation is stored encrypted, and "
    "your data policy decides what the model may see and what is kept.\n\n"
    "Enter sends · Esc stops an answer · Ctrl+N new conversation · F1 all keys"
)


class ChatView(VerticalScroll):
    """Scrolls with the answer while it streams, unless the user scrolled away."""

    def on_mount(self) -> None:
        self.mount(Static(WELCOME, id="welcome", markup=False))

    async def add_message(self, role: str, text: str = "") -> MessageView:
        for welcome in self.query("#welcome"):
            await welcome.remove()
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
        await self.mount(Static(WELCOME, id="welcome", markup=False))
