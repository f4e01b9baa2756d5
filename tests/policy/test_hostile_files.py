"""Hostile policy files: links, FIFOs, alias bombs, huge or half-written files, private dirs."""

from __future__ import annotations

import asyncio
import os
import resource
import stat
from pathlib import Path

import pytest

from hush.daemon.policy import AuditLog, PolicyError, PolicyWatcher
from hush.daemon.policy.loader import PolicySet, load_policy_file, load_policy_set

from .test_watcher import valid, wait_for

MAX_POLICY_BYTES = 256 * 1024  # source.MAX_POLICY_BYTES, written out so this fails cleanly
SECRET = "root:$6$saltsalt$HASHEDSECRETVALUE:19000:0:99999:7:::\nbob:$y$j9T$OTHERSECRET:1::::\n"


def issues_of(directory: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy_set(directory)
    return str(info.value)


def test_symlink_is_refused_and_its_target_never_quoted(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "10-x.yaml").symlink_to(secret)
    message = issues_of(policies)
    assert "10-x.yaml:1:1: is a symbolic link" in message
    assert "SECRET" not in message and "saltsalt" not in message


def test_errors_never_quote_the_file(tmp_path: Path) -> None:
    # A regular file full of secrets (a hard link, a careless copy) is reported by position only.
    messages = []
    for text in (SECRET, "name: x\nname: x\n" + SECRET,
                 "rules:\n  - {name: r, detectors: [hunter2]}\n",
                 "storage: {mode: hunter2}\n", "rules:\n  - {name: r, detectors: [email], "
                 "default: {action: redact, replacement: '{hunter2}'}}\n"):
        (tmp_path / "10-x.yaml").write_text(text)
        messages.append(issues_of(tmp_path))
    message = "\n".join(messages)
    for expected in ("unknown key", "duplicate key", "unknown detector", "expected 'full'",
                     "unknown placeholder"):
        assert expected in message, expected
    for leaked in ("HASHEDSECRET", "OTHERSECRET", "bob", "hunter2", "$6$"):
        assert leaked not in message, leaked
    (tmp_path / "10-x.yaml").write_text("name: x\nrules: [\t{SECRETKEY\n")
    message = issues_of(tmp_path)
    assert "invalid YAML" in message and "SECRETKEY" not in message


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "10-pipe.yaml")
    assert "10-pipe.yaml:1:1: is not a regular file" in issues_of(tmp_path)


def test_alias_bomb_is_refused_cheaply(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    bomb = tmp_path / "10-bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nname: boom\n")
    assert bomb.stat().st_size < 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = issues_of(tmp_path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "10-bomb.yaml:1:4: invalid YAML: anchors (&name) and aliases (*name) are not " \
           "allowed" in message
    assert grown_mb < 50


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    (tmp_path / "10-deep.yaml").write_text("name: " + "[" * 20000 + "]" * 20000 + "\n")
    assert "nested deeper than" in issues_of(tmp_path)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "10-big.yaml"
    words = "\n".join(f"      - word{i}" for i in range(40000))
    big.write_text(f"name: big\ndetectors:\n  - name: many\n    words:\n{words}\n")
    assert big.stat().st_size > MAX_POLICY_BYTES
    assert "10-big.yaml:1:1: is larger than 256 KiB" in issues_of(tmp_path)


def test_users_directory_must_not_be_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "1000.yaml").write_text("name: theirs\n")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "users").symlink_to(elsewhere)
    assert "users:1:1: is a symbolic link" in issues_of(policies)


def test_hidden_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "10-a.yaml").write_text("name: a\n")
    (tmp_path / ".#10-a.yaml").symlink_to("root@host.1234")  # an editor's lock file
    assert load_policy_set(tmp_path).shared.name == "a"


@pytest.mark.parametrize("make_bad", ["symlink", "bomb", "huge"])
async def test_a_hostile_file_keeps_the_previous_policy(tmp_path: Path, make_bad: str) -> None:
    target = tmp_path / "10-policy.yaml"
    target.write_text(valid(1))
    watcher = PolicyWatcher(tmp_path, load_policy_set(tmp_path), debounce_s=0.05, settle_s=0)
    watcher.start()
    try:
        good = watcher.current
        bad = tmp_path / "20-bad.yaml"
        if make_bad == "symlink":
            (tmp_path / "secret").write_text(SECRET)
            bad.symlink_to(tmp_path / "secret")
        elif make_bad == "bomb":
            bad.write_text("a: &a [1, 2]\nb: [*a, *a]\n")
        else:
            bad.write_text("name: huge\ndescription: " + "x" * (MAX_POLICY_BYTES + 1) + "\n")
        await wait_for(lambda: watcher.last_error is not None)
        assert watcher.current is good
        assert "SECRET" not in str(watcher.last_error)
    finally:
        await watcher.stop()


async def test_half_written_file_is_never_applied(tmp_path: Path) -> None:
    """A save in place that pauses longer than the debounce: its first half parses (a policy
    with no rules, so e-mails would pass) but must never be put in force."""
    target = tmp_path / "10-policy.yaml"
    target.write_text(valid(1))
    swaps: list[PolicySet] = []
    watcher = PolicyWatcher(tmp_path, load_policy_set(tmp_path), on_swap=swaps.append,
                            debounce_s=0.05, settle_s=0.6)
    watcher.start()
    try:
        complete = valid(2)
        head = complete.split("rules:")[0]
        with target.open("w") as f:  # truncate, then write in two bursts
            f.write(head)
            f.flush()
            await asyncio.sleep(0.35)
            f.write(complete[len(head):])
        await wait_for(lambda: watcher.current.shared.name == "gen2", timeout=10)
        await asyncio.sleep(0.3)
        assert all(s.shared.policy.rules for s in swaps), "a half-written policy was applied"
        assert watcher.current.shared.apply("input", "a@b.org").text == "[EMAIL-2]"
    finally:
        await watcher.stop()


def test_settled_file_is_read_at_once(tmp_path: Path) -> None:
    target = tmp_path / "10-policy.yaml"
    target.write_text(valid(1))
    os.utime(target, (1_000_000_000, 1_000_000_000))  # long unchanged: no waiting
    assert load_policy_set(tmp_path, settle_s=30).shared.name == "gen1"


def test_created_directories_are_private(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "state" / "deep" / "audit.jsonl")
    assert audit.path.parent.exists()
    for directory in (tmp_path / "state", tmp_path / "state" / "deep"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


async def test_watcher_creates_a_private_policy_directory(tmp_path: Path) -> None:
    policies = tmp_path / "config" / "hush" / "policies"
    watcher = PolicyWatcher(policies, load_policy_set(policies), settle_s=0)
    watcher.start()
    try:
        for directory in (tmp_path / "config", tmp_path / "config" / "hush", policies):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    finally:
        await watcher.stop()


def test_one_file_check_uses_the_same_reader(tmp_path: Path) -> None:
    link = tmp_path / "p.yaml"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(PolicyError, match="is a symbolic link"):
        load_policy_file(link)
