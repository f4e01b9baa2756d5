"""Reading one policy file: YAML with the position of every node, so errors say file:line:col.

PyYAML's composer keeps a start mark on each node; we keep them keyed by the path pydantic
reports (`("rules", 0, "output")`), then translate each validation error to the deepest node of
its path that exists in the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import HushError
from .model import Policy

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    """One problem in a policy file, at a position people can jump to (1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyError(HushError):
    """A policy that cannot be used; every issue names its file, line and column."""

    code = "policy"

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = tuple(issues)


@dataclass(frozen=True)
class PolicySource:
    """One validated policy file, with what is needed to report later (merge-time) errors."""

    path: Path
    raw: bytes
    policy: Policy
    marks: dict[Loc, tuple[int, int]]

    def issue(self, loc: Loc, message: str) -> Issue:
        line, col = _position(self.marks, loc)
        return Issue(str(self.path), line, col, message)


def _walk(node: yaml.Node, loc: Loc, marks: dict[Loc, tuple[int, int]],
          issues: list[tuple[Loc, str]]) -> None:
    marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key in seen:
                marks[(*loc, key, "<key>")] = (key_node.start_mark.line + 1,
                                               key_node.start_mark.column + 1)
                issues.append(((*loc, key, "<key>"), f"duplicate key {key!r}"))
            seen.add(key)
            # Unknown keys are reported at the key itself, where the typo is.
            marks[(*loc, key, "<key>")] = (key_node.start_mark.line + 1,
                                           key_node.start_mark.column + 1)
            _walk(value_node, (*loc, key), marks, issues)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), marks, issues)


def _position(marks: dict[Loc, tuple[int, int]], loc: Loc) -> tuple[int, int]:
    """Deepest recorded node along `loc`; pydantic adds union branch names we skip over."""
    best: Loc = ()
    current: Loc = ()
    for part in loc:
        candidate = (*current, part)
        if candidate in marks:
            current = candidate
            best = current
    return marks.get(best, (1, 1))


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _strip(loc: Loc) -> tuple[Loc, bool]:
    """Drop the union branch names pydantic puts in a location; say whether there were any."""
    out: list[str | int] = []
    in_union = skip_tag = False
    for part in loc:
        text = str(part)
        if text.startswith("literal["):
            in_union = True
        elif text.startswith("tagged-union["):
            in_union = skip_tag = True
        elif skip_tag:
            skip_tag = False  # the tag (e.g. "mask") names the branch, not a key in the file
        else:
            out.append(part)
    return tuple(out), in_union


_ACTION_EXPECTED = ("expected an action: allow, redact, mask, pseudonymize, block or warn, "
                    "or a mapping with `action:` and its options")


def _describe(errors: list[Any]) -> Iterator[tuple[Loc, str]]:
    """A readable 'what was expected' per location.

    An action is a bare name or a mapping, so a bad one fails both union branches; when the
    user wrote a mapping only the mapping branch's errors matter, otherwise say what an action is.
    """
    unions: dict[Loc, list[tuple[Loc, Any]]] = {}
    for err in errors:
        loc, in_union = _strip(tuple(err["loc"]))
        if in_union:
            unions.setdefault(_union_root(tuple(err["loc"])), []).append((loc, err))
            continue
        yield from _one(loc, err)
    for root, items in unions.items():
        branch = [(loc, e) for loc, e in items
                  if "tagged-union[" in "".join(map(str, e["loc"]))
                  and e["type"] not in ("model_attributes_type", "union_tag_invalid")]
        if branch:
            for loc, err in branch:
                yield from _one(loc, err)
        else:
            yield root, f"{_dotted(root)}: {_ACTION_EXPECTED}"


def _union_root(loc: Loc) -> Loc:
    for i, part in enumerate(loc):
        if str(part).startswith(("literal[", "tagged-union[")):
            return loc[:i]
    return loc


def _one(loc: Loc, err: Any) -> Iterator[tuple[Loc, str]]:
    field = _dotted(loc)
    if err["type"] == "extra_forbidden":
        yield (*loc, "<key>"), f"{field}: unknown key; check the spelling (docs/policies.md)"
    elif err["type"] == "value_error":
        yield loc, f"{field}: {_expected(err['msg'])}"
    elif err["type"] == "missing":
        yield loc, f"{field}: required key missing"
    else:
        yield loc, f"{field}: expected {_expected(err['msg'])}"


def _expected(msg: str) -> str:
    # pydantic says "Input should be ..."; the issue asks for what was expected.
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[:1].lower() + msg[1:]


def read_policy_file(path: Path) -> PolicySource:
    """Parse and validate one policy file; raises PolicyError with file:line:col."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError([Issue(str(path), 1, 1, f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([Issue(str(path), 1, 1, f"expected UTF-8 text ({exc.reason})")]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or "invalid YAML"
        raise PolicyError([Issue(str(path), line, col, f"invalid YAML: {what}")]) from None
    finally:
        loader.dispose()
    marks: dict[Loc, tuple[int, int]] = {}
    problems: list[tuple[Loc, str]] = []
    if node is not None:
        _walk(node, (), marks, problems)
    if data is None:
        # An empty file is what a reader sees mid-save (truncate, then write): treating it as
        # "no rules" would switch a live daemon to allow-everything for a moment.
        raise PolicyError([Issue(str(path), 1, 1, "the file is empty; expected a mapping of "
                                 "policy keys (write `name: ...` to start)")])
    if not isinstance(data, dict):
        raise PolicyError([Issue(str(path), 1, 1, "expected a mapping of policy keys "
                                 "(name, rules, detectors, ...) at the top level")])
    if problems:
        raise PolicyError([Issue(str(path), *_position(marks, loc), msg) for loc, msg in problems])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        issues = [Issue(str(path), *_position(marks, loc), msg)
                  for loc, msg in _describe(exc.errors(include_url=False))]
        raise PolicyError(sorted(issues, key=lambda i: (i.line, i.column))) from None
    return PolicySource(path=path, raw=raw, policy=policy, marks=marks)
