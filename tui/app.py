"""The Hush terminal UI: ask, watch the answer stream in, Esc to stop."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Input, Markdown, Static

from hush.daemon.client import Client
from hush.daemon.errors import HushError


class Turn(Markdown):
    """One message in the chat view."""


class HushApp(App[None]):
    TITLE = "Hush"
    SUB_TITLE = "private assistant"
    CSS_PATH = "app.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop answer"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(self, socket: Path) -> None:
        super().__init__()
        self.socket = socket
        self.client: Client | None = None
        self.request_id: str | None = None
        self.model_name = "?"

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="chat")
        yield Static("connecting…", id="status")
        yield Input(placeholder="Ask anything. Enter sends, Esc stops.", id="prompt")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()
        await self.ensure_client()

    async def on_unmount(self) -> None:
        if self.client is not None:
            await self.client.close()

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    async def ensure_client(self) -> Client | None:
        if self.client is not None:
            return self.client
        try:
            self.client = await Client.connect(self.socket)
        except HushError as exc:
            self.set_status("disconnected")
            self.notify(exc.message, title="Cannot reach hushd", severity="error", timeout=8)
            return None
        self.model_name = self.client.hello["model"] if self.client.hello else "?"
        self.set_status(f"model {self.model_name} · connected")
        return self.client

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        prompt = event.value.strip()
        if not prompt or self.request_id is not None:
            return
        event.input.clear()
        self.stream_answer(prompt)

    @work(exclusive=True, group="answer")
    async def stream_answer(self, prompt: str) -> None:
        chat = self.query_one("#chat", VerticalScroll)
        client = await self.ensure_client()
        if client is None:
            self.restore_prompt_on_failure(prompt)
            return
        await chat.mount(Turn(f"**You:** {prompt}", classes="user"))
        answer = Turn("", classes="assistant")
        await chat.mount(answer)
        chat.anchor()
        stream = Markdown.get_stream(answer)
        self.request_id = f"ui{id(answer)}"
        try:
            async for event in client.request(
                "chat", {"message": prompt}, request_id=self.request_id
            ):
                if event["type"] == "token":
                    await stream.write(event["text"])
                elif event["type"] == "done":
                    timings = event.get("timings")
                    speed = timings["decode_tokens_per_s"] if timings else 0.0
                    usage = event.get("usage")
                    tokens = usage["completion_tokens"] if usage else 0
                    reason = event.get("finish_reason", "stop")
                    self.set_status(
                        f"model {self.model_name} · {tokens} tokens · {speed:.1f} tok/s"
                        + (" · stopped" if reason == "cancelled" else "")
                    )
        except HushError as exc:
            self.notify(exc.message, title="Request failed", severity="error", timeout=8)
            self.restore_prompt_on_failure(prompt)
            if exc.code == "unavailable":
                await self.drop_client()
        finally:
            self.request_id = None
            await stream.stop()

    def restore_prompt_on_failure(self, prompt: str) -> None:
        prompt_input = self.query_one("#prompt", Input)
        if not prompt_input.value:
            prompt_input.value = prompt

    async def drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(HushError, OSError):
                await self.client.close()
        self.client = None
        self.set_status("disconnected")

    async def action_cancel(self) -> None:
        if self.request_id is None or self.client is None:
            return
        with contextlib.suppress(HushError):
            await self.client.call("cancel", {"request_id": self.request_id})
