"""Policy authors' patterns: re's meaning, refused when they backtrack, bounded when they run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import regex

from hush.daemon.policy import PolicyError, load_policy_file
from hush.daemon.policy.patterns import PatternTimeout, budget, compile_pattern, finditer


def test_patterns_keep_unicode_words_and_lookarounds() -> None:
    # RE2 would cut "José" to "Jos" and refuse the lookbehind.
    found = [m.group() for m in compile_pattern(r"(?<!\d)\w+").finditer("José and Zoë")]
    assert found == ["José", "and", "Zoë"]


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a|aa)+$", "(\\d+)*$", "x(y|yy)+,"])
def test_catastrophic_patterns_are_refused_when_compiled(pattern: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="catastrophic backtracking"):
        compile_pattern(pattern)
    assert time.monotonic() - started < 5


def test_a_slow_search_fails_closed_within_its_budget() -> None:
    slow = regex.compile(r"(a|aa)+$")  # compiled here without the probe, to reach the budget
    text = "a" * 40 + "!"
    started = time.monotonic()
    with pytest.raises(PatternTimeout) as info:
        list(finditer(slow, text, "slow"))
    assert time.monotonic() - started < budget(text) + 2
    assert info.value.code == "policy" and "detector slow" in info.value.message


def test_allow_list_patterns_are_checked_too(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("allow:\n  - pattern: '(a|aa)+$'\n")
    with pytest.raises(PolicyError, match=r"p.yaml:2:14: allow\[0\].pattern: .*catastrophic"):
        load_policy_file(f)
