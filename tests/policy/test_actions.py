"""Actions per direction, pseudonyms, allow-lists, storage modes, limits and the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

from hush.daemon.policy.audit import AuditLog
from hush.daemon.policy.compiled import CompiledPolicy
from hush.daemon.policy.loader import load_policy_file
from hush.daemon.policy.pseudonyms import Pseudonyms
from hush.daemon.policy.stream import StreamRedactor

POLICY = """\
name: t
detectors:
  - {name: topic, words: [secret project]}
allow:
  - {value: help@example.org}
  - {pattern: '.*@internal\\.example', detectors: [email]}
rules:
  - name: people
    detectors: [email, phone]
    default: redact
    input: pseudonymize
    output: {action: redact, replacement: "<<{rule}:{label}>>"}
    export: warn
  - name: cards
    detectors: [payment_card]
    default: {action: mask, keep_last: 4, char: "#"}
  - name: keys
    detectors: [aws_access_key]
    default: {action: block, message: "No keys ({label}, rule {rule})."}
  - name: topics
    detectors: [topic]
    output: warn
storage: {mode: redacted}
limits: {max_input_chars: 100, document_types: [text/plain]}
"""


def policy(tmp_path: Path, text: str = POLICY) -> CompiledPolicy:
    f = tmp_path / "p.yaml"
    f.write_text(text, encoding="utf-8")
    return load_policy_file(f)


def test_actions_per_direction(tmp_path: Path) -> None:
    p = policy(tmp_path)
    text = "Write to ann@example.com about card 4111-1111-1111-1111."
    assert p.apply("output", text).text == (
        "Write to <<people:EMAIL>> about card ####-####-####-1111.")
    # Storage mode `redacted` turns anything weaker than redact (here: mask) into redact.
    assert p.apply("storage", text).text == "Write to [EMAIL] about card [PAYMENT_CARD]."
    export = p.apply("export", text)
    assert export.text.startswith("Write to ann@example.com")
    assert export.warnings == ("The text contains EMAIL (policy rule 'people').",)
    assert [(f.rule, f.action, f.count) for f in export.findings] == [
        ("cards", "mask", 1), ("people", "warn", 1)]


def test_pseudonymize_round_trip(tmp_path: Path) -> None:
    p = policy(tmp_path)
    names = Pseudonyms()
    text = "ann@example.com, bob@example.com and ANN@example.com"
    seen = p.apply("input", text, pseudonyms=names)
    assert seen.text == "<EMAIL_1>, <EMAIL_2> and <EMAIL_1>"
    assert "ann" not in seen.text
    assert names.restore(seen.text) == "ann@example.com, bob@example.com and ann@example.com"
    again = Pseudonyms.from_json(names.to_json())
    assert again.placeholder("EMAIL", "bob@example.com") == "<EMAIL_2>"
    assert again.placeholder("EMAIL", "cy@example.com") == "<EMAIL_3>"
    restorer = names.restorer()
    model_reply = "I wrote to <EMAIL_2> and <EMAIL_9>."
    out = "".join(restorer.push(c) for c in model_reply) + restorer.finish()
    assert out == "I wrote to bob@example.com and <EMAIL_9>."


def test_block_message_and_blocked_stream(tmp_path: Path) -> None:
    p = policy(tmp_path)
    decision = p.apply("input", "my key AKIAIOSFODNN7EXAMPLE")
    assert decision.blocked and decision.text == ""
    assert decision.block_message == "No keys (SECRET, rule keys)."
    stream = StreamRedactor(p, "output")
    released = stream.push("fine so far. key AKIAIOSFOD") + stream.push("NN7EXAMPLE and more")
    released += stream.push(" text") + stream.finish()
    assert stream.blocked and "AKIA" not in released and released == "fine so far. key "


def test_allow_list_and_words(tmp_path: Path) -> None:
    p = policy(tmp_path)
    text = "help@example.org, ops@internal.example, x@y.org on the Secret  Project"
    out = p.apply("output", text)
    assert out.text == ("help@example.org, ops@internal.example, <<people:EMAIL>> on the "
                        "Secret  Project")
    assert out.warnings == ("The text contains TOPIC (policy rule 'topics').",)


def test_storage_none_and_limits(tmp_path: Path) -> None:
    p = policy(tmp_path, POLICY.replace("mode: redacted", "mode: none"))
    stored = p.apply("storage", "anything")
    assert stored.blocked and stored.text == ""
    assert p.check_input("x" * 101) is not None and p.check_input("x" * 100) is None
    refusal = p.check_document(10, "application/pdf")
    assert refusal is not None and refusal.code == "unsupported"
    assert p.check_document(10, "text/plain") is None
    assert p.network_deny


def test_stream_holds_back_only_a_pending_match(tmp_path: Path) -> None:
    p = policy(tmp_path)
    s = StreamRedactor(p, "output")
    assert s.push("Hello there, my friend ") == "Hello there, my friend "
    assert s.held == 0
    assert s.push("call +44 20 79") == "call "
    assert s.push("46 0958 now") == "[PHONE]".replace("[PHONE]", "<<people:PHONE>>") + " "
    assert s.finish() == "now"


def test_audit_never_contains_matched_text(tmp_path: Path) -> None:
    p = policy(tmp_path)
    secret_values = ["ann@example.com", "4111-1111-1111-1111", "+44 20 7946 0958"]
    decision = p.apply("output", " ".join(secret_values))
    log = AuditLog(tmp_path / "audit" / "policy.jsonl")
    assert log.write(decision.findings, request_id="r1", policy_version=decision.policy_version,
                     uid=1000) == 3
    raw = (tmp_path / "audit" / "policy.jsonl").read_text()
    for value in [*secret_values, "1111", "ann", "7946"]:
        assert value not in raw
    records = [json.loads(line) for line in raw.splitlines()]
    assert {r["detector"] for r in records} == {"email", "payment_card", "phone"}
    assert set(records[0]) == {"time", "request", "uid", "policy", "rule", "detector",
                               "direction", "action", "count"}
    assert (tmp_path / "audit" / "policy.jsonl").stat().st_mode & 0o777 == 0o600
