"""Hostile policy files dropped into a running daemon's policy directory.

The directory starts with the strict example policy (policies/strict.yaml as 10-base.yaml). A
case plants a file (or a link, or a pipe), waits for the watcher's reload, and holds when the
daemon reports a clear error in `status`, keeps the previous policy (same version), echoes
nothing of the file (each carries a canary) in `status`, `policy.show` or its log, has no
traceback in the log, stays under RSS_BOUND_MB of growth and keeps `status` answering. Then the
file is removed and the daemon must be back on the previous policy before the next case.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import common
from .harness import OTHER_UID, Hushd, Lab, Sampler, is_root
from .verdicts import Case, Check, Skip, log_problems, play
from .wire import connect, status_once

RSS_BOUND_MB = 512
LATENCY_BOUND_MS = 1000
BASE = (common.ROOT / "policies" / "strict.yaml").read_text()
EVIL_TEXT = "a" * 26 + "!"
"""Against `(a+)+$`, each extra "a" doubles Python's backtracking (26: seconds)."""
EMAIL = "victim@example.com"

Plant = Callable[[Path, str], list[Path]]
"""Writes the hostile file(s) into the policy directory, given a canary; returns what to
remove afterwards."""


@dataclass(frozen=True)
class Attack:
    name: str
    plant: Plant
    settle_s: float = 6.0
    """How long the reload may take before the case is judged."""
    needs_root: bool = False


def _file(name: str, text: str | bytes) -> Plant:
    def plant(directory: Path, canary: str) -> list[Path]:
        path = directory / name
        data = text.replace("CANARY", canary) if isinstance(text, str) else \
            text.replace(b"CANARY", canary.encode())
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return [path]
    return plant


def _alias_bomb() -> str:
    lines = ["name: bomb", "description: CANARY", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol",'
             ' "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def _secret(target_text: str, link_name: str) -> Plant:
    """A file of uid 65534's that only it may read, and a link to it in the policy dir."""
    def plant(directory: Path, canary: str) -> list[Path]:
        # Named without the canary: an error may name the file, never show what is in it.
        target = directory.parent / f"other-user-{link_name.replace('/', '-')}"
        target.write_text(target_text.replace("CANARY", canary))
        os.chown(target, OTHER_UID, OTHER_UID)
        os.chmod(target, 0o600)
        link = directory / link_name
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(target)
        return [link, target]
    return plant


SHADOW = "".join(f"user{i}:$6$CANARY$Zk{i}q9fL0Tqk1sX2:19700:0:99999:7:::\n" for i in range(12))
CREDENTIALS = ("aws_secret_access_key_CANARY: CANARY\ndb_password: CANARY\n"
               "api_token: CANARY-token\n")


def _fifo(directory: Path, _canary: str) -> list[Path]:
    path = directory / "60-pipe.yaml"
    os.mkfifo(path)
    return [path]


def _python_tag(directory: Path, canary: str) -> list[Path]:
    marker = directory.parent / f"pwned-{canary}"
    path = directory / "50-tag.yaml"
    path.write_text(f"name: CANARY\ndescription: !!python/object/apply:os.system "
                    f"['touch {marker}']\n".replace("CANARY", canary))
    return [path, marker]


REGEX = ("detectors:\n  - name: evil\n    pattern: '(a+)+$'\n    label: CANARY\n"
         "rules:\n  - name: evil_rule\n    detectors: [evil]\n    default: redact\n")

ATTACKS: tuple[Attack, ...] = (
    Attack("YAML alias bomb (9 levels of 9, 600 bytes)", _file("50-bomb.yaml", _alias_bomb()),
           settle_s=60),
    Attack("symlink to another user's shadow-like file", _secret(SHADOW, "50-shadow.yaml"),
           needs_root=True),
    Attack("symlink to another user's YAML credentials",
           _secret(CREDENTIALS, "50-creds.yaml"), needs_root=True),
    Attack("per-user file symlinked to another user's credentials",
           _secret(CREDENTIALS, "users/0.yaml"), needs_root=True),
    Attack("50 MB policy file", _file("50-big.yaml", "name: big\ndescription: '"
                                      + "x" * 50_000_000 + "'\n"), settle_s=90),
    Attack("invalid YAML (unclosed flow)", _file("50-broken.yaml",
                                                 "name: CANARY\nrules: [\n  {name: x\n")),
    Attack("unknown keys", _file("50-typo.yaml", "name: x\nrulez: []\nsecret_note: CANARY\n")),
    Attack("wrong types", _file("50-types.yaml",
                                "name: x\nlimits:\n  max_input_chars: CANARY\nrules: 5\n")),
    Attack("duplicate keys", _file("50-dup.yaml", "name: a\nname: CANARY\n")),
    Attack("python object tag (os.system)", _python_tag),
    Attack("YAML nested 50,000 levels deep",
           _file("50-deep.yaml", "name: CANARY\nx: " + "[" * 50_000 + "]" * 50_000 + "\n")),
    Attack("not UTF-8", _file("50-latin.yaml", b"name: \xff\xfe CANARY \xe9\n")),
    Attack("empty file (an editor's truncate before its write)", _file("10-base.yaml", "")),
    Attack("custom detector with an invalid regex",
           _file("50-badre.yaml", "detectors:\n  - name: bad\n    pattern: '([a-z'\n"
                                  "    label: CANARY\n")),
)


# --- one case ---------------------------------------------------------------------------------


def _policy(daemon: Hushd) -> dict[str, Any] | None:
    _, result = status_once(daemon.socket, 10.0)
    return result.get("policy") if result else None


def _show(daemon: Hushd) -> str:
    raw = connect(daemon.socket, timeout=10.0)
    if raw is None:
        return ""
    try:
        return json.dumps(raw.call("policy.show", timeout=30.0))
    finally:
        raw.close()


def _settle(daemon: Hushd, before: str, timeout: float) -> dict[str, Any] | None:
    """The policy state once the reload after a change is over (an error, or a new version),
    or whatever it is after `timeout`."""
    end = time.monotonic() + timeout
    state = None
    while time.monotonic() < end:
        state = _policy(daemon)
        if state is not None and (state.get("error") or state.get("version") != before):
            time.sleep(1.0)  # a burst of events may bring one more reload
            return _policy(daemon) or state
        if not daemon.alive():
            return None
        time.sleep(0.3)
    return state


def _restore(daemon: Hushd, planted: list[Path], version: str) -> None:
    """Back to the base policy, restarting the daemon if a case left it broken (the files go
    first, so a restarted daemon never meets them at start)."""
    base = daemon.policy_dir / "10-base.yaml"
    for path in planted:
        if path != base and (path.is_symlink() or path.exists()):
            path.unlink()
    if not base.exists() or base.read_text() != BASE:
        base.write_text(BASE)
    time.sleep(1.0)  # the watcher's debounce and the reload that follows the removal
    if not daemon.responsive(5.0):
        daemon.ensure()
    end = time.monotonic() + 20
    while time.monotonic() < end:
        state = _policy(daemon)
        if state is not None and not state.get("error") and state.get("version") == version:
            return
        time.sleep(0.3)
    daemon.kill()
    daemon.start()


def _judge_reload(check: Check, state: dict[str, Any] | None, version: str) -> None:
    if state is None:
        check.fail("status stopped answering")
        return
    rejected = bool(state.get("error"))
    kept = state.get("version") == version
    if not rejected and not kept:
        check.fail("the file was applied")
    elif not rejected:
        check.fail("no error was reported (the file was neither applied nor refused)")
    elif not kept:
        check.fail("an error was reported, but the previous policy was replaced")
    else:
        check.note("rejected with an error, previous policy kept")


def _attack(daemon: Hushd, attack: Attack) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        if attack.needs_root and not is_root():
            raise Skip("needs root to make another user's file")
        daemon.ensure()
        before = _policy(daemon)
        assert before is not None and not before.get("error"), "the base policy is not in force"
        version = str(before["version"])
        canary = f"rt{os.urandom(8).hex()}"
        mark = daemon.log_mark()
        planted: list[Path] = []
        try:
            with Sampler(daemon) as sampler:
                planted = attack.plant(daemon.policy_dir, canary)
                state = _settle(daemon, version, attack.settle_s)
            _judge_reload(check, state, version)
            sampler.judge(check, rss_bound_mb=RSS_BOUND_MB, latency_bound_ms=LATENCY_BOUND_MS)
            shown = json.dumps(state) + _show(daemon)
            check.require(canary not in shown, "the file's content was echoed by status or "
                          "policy.show")
            check.require(not any(p.name.startswith("pwned-") and p.exists() for p in planted),
                          "the YAML ran a command")
        finally:
            _restore(daemon, planted, version)
        # Read after the restore: a reload task that crashed is only reported ("exception was
        # never retrieved") once the next reload replaces it.
        log = daemon.log_since(mark)
        check.require(canary not in log, "the file's content was written to the log")
        for problem in log_problems(log):
            check.fail(problem)

    return run


# --- cases with a story of their own ---------------------------------------------------------


def _policy_test(daemon: Hushd, text: str, timeout: float) -> tuple[float | None, str | None]:
    """(seconds, output) of a `policy.test` of `text` as input; (None, None) without answer."""
    raw = connect(daemon.socket, timeout=10.0)
    if raw is None:
        return None, None
    started = time.monotonic()
    try:
        frame = raw.call("policy.test", {"text": text, "direction": "input"}, timeout=timeout)
    finally:
        raw.close()
    if frame.get("type") != "done":
        return None, None
    return time.monotonic() - started, str(frame.get("result", {}).get("output"))


def _half_written(daemon: Hushd) -> Callable[[Check], None]:
    """10-base.yaml rewritten in place, the writer pausing halfway: the first half is a valid
    policy without the personal-data rule. An e-mail must not pass while it is half written."""
    pause_s = 1.5

    def run(check: Check) -> None:
        daemon.ensure()
        before = _policy(daemon)
        assert before is not None and not before.get("error"), "the base policy is not in force"
        version = str(before["version"])
        _, out = _policy_test(daemon, f"Write to {EMAIL} please.", 10)
        check.require(out is not None and EMAIL not in out, "the base policy lets e-mails in")
        cut = BASE.index("  - name: personal_data")
        path = daemon.policy_dir / "10-base.yaml"
        try:
            with path.open("r+b") as file:
                file.truncate(0)
                file.write(BASE[:cut].encode())
                file.flush()
                time.sleep(pause_s - 0.3)
                _, during = _policy_test(daemon, f"Write to {EMAIL} please.", 10)
                state = _policy(daemon)
                file.write(BASE[cut:].encode())
            check.require(state is not None and state.get("version") == version,
                          f"the half-written file was applied {pause_s:g} s into the write")
            check.require(during is not None and EMAIL not in during,
                          "an e-mail passed the input rules while the file was half written")
            check.note(f"the half-written file was not applied ({pause_s:g} s pause)")
        finally:
            _restore(daemon, [], version)

    return run


def _catastrophic(daemon: Hushd) -> Callable[[Check], None]:
    """`(a+)+$` in a custom detector: refused, or run so that it cannot freeze anyone."""
    def run(check: Check) -> None:
        daemon.ensure()
        before = _policy(daemon)
        assert before is not None and not before.get("error"), "the base policy is not in force"
        version = str(before["version"])
        path = daemon.policy_dir / "50-regex.yaml"
        try:
            path.write_text(REGEX.replace("CANARY", "EVIL"))
            code, _, _ = daemon.hush("policy", "check", str(path), timeout=30)
            check.figures["policy_check_exit"] = code
            state = _settle(daemon, version, 6.0)
            if state is not None and state.get("error") and state.get("version") == version:
                check.note("rejected by the daemon, previous policy kept")
                return
            check.require(code not in (0, None), "`hush policy check` accepts it")
            with Sampler(daemon, ping_s=0.2, ping_timeout=30.0) as sampler:
                seconds, _ = _policy_test(daemon, EVIL_TEXT, 60)
            check.figures["evil_text_s"] = None if seconds is None else round(seconds, 2)
            if seconds is None:
                check.fail(f"a {len(EVIL_TEXT)}-character text got no answer within 60 s")
            else:
                check.require(seconds <= 2.0, f"a {len(EVIL_TEXT)}-character text took "
                              f"{seconds:.1f} s to check")
            sampler.judge(check, rss_bound_mb=RSS_BOUND_MB, latency_bound_ms=250)
        finally:
            _restore(daemon, [path], version)

    return run


def _fifo_case(daemon: Hushd) -> Callable[[Check], None]:
    """A named pipe called 60-pipe.yaml: a reload must not hang on it, and must either refuse
    it with an error or skip it and go on applying changes."""
    def run(check: Check) -> None:
        daemon.ensure()
        before = _policy(daemon)
        assert before is not None, "status does not answer"
        version = str(before["version"])
        planted = _fifo(daemon.policy_dir, "")
        after = daemon.policy_dir / "70-after.yaml"
        try:
            with Sampler(daemon) as sampler:
                time.sleep(2.0)
                after.write_text("description: written after the pipe\n")
                state = _settle(daemon, version, 10.0)
            sampler.judge(check, rss_bound_mb=RSS_BOUND_MB, latency_bound_ms=LATENCY_BOUND_MS)
            # Either defence holds: the pipe refused with an error (previous policy kept), or
            # skipped so that the next change applies. Silence with nothing applied does not.
            if state is None:
                check.fail("status stopped answering")
            elif state.get("error"):
                if check.require(state.get("version") == version,
                                 "an error was reported, but the previous policy was replaced"):
                    check.note("refused with an error, previous policy kept")
            elif check.require(state.get("version") != version,
                               "no error, and the next valid change was never applied "
                               "(reloads stopped)"):
                check.note("ignored; the next change still applied")
        finally:
            _restore(daemon, [*planted, after], version)

    return run


def run(lab: Lab) -> list[Case]:
    daemon = lab.daemon("policy", policies={"10-base.yaml": BASE})
    daemon.start()
    try:
        cases = [play("policy", attack.name, _attack(daemon, attack),
                      budget_s=attack.settle_s + 90) for attack in ATTACKS]
        cases.append(play("policy", "half-written file, the writer pausing 1.5 s",
                          _half_written(daemon), budget_s=60))
        cases.append(play("policy", "catastrophic regex (a+)+$ in a custom detector",
                          _catastrophic(daemon), budget_s=150))
        cases.append(play("policy", "named pipe called 60-pipe.yaml", _fifo_case(daemon),
                          budget_s=60))
        return cases
    finally:
        daemon.stop()
