"""Hostile documents and a hostile shared inbox against the real daemon (issue 17).

Another local user is played by uid 65534 in a child process; those tests need root.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hush.daemon.client import Client, RequestFailed

from .conftest import Daemon
from .summarize.pdfgen import make_shared_stream_pdf

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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_pdf_bomb_is_too_large_and_the_daemon_keeps_answering(tiny_daemon: Daemon,
                                                                    tmp_path: Path) -> None:
    # 20 pages share one FlateDecode stream of 5 M letters: ~14 KB holding 100 M characters.
    bomb = make_shared_stream_pdf(pages=20, chars_per_page=5_000_000)
    assert len(bomb) < 20_000
    tiny_daemon.start()
    assert tiny_daemon.process is not None
    pid = tiny_daemon.process.pid
    before = rss_kib(pid)
    async with await Client.connect(tiny_daemon.socket) as client:
        await client.call("document.put", {"document": "bomb", "filename": "bomb.pdf",
                                           "data": base64.b64encode(bomb).decode(),
                                           "last": True})
        summary = asyncio.create_task(client.call("summarize", {"document": "bomb"}))
        async with await Client.connect(tiny_daemon.socket) as other:
            started = time.monotonic()
            status = await asyncio.wait_for(other.call("status"), 2.0)
            assert status["pid"] == pid and time.monotonic() - started < 2.0
        with pytest.raises(RequestFailed) as info:
            await asyncio.wait_for(summary, 60)
    assert info.value.code == "document_too_large"
    assert "bomb.pdf" in str(info.value)
    assert rss_kib(pid) - before < 100 * 1024  # under 100 MiB more, not 3.8 GB
    # Through the command line: a clear message and a non-zero exit, no traceback.
    path = tmp_path / "bomb.pdf"
    path.write_bytes(bomb)
    result = tiny_daemon.hush("summarize", str(path))
    assert result.returncode == 1
    assert "bomb.pdf" in result.stderr and "Traceback" not in result.stderr


async def put(client: Client, document: str, data: bytes, *, last: bool = False
              ) -> dict[str, object]:
    return await client.call("document.put", {"document": document, "filename": "part.txt",
                                              "data": base64.b64encode(data).decode(),
                                              "last": last})


async def test_unfinished_uploads_are_capped_per_connection(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        for n in range(4):
            await put(client, f"doc{n}", b"some words ")
        with pytest.raises(RequestFailed) as info:
            await put(client, "doc4", b"some words ")
        assert info.value.code == "too_many_uploads"
        assert "summarize them first" in str(info.value)
        # Finishing and summarizing one makes room again.
        await put(client, "doc0", b"", last=True)
        await client.call("summarize", {"document": "doc0"})
        await put(client, "doc4", b"some words ")


async def test_unfinished_uploads_are_capped_per_uid(tiny_daemon: Daemon) -> None:
    policies = tiny_daemon.config_dir / "policies"
    policies.mkdir()
    (policies / "10-small.yaml").write_text("name: small\nlimits:\n  max_document_bytes: 1000\n")
    tiny_daemon.start()
    async with (await Client.connect(tiny_daemon.socket) as first,
                await Client.connect(tiny_daemon.socket) as second,
                await Client.connect(tiny_daemon.socket) as third):
        # Bytes on one connection: at most twice the policy's document size.
        await put(first, "a", b"x" * 900)
        await put(first, "b", b"x" * 900)
        with pytest.raises(RequestFailed) as info:
            await put(first, "c", b"x" * 900)
        assert info.value.code == "too_many_uploads" and "2000" in str(info.value)
        # Bytes over all of one uid's connections: at most four times.
        await put(second, "a", b"x" * 900)
        await put(second, "b", b"x" * 900)
        with pytest.raises(RequestFailed) as info:
            await put(third, "a", b"x" * 900)
        assert info.value.code == "too_many_uploads" and "4000" in str(info.value)
        # Count over all of one uid's connections: at most eight.
        await put(third, "a", b"x")
        await put(third, "b", b"x")
        await put(third, "c", b"x")
        await put(third, "d", b"x")
        with pytest.raises(RequestFailed) as info:
            await put(second, "c", b"x")
        assert info.value.code == "too_many_uploads" and "limit 8" in str(info.value)
    # Closed connections give their uploads back.
    async with await Client.connect(tiny_daemon.socket) as fresh:
        for n in range(4):
            await put(fresh, f"doc{n}", b"x" * 400)


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
