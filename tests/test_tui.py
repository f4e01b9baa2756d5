"""The Textual app driven by its pilot against a real daemon."""

from __future__ import annotations

from textual.widgets import Input, Static

from hush.tui.app import HushApp, Turn

from .conftest import Daemon


async def _wait_for_answer(app: HushApp, pilot: object) -> None:
    for _ in range(600):
        if app.request_id is None and len(app.query(Turn)) >= 2:
            return
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    raise AssertionError("no answer within 30 s")


async def test_typed_question_gets_a_streamed_answer(real_daemon: Daemon) -> None:
    real_daemon.start()
    app = HushApp(real_daemon.socket)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press(*"What is the capital of France?")
        await pilot.press("enter")
        await pilot.pause(0.1)
        await _wait_for_answer(app, pilot)
        turns = list(app.query(Turn))
        assert "capital of France" in turns[0].source
        assert "Paris" in turns[1].source
        status = str(app.query_one("#status", Static).render())
        assert "tok/s" in status


async def test_without_daemon_the_prompt_is_given_back(tiny_daemon: Daemon) -> None:
    app = HushApp(tiny_daemon.socket)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(*"hello there", "enter")
        await pilot.pause(0.2)
        assert app.query_one("#prompt", Input).value == "hello there"
        assert "disconnected" in str(app.query_one("#status", Static).render())
        assert not app.query(Turn)
