"""The Hush terminal UI: conversations on the left, the chat on the right, status below."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Markdown, ProgressBar
from textual.widgets.markdown import MarkdownStream

from hush.daemon.errors import HushError
from hush.daemon.protocol import DoneEvent, PolicyEvent

from .screens import ConfirmScreen, FileScreen, HelpScreen, PickScreen, TextScreen
from .session import Session
from .widgets.chat import ChatView, MessageView
from .widgets.sidebar import Entry, Sidebar
from .widgets.status import StatusBar

CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


class HushApp(App[None]):
    TITLE = "Hush"
    SUB_TITLE = "private assistant"
    CSS_PATH = "app.tcss"
    # Screens get -narrow below 100 columns: the list then gives the chat more room.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012
    # Priority: these win over the message box's own editing keys (Ctrl+D, Ctrl+E, Ctrl+F
    # edit text in an Input); Delete, End and Ctrl+W still do that editing.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop"),
        Binding("ctrl+n", "new", "New", priority=True),
        Binding("ctrl+f", "search", "Search", priority=True),
        Binding("ctrl+r", "rename", "Rename", show=False, priority=True),
        Binding("ctrl+d", "delete", "Delete", show=False, priority=True),
        Binding("ctrl+e", "export", "Export", show=False, priority=True),
        Binding("ctrl+y", "copy", "Copy message", show=False, priority=True),
        Binding("ctrl+k", "copy_code", "Copy code", show=False, priority=True),
        Binding("ctrl+o", "pick_model", "Model", show=False, priority=True),
        Binding("ctrl+t", "system_prompt", "System prompt", show=False, priority=True),
        Binding("ctrl+s", "summarize", "Summarize", priority=True),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(self, socket: Path, *, max_tokens: int = 1024) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.session = Session(socket, self.on_session_state)
        self.conversation: str | None = None
        self.system_prompt: str | None = None
        self.request_id: str | None = None
        self.redactions = 0
        self.context_limit = 0
        self._ids = itertools.count(1)

    # --- layout and life cycle ---

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="conversation"):
                yield ChatView(id="chat")
                yield Input(placeholder="Ask anything. Enter sends, Esc stops, F1 help.",
                            id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.prompt.focus()
        if await self.session.connect():
            await self.refresh_everything()

    async def on_unmount(self) -> None:
        await self.session.close()

    @property
    def prompt(self) -> Input:
        return self.query_one("#prompt", Input)

    @property
    def chat(self) -> ChatView:
        return self.query_one("#chat", ChatView)

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one("#sidebar", Sidebar)

    def on_session_state(self, state: str, detail: str | None) -> None:
        self.status.connection = state
        if state == "disconnected" and detail:
            self.notify(detail, title="Cannot reach hushd", severity="error", timeout=8)
        if state == "connected":
            self.run_worker(self.refresh_everything(), group="refresh", exclusive=True)

    async def refresh_everything(self) -> None:
        with contextlib.suppress(HushError):
            status = await self.session.call("status")
            self.status.model = str(status.get("model", "?"))
            policy = status.get("policy") or {}
            if policy:
                self.status.policy = f"{policy['name']} {str(policy['version'])[:8]}"
                if policy.get("error"):
                    self.notify(str(policy["error"]), title="Policy reload failed",
                                severity="warning", timeout=10)
            models = (await self.session.call("models.list"))["models"]
            active = [m for m in models if m["active"]]
            self.context_limit = int(active[0]["context_length"]) if active else 0
            self.status.context_limit = self.context_limit
            await self.refresh_list()

    async def refresh_list(self) -> None:
        result = await self.session.call("conversations.list", {"limit": 200})
        self.sidebar.show(Sidebar.entries_from(result["conversations"]),
                          selected=self.conversation)

    # --- sending and streaming ---

    @on(Input.Submitted, "#prompt")
    def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.request_id is not None:
            return
        event.input.clear()
        self.stream_answer(text)

    @work(exclusive=True, group="answer")
    async def stream_answer(self, text: str) -> None:
        question = await self.chat.add_message("user", text)
        answer = await self.chat.add_message("assistant")
        # Started on the first token: a stream stopped before its task ever ran would
        # cancel this worker instead of ending quietly.
        stream: MarkdownStream | None = None
        self.request_id = f"ui-{next(self._ids)}"
        params: dict[str, Any] = {"message": text, "options": {"max_tokens": self.max_tokens}}
        if self.conversation is not None:
            params["conversation"] = self.conversation
        if self.system_prompt:
            params["system"] = self.system_prompt
        failed = False
        try:
            async for event in self.session.request("chat", params, self.request_id):
                if event["type"] == "token":
                    stream = stream or Markdown.get_stream(answer)
                    await stream.write(event["text"])
                elif event["type"] == "policy":
                    await self.show_policy(event)
                elif event["type"] == "done":
                    await self.finish_answer(event)
        except HushError as exc:
            failed = True
            await self.explain_failure(exc)
        finally:
            self.request_id = None
            if stream is not None:
                await stream.stop()
        if failed:
            # The message was not answered: it goes back to the box, not into the chat.
            self.restore_prompt_on_failure(text)
            await question.remove()
            await answer.remove()

    async def show_policy(self, event: PolicyEvent) -> None:
        counts = sum(f["count"] for f in event["findings"]
                     if f["action"] in ("redact", "mask", "pseudonymize"))
        self.redactions += counts
        self.status.redactions = self.redactions
        if event["notice"]:
            await self.chat.add_notice(event["notice"])
        for warning in event["warnings"]:
            await self.chat.add_notice(warning, severity="warning")

    async def finish_answer(self, done: DoneEvent) -> None:
        timings, usage = done.get("timings"), done.get("usage")
        self.status.tokens_per_s = timings["decode_tokens_per_s"] if timings else 0.0
        self.status.context_used = (usage["prompt_tokens"] + usage["completion_tokens"]
                                    if usage else 0)
        if done.get("dropped_turns"):
            await self.chat.add_notice(
                f"{done['dropped_turns']} older messages did not fit the model's context "
                "and were left out of this answer", severity="warning")
        if done.get("finish_reason") == "cancelled":
            await self.chat.add_notice("stopped")
        new = done.get("conversation")
        if new and new != self.conversation:
            self.conversation = str(new)
        with contextlib.suppress(HushError):
            await self.refresh_list()

    async def explain_failure(self, exc: HushError) -> None:
        if exc.code == "blocked":
            await self.chat.add_notice(f"Not sent: {exc.message}", severity="error")
        else:
            self.notify(exc.message, title="Request failed", severity="error", timeout=8)

    def restore_prompt_on_failure(self, text: str) -> None:
        if not self.prompt.value:
            self.prompt.value = text

    async def action_cancel(self) -> None:
        if self.request_id is not None:
            with contextlib.suppress(HushError):
                await self.session.call("cancel", {"request_id": self.request_id})

    # --- conversations ---

    async def action_new(self) -> None:
        self.conversation = None
        self.system_prompt = None
        self.redactions = 0
        self.status.redactions = 0
        await self.chat.clear()
        self.prompt.focus()

    @on(Sidebar.Chosen)
    async def open_conversation(self, event: Sidebar.Chosen) -> None:
        try:
            conversation = await self.session.call("conversations.get",
                                                   {"id": event.conversation_id})
        except HushError as exc:
            self.notify(exc.message, title="Cannot open", severity="error")
            return
        self.conversation = conversation["id"]
        self.system_prompt = None
        self.redactions = 0
        self.status.redactions = 0
        await self.chat.clear()
        for message in conversation["messages"]:
            if message["error"] is not None:
                await self.chat.add_notice(f"unreadable record: {message['error']}",
                                           severity="error")
            elif message["role"] in ("user", "assistant"):
                await self.chat.add_message(message["role"], message["content"])
        self.prompt.focus()

    @on(Sidebar.SearchChanged)
    async def search(self, event: Sidebar.SearchChanged) -> None:
        try:
            if not event.query.strip():
                await self.refresh_list()
                return
            hits = (await self.session.call("conversations.search",
                                            {"query": event.query}))["hits"]
        except HushError as exc:
            self.notify(exc.message, severity="error")
            return
        seen: dict[str, Entry] = {}
        for hit in hits:
            seen.setdefault(hit["conversation_id"], Entry(
                hit["conversation_id"], hit["title"] or "(untitled)", snippet=hit["snippet"]))
        self.sidebar.show(list(seen.values()))

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    @work
    async def action_rename(self) -> None:
        if self.conversation is None:
            return
        title = await self.push_screen_wait(TextScreen("New title:"))
        if title:
            await self.call_daemon("conversations.rename",
                                   {"id": self.conversation, "title": title})
            await self.refresh_list()

    @work
    async def action_delete(self) -> None:
        if self.conversation is None:
            return
        if await self.push_screen_wait(ConfirmScreen(
                "Delete this conversation? Its key is destroyed; it cannot be recovered.")):
            await self.call_daemon("conversations.delete", {"id": self.conversation})
            await self.action_new()
            await self.refresh_list()

    @work
    async def action_export(self) -> None:
        if self.conversation is None:
            return
        default = str(Path.cwd() / f"hush-{self.conversation[:8]}.md")
        target = await self.push_screen_wait(TextScreen("Export as Markdown to:", default))
        if not target:
            return
        result = await self.call_daemon("conversations.export", {"id": self.conversation})
        if result is not None:
            # The client writes the file: the daemon never writes where a client points it.
            await asyncio.to_thread(_write_file, target, result["text"])
            self.notify(f"exported to {target}")

    def _message_to_copy(self) -> MessageView | None:
        """The focused message (Tab or a click selects one), else the last answer."""
        if isinstance(self.focused, MessageView):
            return self.focused
        answers = [m for m in self.chat.messages() if m.role == "assistant" and m.text]
        return answers[-1] if answers else None

    def action_copy(self) -> None:
        message = self._message_to_copy()
        if message is not None:
            # OSC 52 through the terminal, so it reaches the clipboard over SSH too.
            self.copy_to_clipboard(message.text)
            self.notify("message copied to the clipboard")

    def action_copy_code(self) -> None:
        message = self._message_to_copy()
        blocks = CODE_BLOCK.findall(message.text) if message is not None else []
        if blocks:
            self.copy_to_clipboard(blocks[-1])
            self.notify("code block copied to the clipboard")
        else:
            self.notify("no code block in that message", severity="warning")

    @work
    async def action_pick_model(self) -> None:
        result = await self.call_daemon("models.list")
        if result is None:
            return
        choices = [(m["name"], f"{'● ' if m['active'] else '  '}{m['name']}  "
                    f"({m['architecture']}, {m['context_length']} ctx"
                    f"{', completion only' if not m['chat_template'] else ''})")
                   for m in result["models"]]
        name = await self.push_screen_wait(PickScreen("Model:", choices))
        if name and await self.call_daemon("models.use", {"name": name}) is not None:
            self.notify(f"now using {name}")
            await self.refresh_everything()

    @work
    async def action_system_prompt(self) -> None:
        prompt = await self.push_screen_wait(TextScreen(
            "System prompt for this conversation (empty: the default):",
            self.system_prompt or ""))
        if prompt is not None:
            self.system_prompt = prompt or None

    @work
    async def action_summarize(self) -> None:
        path = await self.push_screen_wait(FileScreen(Path.cwd()))
        if path is not None:
            await self.summarize_file(path)

    async def summarize_file(self, path: Path) -> None:
        """Upload, summarize with a progress bar, then open the summary's conversation."""
        await self.action_new()
        await self.chat.add_message("user", f"Summarize {path.name}.")
        bar = ProgressBar(total=None, show_eta=True, id="summary-progress")
        await self.chat.mount(bar)
        self.request_id = f"ui-{next(self._ids)}"
        try:
            document = await self.session.upload(path)
            async for event in self.session.request("summarize", {"document": document},
                                                    self.request_id):
                if event["type"] == "progress":
                    bar.update(total=event["total"], progress=event["done"])
                elif event["type"] == "policy":
                    await self.show_policy(event)
                elif event["type"] == "done":
                    result = event.get("result", {})
                    await self.chat.add_message("assistant", str(result.get("summary", "")))
                    if result.get("conversation"):
                        self.conversation = str(result["conversation"])
                    await self.refresh_list()
        except HushError as exc:
            await self.explain_failure(exc)
        except OSError as exc:
            self.notify(f"cannot read {path}: {exc.strerror}", severity="error")
        finally:
            self.request_id = None
            await bar.remove()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def call_daemon(self, method: str, params: dict[str, Any] | None = None
                          ) -> dict[str, Any] | None:
        try:
            return await self.session.call(method, params)
        except HushError as exc:
            self.notify(exc.message, title="Request failed", severity="error", timeout=8)
            return None

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New conversation", "Start an empty conversation", self.action_new)
        yield SystemCommand("Rename conversation", "Give it a new title", self.action_rename)
        yield SystemCommand("Delete conversation", "Crypto-shred it", self.action_delete)
        yield SystemCommand("Export conversation", "Save it as Markdown",
                            self.action_export)
        yield SystemCommand("Copy message", "The focused message, or the last answer (OSC 52)",
                            self.action_copy)
        yield SystemCommand("Copy code block", "The last code block of that message",
                            self.action_copy_code)
        yield SystemCommand("Choose model", "Switch the model the daemon serves",
                            self.action_pick_model)
        yield SystemCommand("System prompt", "Set this conversation's system prompt",
                            self.action_system_prompt)
        yield SystemCommand("Search conversations", "Focus the search box",
                            self.action_search)
        yield SystemCommand("Summarize a document", "Pick a file; the summary becomes a "
                            "conversation", self.action_summarize)
        yield SystemCommand("Help", "Keys and what they do", self.action_help)


def _write_file(target: str, text: str) -> None:
    Path(target).expanduser().write_text(text, encoding="utf-8")


__all__ = ["HushApp", "MessageView"]
