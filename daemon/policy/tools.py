"""What `hush policy check|test|show` need, so the CLI and the daemon answer the same way."""

from __future__ import annotations

import yaml

from .compiled import CompiledPolicy, Decision
from .model import DIRECTIONS, Direction

EXIT_PASSED = 0
EXIT_INVALID = 2
EXIT_BLOCKED = 3


def dump_policy(policy: CompiledPolicy) -> str:
    """The merged policy as YAML with its version and sources, for `hush policy show`."""
    head = f"# version: {policy.version}\n" + "".join(f"# source: {s}\n" for s in policy.sources)
    body = yaml.safe_dump(policy.policy.model_dump(mode="json"), sort_keys=False,
                          allow_unicode=True)
    return head + body


def render_test(policy: CompiledPolicy, text: str,
              direction: Direction | None = None) -> tuple[str, int]:
    """stdout and exit status of `hush policy test`: the text as passed on, or the block
    message; every direction labelled when none is given."""
    directions: tuple[Direction, ...] = (direction,) if direction else DIRECTIONS
    results: list[tuple[Direction, Decision]] = [(d, policy.apply(d, text)) for d in directions]
    shown = [(d, (r.block_message or "") if r.blocked else r.text) for d, r in results]
    out = shown[0][1] if direction else "\n".join(f"{d}: {t}" for d, t in shown)
    blocked = any(r.blocked for _, r in results)
    return out + "\n", EXIT_BLOCKED if blocked else EXIT_PASSED
