"""docs/protocol.md against daemon/protocol.py: the method, event and error tables.

Like policies/schema.json against its models, the docs cannot fall behind the code: each table
is rendered from protocol.py's types and compared with what the docs show, so a method, field,
event or error code added on one side and not the other fails here, saying what differs.
Only the columns that name things are compared; the prose beside them is the docs' own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from hush.daemon import protocol

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
TICKED = re.compile(r"`([^`]+)`")


def table(heading: str) -> list[list[str]]:
    """The rows (cells, header and rule left out) of the first table under `## heading`."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def render_methods() -> list[tuple[str, list[str]]]:
    return [(name, sorted(params.model_fields)) for name, params in protocol.METHODS.items()]


def render_events() -> list[tuple[str, str]]:
    """Each event's type and its fields, optional ones marked, as the docs' table shows them."""
    rows = []
    for event in get_args(protocol.Event):
        # Lazy annotations: TypedDict keeps each as a ForwardRef of its source text.
        hints = {name: ref.__forward_arg__ for name, ref in event.__annotations__.items()}
        match = re.fullmatch(r"Literal\['(\w+)'\]", hints.pop("type").replace('"', "'"))
        assert match, event
        fields = [f"`{name}`" + (" (optional)" if hint.startswith("NotRequired[") else "")
                  for name, hint in hints.items()]
        rows.append((f"`{match[1]}`", ", ".join(fields)))
    return rows


def test_methods_table_lists_every_method_and_its_params() -> None:
    shown = []
    for method, params, _answer in table("Requests"):
        (name,) = TICKED.findall(method)
        # The params cell is prose; of the names ticked in it, keep those the method takes.
        fields = set(protocol.METHODS[name].model_fields) if name in protocol.METHODS else set()
        shown.append((name, sorted(set(TICKED.findall(params)) & fields)))
    assert shown == render_methods(), (
        "docs/protocol.md's method table differs from protocol.METHODS (names, order, params)")


def test_events_table_matches_the_event_types() -> None:
    shown = [(row[0], row[1]) for row in table("Events")]
    assert shown == render_events(), (
        "docs/protocol.md's event table differs from protocol.Event; its rows should be:\n"
        + "\n".join(f"| {name} | {fields} |" for name, fields in render_events()))


def test_error_table_documents_every_code_and_no_other() -> None:
    shown = {code for row in table("Error codes") for code in TICKED.findall(row[0])}
    codes = set(get_args(protocol.ErrorCode))
    assert not codes - shown, f"codes missing from docs/protocol.md: {sorted(codes - shown)}"
    assert not shown - codes, f"docs/protocol.md documents unknown codes: {sorted(shown - codes)}"
