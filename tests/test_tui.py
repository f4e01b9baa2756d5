"""The Textual app driven by its pilot against a real daemon."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from hush.tui.app import HushApp
from hush.tui.widgets.chat import MessageView, Notice

from .conftest import Daemon


async def until(pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("the UI never got there")


def answers(app: HushApp) -> list[MessageView]:
    return [m for m in app.chat.messages() if m.role == "assistant"]


async def ask(pilot: Pilot[Any], app: HushApp, text: str) -> None:
    before = len(answers(app))
    app.prompt.value = text
    await pilot.press("enter")
    await until(pilot, lambda: len(answers(app)) > before and app.request_id is None)


async def connected(pilot: Pilot[Any], app: HushApp) -> None:
    await until(pilot, lambda: app.status.connection == "connected" and app.status.policy != "")


async def test_typed_question_gets_a_streamed_answer(real_daemon: Daemon) -> None:
    real_daemon.start()
    app = HushApp(real_daemon.socket)
    async with app.run_test(size=(100, 30)) as pilot:
        await connected(pilot, app)
        await pilot.press(*"What is the capital of France?")
        await pilot.press("enter")
        await until(pilot, lambda: app.request_id is None and bool(answers(app))
                    and bool(answers(app)[-1].text))
        shown = answers(app)[-1].text
        assert "tok/s" in app.status.render()
        assert app.conversation is not None
    # The UI shows the model's whole answer: the same greedy text `hush ask` prints. (Whether
    # the answers are right is a question for a set of them: test_end_to_end.py.)
    asked = await asyncio.to_thread(real_daemon.hush, "ask", "--max-tokens",
                                    str(app.max_tokens), "What is the capital of France?")
    assert asked.returncode == 0, asked.stderr
    assert shown.strip() == asked.stdout.strip()


async def test_escape_stops_the_answer(real_daemon: Daemon) -> None:
    real_daemon.start()
    app = HushApp(real_daemon.socket, max_tokens=2000)
    async with app.run_test(size=(100, 30)) as pilot:
        await connected(pilot, app)
        app.prompt.value = "Write a very long story about a lighthouse keeper and the sea."
        await pilot.press("enter")
        await until(pilot, lambda: app.request_id is not None)
        await until(pilot, lambda: bool(answers(app)) and len(answers(app)[-1].text) > 20)
        await pilot.press("escape")
        await until(pilot, lambda: app.request_id is None, timeout=10)
        assert any("stopped" in str(n.render()) for n in app.query(Notice))
        assert len(answers(app)[-1].text) < 2000


async def test_conversations_new_rename_search_switch_delete(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(120, 40)) as pilot:
        await connected(pilot, app)
        await ask(pilot, app, "first about whales")
        first = app.conversation
        await pilot.press("ctrl+n")
        assert app.conversation is None and not app.chat.messages()
        await ask(pilot, app, "second about tides")
        second = app.conversation
        assert first and second and first != second
        options = app.query_one("#conversations", OptionList)
        await until(pilot, lambda: options.option_count == 2)

        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press(*"Tidal notes", "enter")
        await until(pilot, lambda: "Tidal notes" in str(options.get_option_at_index(0).prompt))

        app.query_one("#search", Input).focus()
        await pilot.press(*"whales")
        await until(pilot, lambda: options.option_count == 1)
        options.focus()
        options.highlighted = 0
        await pilot.press("enter")
        await until(pilot, lambda: app.conversation == first)
        assert app.chat.messages()[0].text == "first about whales"

        await pilot.press("ctrl+d")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await pilot.press("escape")  # changed my mind: nothing happens
        await until(pilot, lambda: type(app.screen).__name__ != "ConfirmScreen")
        assert app.conversation == first
        await pilot.press("ctrl+d")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await pilot.press("y")
        await until(pilot, lambda: app.conversation is None)
        app.query_one("#search", Input).value = ""
        await until(pilot, lambda: options.option_count == 1)


async def test_policy_notice_is_shown_inline(tiny_daemon: Daemon) -> None:
    policies = tiny_daemon.config_dir / "policies"
    policies.mkdir()
    (policies / "10-mail.yaml").write_text(textwrap.dedent("""\
        name: mail
        rules:
          - name: mail
            detectors: [email]
            default: redact
        """))
    tiny_daemon.start()
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(100, 30)) as pilot:
        await connected(pilot, app)
        assert "policy mail" in app.status.render()
        await ask(pilot, app, "reach me at ann@example.com or ann@example.org")
        notices = [str(n.render()) for n in app.query(Notice)]
        assert "2 emails redacted before the model saw them" in notices
        assert "2 redacted" in app.status.render()


async def test_blocked_prompt_is_explained_and_given_back(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(100, 30)) as pilot:
        await connected(pilot, app)
        app.prompt.value = "key AKIAIOSFODNN7EXAMPLE"
        await pilot.press("enter")
        await until(pilot, lambda: bool(app.prompt.value))
        assert app.prompt.value == "key AKIAIOSFODNN7EXAMPLE"
        assert any("Not sent" in str(n.render()) for n in app.query(Notice))


async def test_daemon_restart_shows_reconnecting_then_recovers(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(100, 30)) as pilot:
        await connected(pilot, app)
        tiny_daemon.stop()
        app.prompt.value = "are you there?"
        await pilot.press("enter")
        await until(pilot, lambda: app.status.connection in {"reconnecting", "disconnected"})
        assert app.prompt.value == "are you there?"  # given back, not lost
        await asyncio.to_thread(tiny_daemon.start)
        await until(pilot, lambda: app.status.connection == "connected")
        await ask(pilot, app, "are you there?")
        assert answers(app)


async def test_without_daemon_the_prompt_is_given_back(tiny_daemon: Daemon) -> None:
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(*"hello there", "enter")
        await until(pilot, lambda: app.prompt.value == "hello there", timeout=10)
        assert app.status.connection in {"disconnected", "reconnecting"}
        assert not app.chat.messages()


async def test_help_and_command_palette(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(80, 24)) as pilot:
        await connected(pilot, app)
        await pilot.press("f1")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Choose model")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "PickScreen")


async def test_summarize_a_file_with_progress(tiny_daemon: Daemon, tmp_path: Any,
                                              monkeypatch: Any) -> None:
    from pathlib import Path

    from textual.widgets import ProgressBar

    corpus = Path(__file__).parent / "summarize" / "corpus"
    monkeypatch.chdir(corpus)
    tiny_daemon.start()
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(100, 30)) as pilot:
        await connected(pilot, app)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "FileScreen")
        await pilot.press("escape")  # changed my mind
        await until(pilot, lambda: type(app.screen).__name__ != "FileScreen")
        seen: list[float] = []
        worker = app.run_worker(app.summarize_file(corpus / "kessel_river_survey.md"))
        while not worker.is_finished:
            for bar in app.query(ProgressBar):
                if bar.total:
                    seen.append(bar.progress)
            await pilot.pause(0.05)
        assert seen and max(seen) > 0  # the bar moved
        assert app.conversation is not None
        assert answers(app) and answers(app)[-1].text
        options = app.query_one("#conversations", OptionList)
        await until(pilot, lambda: options.option_count == 1)
        assert "Summary: kessel_river" in str(options.get_option_at_index(0).prompt)


async def test_copy_message_and_code_block(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    app = HushApp(tiny_daemon.socket)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=(100, 30)) as pilot:
        await connected(pilot, app)
        await app.chat.add_message("assistant", "Try this:\n\n```python\nprint('hi')\n```\n")
        await pilot.press("ctrl+y")
        await pilot.press("ctrl+k")
        await pilot.pause()
    assert copied == ["Try this:\n\n```python\nprint('hi')\n```\n", "print('hi')\n"]
