"""Summarizing through the real daemon: upload, policy, progress, cancel, storage, inbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hush.daemon.client import Client, RequestFailed
from hush.tui.documents import send_document

from .conftest import Daemon

CORPUS = Path(__file__).parent / "summarize" / "corpus"
LONG = CORPUS / "kessel_river_survey.md"  # over 10,000 words


def test_summarize_command_stores_a_conversation_for_follow_ups(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    result = tiny_daemon.hush("summarize", "--json", str(CORPUS / "complaint_letter.txt"))
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["type"] == "done" and done["result"]["summary"].strip()
    cid = done["result"]["conversation"]
    listed = tiny_daemon.hush("history", "list").stdout
    assert "Summary: complaint_letter.txt" in listed and cid in listed
    follow = tiny_daemon.hush("ask", "--json", "--max-tokens", "4", "--conversation", cid,
                              "Who wrote it?")
    assert follow.returncode == 0, follow.stderr
    assert json.loads(follow.stdout.splitlines()[-1])["conversation"] == cid


def test_long_document_reports_progress_through_the_socket(tiny_daemon: Daemon) -> None:
    # The map-reduce itself is tested with the real model in tests/summarize; here the tiny
    # model keeps the daemon's part (upload, progress events, result) quick.
    tiny_daemon.start()
    result = tiny_daemon.hush("summarize", "--json", str(LONG), timeout=600)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [e for e in events if e["type"] == "progress"]
    assert len(progress) >= 3
    assert progress[-1]["done"] == progress[-1]["total"]
    assert all(e["eta_s"] is None or e["eta_s"] >= 0 for e in progress)
    done = events[-1]["result"]
    assert done["chunks"] > 1 and done["rounds"] >= 1 and done["summary"].strip()


async def test_summarize_can_be_cancelled_mid_way(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        document = await send_document(client, LONG)
        events = []
        started = time.monotonic()
        with pytest.raises(RequestFailed) as info:
            async for event in client.request("summarize", {"document": document},
                                              request_id="sum"):
                events.append(event)
                if event["type"] == "progress" and len(events) == 1:
                    await client.call("cancel", {"request_id": "sum"})
        assert info.value.code == "cancelled"
        assert time.monotonic() - started < 60
        assert (await client.call("conversations.list"))["total"] == 0


def test_unsupported_and_oversized_documents_are_refused(tiny_daemon: Daemon,
                                                         tmp_path: Path) -> None:
    policies = tiny_daemon.config_dir / "policies"
    policies.mkdir()
    (policies / "10-small.yaml").write_text("name: small\nlimits:\n  max_document_bytes: 2000\n")
    tiny_daemon.start()
    odd = tmp_path / "slides.pptx"
    odd.write_bytes(b"PK\x03\x04 not really")
    refused = tiny_daemon.hush("summarize", str(odd))
    assert refused.returncode == 1
    assert "not accepted" in refused.stderr and "text/plain" in refused.stderr
    big = tiny_daemon.hush("summarize", str(LONG))
    assert big.returncode == 1 and "limit of 2000 bytes" in big.stderr


def test_document_rules_redact_before_the_model(tiny_daemon: Daemon, tmp_path: Path) -> None:
    policies = tiny_daemon.config_dir / "policies"
    policies.mkdir()
    (policies / "10-docs.yaml").write_text(textwrap.dedent("""\
        name: docs
        rules:
          - name: mail
            detectors: [email]
            default: allow
            documents: redact
        """))
    tiny_daemon.start()
    letter = tmp_path / "letter.txt"
    letter.write_text("Please reply to erin.hall@example.com about the invoice.\n")
    result = tiny_daemon.hush("summarize", "--json", str(letter))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    notices = [e["notice"] for e in events if e["type"] == "policy"]
    assert notices == ["1 email redacted in the document"]


def test_inbox_summarizes_a_dropped_file(tiny_daemon: Daemon, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tiny_daemon.config_dir / "hushd.yaml").write_text(
        f"inbox_dir: {inbox}\noutbox_dir: {tmp_path / 'outbox'}\n")
    tiny_daemon.start()
    (inbox / "report.txt").write_text((CORPUS / "outage_report.txt").read_text())
    (inbox / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    deadline = time.monotonic() + 60
    outbox = tmp_path / "outbox"
    while time.monotonic() < deadline:
        names = {p.name for p in outbox.iterdir()} if outbox.exists() else set()
        if {"report.txt.summary.md", "photo.jpg.error.txt"} <= names:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"outbox has {names}\n{tiny_daemon.log}")
    assert (outbox / "report.txt.summary.md").read_text().strip()
    assert tiny_daemon.process is not None and tiny_daemon.process.poll() is None


async def test_a_chat_answers_while_six_summaries_run(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    started: set[str] = set()
    finished: list[str] = []

    async def summarize(client: Client, name: str) -> None:
        document = await send_document(client, LONG)
        with contextlib.suppress(RequestFailed):  # cancelled at the end of the test
            async for event in client.request("summarize", {"document": document},
                                              request_id=name):
                if event["type"] == "progress":
                    started.add(name)
        finished.append(name)

    clients = [await Client.connect(tiny_daemon.socket) for _ in range(3)]
    try:
        runs = [asyncio.create_task(summarize(clients[n % 3], f"sum{n}")) for n in range(6)]
        deadline = time.monotonic() + 60
        while len(started) < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(started) == 6, "the six summaries did not all start"
        async with await Client.connect(tiny_daemon.socket) as asker:
            async def ask() -> None:
                async for _event in asker.request("chat", {"message": "Hello?",
                                                           "options": {"max_tokens": 8}}):
                    pass
            await asyncio.wait_for(ask(), 60)
        # Fair queues: the chat waited for batches already decoding, not for a summary.
        assert finished == []
        for n in range(6):
            with contextlib.suppress(RequestFailed):
                await clients[n % 3].call("cancel", {"request_id": f"sum{n}"})
        await asyncio.wait_for(asyncio.gather(*runs), 60)
    finally:
        for client in clients:
            await client.close()


def test_sigterm_stops_a_summary_within_the_grace(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("shutdown_grace_s: 1\n")
    tiny_daemon.start()
    assert tiny_daemon.process is not None
    summary = subprocess.Popen(
        [sys.executable, "-m", "hush.tui.cli", "--socket", str(tiny_daemon.socket),
         "summarize", "--json", str(LONG)],
        env=tiny_daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert summary.stdout is not None
        first = json.loads(summary.stdout.readline())  # the first progress event
        assert first["type"] == "progress"
        stopped = time.monotonic()
        tiny_daemon.process.send_signal(signal.SIGTERM)
        assert tiny_daemon.process.wait(1 + 5) == 0
        assert time.monotonic() - stopped < 6
    finally:
        summary.kill()
        summary.communicate()


def test_summary_passes_the_output_rules(real_daemon: Daemon, tmp_path: Path) -> None:
    # The real model: the tiny one never repeats a document's contact details.
    policies = real_daemon.config_dir / "policies"
    policies.mkdir()
    (policies / "10-contacts.yaml").write_text(textwrap.dedent("""\
        name: contacts
        rules:
          - name: contacts
            detectors: [email, phone]
            default: allow
            output: redact
        """))
    real_daemon.start()
    note = tmp_path / "note.txt"
    # Greedy SmolLM2 repeats both contact details in its summary of this note.
    note.write_text("Dana Reyes (dana.reyes@example.com, +1 415 555 0134) asked us to send the "
                    "signed lease back to dana.reyes@example.com by Friday.\n")
    result = real_daemon.hush("summarize", "--json", str(note), timeout=300)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    summary = events[-1]["result"]["summary"]
    assert "example.com" not in summary and "555" not in summary, summary
    output = [e for e in events if e["type"] == "policy" and e["direction"] == "output"]
    assert output and {f["detector"] for f in output[0]["findings"]} <= {"email", "phone"}
    stored = real_daemon.hush("history", "show", events[-1]["result"]["conversation"]).stdout
    assert "example.com" not in stored and "555" not in stored
