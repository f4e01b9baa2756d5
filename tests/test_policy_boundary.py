"""The policy holds at every door of the real daemon: system prompts, titles, file names, hostile
patterns and files, and the event loop stays free while policy work runs."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import textwrap
import time
from pathlib import Path

import pytest

from hush.daemon.client import Client, RequestFailed

from .conftest import Daemon, RawConnection

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
MAIL_POLICY = textwrap.dedent("""\
    name: mail
    rules:
      - name: mail
        detectors: [email]
        default: redact
    """)


def policies(daemon: Daemon) -> Path:
    path = daemon.config_dir / "policies"
    path.mkdir(exist_ok=True)
    return path


def audit(daemon: Daemon) -> list[dict[str, object]]:
    path = daemon.state_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def chat(client: Client, message: str, **params: object) -> list[dict[str, object]]:
    return [dict(e) async for e in client.request(
        "chat", {"message": message, "options": {"max_tokens": 4}, **params})]


# --- the system prompt, titles and file names pass the rules --------------------------------


async def test_a_key_in_the_system_prompt_is_blocked_and_audited(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()  # the built-in default blocks credentials on input
    async with await Client.connect(tiny_daemon.socket) as client:
        with pytest.raises(RequestFailed) as info:
            await chat(client, "hello", system=f"The user's AWS key is {AWS_KEY}.")
        assert info.value.code == "blocked" and "system prompt" in info.value.message
        assert AWS_KEY not in info.value.message
        assert (await client.call("conversations.list"))["total"] == 0
    records = audit(tiny_daemon)
    assert any(r["detector"] == "aws_access_key" and r["direction"] == "input"
               and r["action"] == "block" for r in records), records
    assert AWS_KEY not in (tiny_daemon.state_dir / "audit.jsonl").read_text()


def test_hush_ask_system_is_blocked_too(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    asked = tiny_daemon.hush("ask", "--max-tokens", "4", "--system", f"key {AWS_KEY}", "hello")
    assert asked.returncode != 0 and "system prompt" in asked.stderr
    assert AWS_KEY not in asked.stdout + asked.stderr


async def test_system_prompt_is_redacted_for_the_model_and_the_store(
        tiny_daemon: Daemon) -> None:
    (policies(tiny_daemon) / "10-mail.yaml").write_text(MAIL_POLICY)
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        events = await chat(client, "hello", system="Write to victim.name@example.com only.")
        # What the model was given: exactly as many prompt tokens as the redacted prompt.
        redacted = await chat(client, "hello", system="Write to [EMAIL] only.")
        notices = [e for e in events if e["type"] == "policy" and e["direction"] == "input"]
        assert notices and notices[0]["notice"] == "1 email redacted before the model saw them"
        done = events[-1]
        assert done["usage"] == redacted[-1]["usage"]  # type: ignore[index]
        stored = await client.call("conversations.get", {"id": done["conversation"]})
    assert "victim" not in json.dumps(stored) and stored["system"] == "Write to [EMAIL] only."
    records = audit(tiny_daemon)
    assert {(r["direction"], r["action"]) for r in records if r["detector"] == "email"} >= {
        ("input", "redact"), ("storage", "redact")}


async def test_rename_applies_the_storage_rules(tiny_daemon: Daemon) -> None:
    (policies(tiny_daemon) / "10-mail.yaml").write_text(MAIL_POLICY)
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        cid = (await chat(client, "hello"))[-1]["conversation"]
        renamed = await client.call("conversations.rename",
                                    {"id": cid, "title": "notes for victim@example.com"})
        assert renamed["title"] == "notes for [EMAIL]"
        stored = await client.call("conversations.get", {"id": cid})
        listed = await client.call("conversations.list")
    assert stored["title"] == "notes for [EMAIL]"
    assert "victim" not in json.dumps(listed)
    assert any(r["detector"] == "email" and r["direction"] == "storage"
               for r in audit(tiny_daemon))


def test_document_file_names_apply_the_storage_rules(tiny_daemon: Daemon,
                                                     tmp_path: Path) -> None:
    (policies(tiny_daemon) / "10-mail.yaml").write_text(MAIL_POLICY)
    tiny_daemon.start()
    letter = tmp_path / "victim@example.com - letter.txt"
    letter.write_text("Please reply about the invoice for March.\n")
    result = tiny_daemon.hush("summarize", "--json", str(letter))
    assert result.returncode == 0, result.stderr
    cid = json.loads(result.stdout.splitlines()[-1])["result"]["conversation"]
    shown = tiny_daemon.hush("history", "show", cid)
    listed = tiny_daemon.hush("history", "list")
    assert shown.returncode == 0 and listed.returncode == 0
    assert "victim" not in shown.stdout + listed.stdout
    assert "Summary: [EMAIL] - letter.txt" in listed.stdout


# --- hostile patterns and files -------------------------------------------------------------


SLOW_POLICY = ("name: slow\ndetectors:\n  - name: slow\n    pattern: '{pattern}'\n"
               "rules:\n  - {{name: r, detectors: [slow], default: redact}}\n")


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a|aa)+$"])
def test_policy_check_rejects_a_catastrophic_pattern(tiny_daemon: Daemon, tmp_path: Path,
                                                     pattern: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SLOW_POLICY.format(pattern=pattern))
    checked = tiny_daemon.hush("policy", "check", str(bad), timeout=30)
    assert checked.returncode == 2
    assert "bad.yaml:4:14: detectors[0].pattern:" in checked.stderr
    assert "catastrophic backtracking" in checked.stderr and "Traceback" not in checked.stderr


async def test_a_backtracking_pattern_freezes_nobody(tiny_daemon: Daemon) -> None:
    # (a+)+$ passed `policy check` and froze every client for 17.6 s on 29 characters.
    tiny_daemon.start()
    (policies(tiny_daemon) / "10-slow.yaml").write_text(SLOW_POLICY.format(pattern="(a+)+$"))
    async with await Client.connect(tiny_daemon.socket) as client, \
            await Client.connect(tiny_daemon.socket) as other:
        deadline = time.monotonic() + 15
        while (await client.call("status"))["policy"]["name"] != "slow":
            if (await client.call("status"))["policy"]["error"]:
                break  # refused: the previous policy stays in force
            assert time.monotonic() < deadline, "the reload never happened"
            await asyncio.sleep(0.1)
        turn = asyncio.create_task(chat(client, "a" * 28 + "!"))
        await asyncio.sleep(0.05)
        status = await asyncio.wait_for(other.call("status"), 2)
        assert status["policy"]["name"] == "default"
        assert "catastrophic backtracking" in status["policy"]["error"]
        events = await asyncio.wait_for(turn, 10)
    assert events[-1]["type"] == "done"


async def test_a_symlinked_policy_shows_no_content(tiny_daemon: Daemon, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$saltsalt$HASHEDSECRET:19000:0:99999:7:::\n")
    tiny_daemon.start()
    (policies(tiny_daemon) / "10-x.yaml").symlink_to(secret)
    async with await Client.connect(tiny_daemon.socket) as client:
        deadline = time.monotonic() + 15
        while (error := (await client.call("status"))["policy"]["error"]) is None:
            assert time.monotonic() < deadline, "the reload never reported the link"
            await asyncio.sleep(0.1)
        shown = await client.call("policy.show")
    assert "is a symbolic link" in error and "HASHEDSECRET" not in error
    assert shown["name"] == "default"  # the previous policy stays in force
    assert "HASHEDSECRET" not in tiny_daemon.log and "saltsalt" not in tiny_daemon.log


async def test_state_and_policy_directories_are_created_private(tiny_daemon: Daemon) -> None:
    tiny_daemon.state_dir.rmdir()
    tiny_daemon.config_dir.rmdir()
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        await chat(client, "mail me at a@example.com")  # writes the audit trail
    for directory in (tiny_daemon.state_dir, tiny_daemon.config_dir,
                      tiny_daemon.config_dir / "policies"):
        assert oct(os.stat(directory).st_mode & 0o777) == oct(0o700), directory


# --- the loop stays free ------------------------------------------------------------------


async def test_status_answers_while_a_10_mb_text_is_checked(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text(
        "limits:\n  max_frame_bytes: 16777216\n")
    tiny_daemon.start()
    para = ("Dear team, the invoice for March went to alice.jones@example.com yesterday; call "
            "me on 415 555 0134 if 1,250.00 looks wrong. Regards, Bob.\n")
    text = para * (10_000_000 // len(para))
    big = RawConnection(tiny_daemon.socket)
    big.sock.settimeout(300)
    big.hello()
    frame = json.dumps({"id": "big", "method": "policy.test",
                        "params": {"text": text, "direction": "input"}}) + "\n"
    latencies: list[float] = []
    async with await Client.connect(tiny_daemon.socket) as client:
        sender = asyncio.create_task(asyncio.to_thread(big.send, frame.encode()))
        answer = asyncio.create_task(asyncio.to_thread(big.frame))
        await sender
        await asyncio.sleep(0.5)  # the daemon has the frame and is checking it
        while not answer.done() and len(latencies) < 200:
            started = time.perf_counter()
            await asyncio.wait_for(client.call("status"), 10)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        running = not answer.done()
        result = await asyncio.wait_for(answer, 300)
    assert result["type"] == "done" and result["id"] == "big", result.get("message")
    assert len(latencies) >= 50 and running, f"{len(latencies)} samples while checking"
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.1, f"status p99 {p99 * 1000:.0f} ms over {len(latencies)} requests"
