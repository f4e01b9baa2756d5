"""SVG snapshots of the main screens at 80x24 and 120x40 (pytest-textual-snapshot).

Regenerate after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the report before committing.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from hush.tui.app import HushApp

from .conftest import Daemon


async def _settled(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, HushApp)
    for _ in range(400):
        if app.status.connection == "connected" and app.status.policy:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_main_screen(snap_compare: Any, started_tiny_daemon: Daemon,
                     size: tuple[int, int]) -> None:
    app = HushApp(started_tiny_daemon.socket)
    assert snap_compare(app, terminal_size=size, run_before=_settled)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_help_screen(snap_compare: Any, started_tiny_daemon: Daemon,
                     size: tuple[int, int]) -> None:
    async def open_help(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("f1")
        await pilot.pause(0.2)

    app = HushApp(started_tiny_daemon.socket)
    assert snap_compare(app, terminal_size=size, run_before=open_help)
