"""Hostile documents and a hostile shared inbox against the real daemon (issue 17).

Another local user is played by uid 65534 in a child process; those tests need root.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Daemon

CORPUS = Path(__file__).parent / "summarize" / "corpus"
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="playing another local user needs root (setuid 65534)")


def as_nobody(steps: Callable[[], None]) -> None:
    """Run `steps` in a child process that dropped to uid/gid 65534, the other local user."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        status = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            steps()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the other user's steps failed"


def shared_inbox(daemon: Daemon, outbox: Path | None = None) -> Path:
    """A drop folder every user may write to (mode 0777), configured as the daemon's inbox."""
    os.chmod(daemon.socket.parent.parent, 0o711)  # others may pass through, not list
    inbox = daemon.socket.parent.parent / "inbox"
    inbox.mkdir()
    os.chmod(inbox, 0o777)
    config = f"inbox_dir: {inbox}\n" + (f"outbox_dir: {outbox}\n" if outbox else "")
    (daemon.config_dir / "hushd.yaml").write_text(config)
    return inbox


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


@needs_root
def test_outbox_planted_by_another_user_overwrites_nothing(tiny_daemon: Daemon) -> None:
    inbox = shared_inbox(tiny_daemon)
    victim = tiny_daemon.config_dir / "notes.txt"  # a file only the daemon's user may write
    victim.write_text("the daemon user's own notes\n")
    # Before hushd starts, the other user makes the default outbox, open to everyone.
    def make_outbox() -> None:
        (inbox / "summaries").mkdir()
        os.chmod(inbox / "summaries", 0o777)

    as_nobody(make_outbox)
    tiny_daemon.start()
    status = json.loads(tiny_daemon.hush("status", "--json").stdout)
    pid = status["pid"]
    # It plants a symlink named like the daemon's temporary file, then drops a document.
    def plant_and_drop() -> None:
        os.symlink(victim, inbox / "summaries" / f".doc.txt.summary.md.{pid}.tmp")
        (inbox / "doc.txt").write_text("A short report about the river survey.\n")

    as_nobody(plant_and_drop)
    # The daemon settles a file for 2 s and the tiny model answers in milliseconds.
    time.sleep(6)
    assert victim.read_text() == "the daemon user's own notes\n"
    assert not (inbox / "summaries" / "doc.txt.summary.md").exists()
    refused = json.loads(tiny_daemon.hush("status", "--json").stdout)["inbox"]
    assert refused["watching"] is False
    assert "belongs to uid 65534" in refused["error"] and "outbox_dir" in refused["error"]
    assert "inbox not watched: the outbox" in tiny_daemon.log
    shown = tiny_daemon.hush("status").stdout
    assert "belongs to uid 65534" in shown


@needs_root
def test_outbox_others_can_write_to_is_refused(tiny_daemon: Daemon, short_dir: Path) -> None:
    outbox = short_dir / "outbox"
    outbox.mkdir()
    os.chmod(outbox, 0o777)  # the daemon's own, but open to everyone
    shared_inbox(tiny_daemon, outbox)
    tiny_daemon.start()
    refused = json.loads(tiny_daemon.hush("status", "--json").stdout)["inbox"]
    assert refused["watching"] is False
    assert "writable by group and others" in refused["error"]


def test_default_layout_starts_without_a_traceback_or_error_note(tiny_daemon: Daemon) -> None:
    inbox = shared_inbox(tiny_daemon)
    (inbox / "report.txt").write_text((CORPUS / "outage_report.txt").read_text())
    tiny_daemon.start()
    outbox = inbox / "summaries"
    wait_for(lambda: (outbox / "report.txt.summary.md").exists(), 60, "no summary written")
    assert "Traceback" not in tiny_daemon.log
    assert "IsADirectoryError" not in tiny_daemon.log
    assert sorted(p.name for p in outbox.iterdir()) == ["report.txt.summary.md"]
    assert outbox.stat().st_mode & 0o777 == 0o700
    status = json.loads(tiny_daemon.hush("status", "--json").stdout)["inbox"]
    assert status["watching"] is True and status["error"] is None


def test_sigterm_stops_an_inbox_summary_within_the_grace(tiny_daemon: Daemon) -> None:
    inbox = shared_inbox(tiny_daemon)
    config = tiny_daemon.config_dir / "hushd.yaml"
    config.write_text(config.read_text() + "shutdown_grace_s: 1\n")
    tiny_daemon.start()
    (inbox / "survey.md").write_text((CORPUS / "kessel_river_survey.md").read_text())
    # Settled after 2 s; the summary then takes about 10 s with the tiny model.
    time.sleep(4)
    assert not (inbox / "summaries" / "survey.md.summary.md").exists()
    assert tiny_daemon.process is not None
    stopped = time.monotonic()
    tiny_daemon.process.send_signal(signal.SIGTERM)
    assert tiny_daemon.process.wait(1 + 5) == 0
    assert time.monotonic() - stopped < 6
    # No error note: the document is summarized again at the next start.
    assert not (inbox / "summaries" / "survey.md.error.txt").exists()
