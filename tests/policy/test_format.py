"""Policy files: exact error locations, merge order, shipped files, and the committed schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hush.daemon.policy.loader import (
    BUILTIN_DEFAULT,
    load_policy_dir,
    load_policy_file,
    load_policy_set,
)
from hush.daemon.policy.schema import schema_text
from hush.daemon.policy.source import PolicyError, read_policy_file

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    return [str(i) for i in info.value.issues]


def test_errors_name_file_line_column_and_expectation(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", """\
name: x
rules:
  - name: a
    detectors: [email]
    output: redcat
  - name: b
    detectors: [email]
    output:
      action: mask
      keep: 3
storage:
  mode: half
""")
    assert errors_of(f) == [
        f"{f}:5:13: rules[0].output: expected an action: allow, redact, mask, pseudonymize, "
        "block or warn, or a mapping with `action:` and its options",
        f"{f}:10:7: rules[1].output: unknown key; check the spelling (docs/policies.md)",
        f"{f}:12:9: storage.mode: expected 'full', 'redacted' or 'none'",
    ]


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", "name: x\nrules: [\n  {name: a\n")
    (issue,) = errors_of(f)
    assert issue.startswith(f"{f}:") and "invalid YAML" in issue


def test_bad_regex_and_unknown_detector_are_located(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", "detectors:\n  - name: x\n    pattern: '('\n")
    (issue,) = errors_of(f)
    assert issue.startswith(f"{f}:3:14: detectors[0].pattern: expected a valid regular")
    g = write(tmp_path / "q.yaml", "rules:\n  - name: r\n    detectors: [email, emial]\n")
    (issue,) = errors_of(g)
    assert issue.startswith(f"{g}:3:24: rules[0].detectors[1]: unknown detector; see")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", "name: a\nname: b\n")
    assert errors_of(f) == [f"{f}:2:1: duplicate key; a key may appear once in a mapping"]


def test_merge_order_and_per_uid(tmp_path: Path) -> None:
    write(tmp_path / "10-base.yaml", """\
name: base
allow: [{value: ok@example.com}]
retention: {max_age_days: 30, max_conversations: 10}
rules:
  - {name: people, detectors: [email], default: redact}
  - {name: cards, detectors: [payment_card], default: redact}
""")
    write(tmp_path / "20-site.yaml", """\
name: site
retention: {max_age_days: 7}
rules:
  - {name: people, detectors: [email], default: {action: redact, replacement: "[mail]"}}
  - {name: cards, enabled: false, detectors: [payment_card]}
""")
    write(tmp_path / "users" / "1000.yaml", "rules:\n  - {name: people, detectors: [email]}\n")
    text = "a@b.org ok@example.com 4111 1111 1111 1111"
    shared = load_policy_dir(tmp_path)
    assert shared.name == "site"
    assert shared.retention.max_age_days == 7 and shared.retention.max_conversations == 10
    assert shared.apply("output", text).text == "[mail] ok@example.com 4111 1111 1111 1111"
    personal = load_policy_dir(tmp_path, uid=1000)
    assert personal.apply("output", text).text == text  # rule replaced: default allow
    assert personal.version != shared.version
    policy_set = load_policy_set(tmp_path)
    assert policy_set.for_uid(1000).version == personal.version
    assert policy_set.for_uid(1001).version == shared.version


def test_strictest_action_wins_across_rules(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", """\
rules:
  - {name: a, detectors: [email], default: warn}
  - {name: b, detectors: [email], output: redact}
""")
    policy = load_policy_file(f)
    assert policy.apply("output", "x@y.org").text == "[EMAIL]"
    assert policy.apply("input", "x@y.org").warnings


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", "name: a\n")
    first = load_policy_file(f).version
    assert load_policy_file(f).version == first
    write(f, "name: a  \n")
    assert load_policy_file(f).version != first


def test_shipped_policies_load_and_default_matches_builtin() -> None:
    for name in ("default", "strict", "clinic"):
        load_policy_file(POLICIES / f"{name}.yaml")
    assert read_policy_file(POLICIES / "default.yaml").policy == read_policy_file(
        BUILTIN_DEFAULT).policy
    assert load_policy_dir(ROOT / "no-such-dir").name == "default"


def test_committed_schema_is_generated() -> None:
    committed = (POLICIES / "schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "policies/schema.json is stale: python -m hush.daemon.policy.schema > policies/schema.json")
    assert json.loads(committed)["additionalProperties"] is False


def test_empty_file_is_an_error_not_allow_everything(tmp_path: Path) -> None:
    # What a reader sees mid-save; swapping to "no rules" would briefly allow everything.
    f = write(tmp_path / "p.yaml", "")
    (issue,) = errors_of(f)
    assert issue.startswith(f"{f}:1:1: the file is empty")


def test_policy_test_and_show_output() -> None:
    from hush.daemon.policy.tools import EXIT_BLOCKED, EXIT_PASSED, dump_policy, render_test

    policy = load_policy_file(POLICIES / "default.yaml")
    out, status = render_test(policy, "mail a@b.org", "output")
    assert (out, status) == ("mail [EMAIL]\n", EXIT_PASSED)
    out, status = render_test(policy, "key AKIAIOSFODNN7EXAMPLE", "input")
    assert status == EXIT_BLOCKED and "AKIA" not in out
    out, status = render_test(policy, "mail a@b.org")
    assert out.splitlines()[:2] == ["input: mail a@b.org", "output: mail [EMAIL]"]
    assert len(out.splitlines()) == 5 and status == EXIT_PASSED
    shown = dump_policy(policy)
    assert shown.startswith(f"# version: {policy.version}\n") and "name: default" in shown
