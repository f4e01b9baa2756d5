"""Reading one policy file: YAML with the position of every node, so errors say file:line:col.

PyYAML's composer keeps a start mark on each node; we keep them keyed by the path pydantic
reports (`("rules", 0, "output")`), then translate each validation error to the deepest node of
its path that exists in the file.

A policy file is treated as hostile until it validates (docs/security.md):

- it is opened with O_NOFOLLOW and must be a regular file of at most MAX_POLICY_BYTES, so a
  symbolic link to /etc/shadow, a FIFO or a 50 MB file is refused before a byte is parsed;
- YAML anchors and aliases are refused (a 330-byte alias bomb expands to gigabytes), and so is
  nesting deeper than MAX_DEPTH;
- no error message quotes the file: only its path, line, column and the schema's own names, so
  neither `hush status` nor the log can show another user what a file contains;
- with `settle_s`, a file is used only once it has stopped changing (see `read_stable`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import HushError
from .model import Policy

Loc = tuple[str | int, ...]

MAX_POLICY_BYTES = 256 * 1024
"""Largest policy file read. The shipped ones are a few KB; a merged policy must also fit in
one `hush policy show` frame (1 MiB)."""
MAX_DEPTH = 32
"""Deepest nesting of YAML collections; a policy needs five."""
SETTLE_ROUNDS = 10
"""A file still changing after this many settle intervals is reported, not waited for."""


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
                where = f"{_dotted(loc)}: " if loc else ""
                issues.append(((*loc, key, "<key>"),
                               f"{where}duplicate key; a key may appear once in a mapping"))
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
        # The key itself is file content: name where it is, never what it says.
        yield (*loc, "<key>"), (f"{_dotted(loc[:-1])}: unknown key; check the spelling "
                                "(docs/policies.md)")
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


class _Loader(yaml.SafeLoader):
    """SafeLoader without anchors or aliases, and with bounded nesting."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors (&name) and aliases (*name) are not allowed in policy "
                "files; write each value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _issue(path: Path, message: str) -> PolicyError:
    return PolicyError([Issue(str(path), 1, 1, message)])


def _read_regular(path: Path) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file, not following a symbolic link, at most MAX_POLICY_BYTES."""
    # O_NONBLOCK: a FIFO planted under a policy name must not hang the reload.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _issue(path, "is a symbolic link; policy files must be regular files (copy "
                         "the file into the policy directory instead of linking it)") from None
        raise _issue(path, f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _issue(path, "is not a regular file; policy files must be regular files")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_POLICY_BYTES and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _issue(path, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_POLICY_BYTES:
        raise _issue(path, f"is larger than {MAX_POLICY_BYTES // 1024} KiB, the most a policy "
                     "file may hold; split it or shorten its word lists")
    return b"".join(chunks), info


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns)


def read_stable(path: Path, settle_s: float) -> bytes:
    """The file's bytes once it has stopped changing.

    A file saved in place can parse while half written. So a file modified less than
    `settle_s` ago is read again once it is `settle_s` old, and used only if the bytes, size,
    mtime and inode are the same both times; otherwise it is waited for again, and after
    SETTLE_ROUNDS intervals reported as still being written. A writer that pauses for longer
    than `settle_s` mid-file is not told apart: write a temporary file and rename it over the
    policy (docs/policies.md), which is always safe.
    """
    raw, info = _read_regular(path)
    for _ in range(SETTLE_ROUNDS):
        age = time.time() - info.st_mtime
        if age >= settle_s:
            return raw
        time.sleep(min(settle_s, settle_s - age))
        again, later = _read_regular(path)
        if again == raw and _same_file(info, later):
            return raw
        raw, info = again, later
    raise _issue(path, f"is still being written (it changed during {SETTLE_ROUNDS} intervals "
                 f"of {settle_s:g} s); the previous policy stays in force until it settles")


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    # PyYAML quotes the offending characters or tags (%r); those are file content.
    return re.sub(r"'[^']*'|\"[^\"]*\"", "a character", exc.problem or "invalid YAML")


def read_policy_file(path: Path, *, settle_s: float = 0.0) -> PolicySource:
    """Parse and validate one policy file; raises PolicyError with file:line:col.

    With `settle_s` > 0 a file that was just modified is used only once it stops changing.
    """
    raw = read_stable(path, settle_s) if settle_s > 0 else _read_regular(path)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _issue(path, f"expected UTF-8 text ({exc.reason})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PolicyError([Issue(str(path), line, col,
                                 f"invalid YAML: {_yaml_problem(exc)}")]) from None
    except yaml.YAMLError:
        raise _issue(path, "invalid YAML") from None
    finally:
        loader.dispose()
    marks: dict[Loc, tuple[int, int]] = {}
    problems: list[tuple[Loc, str]] = []
    if node is not None:
        _walk(node, (), marks, problems)
    if data is None:
        # An empty file is what a reader sees mid-save (truncate, then write): treating it as
        # "no rules" would switch a live daemon to allow-everything for a moment.
        raise _issue(path, "the file is empty; expected a mapping of policy keys (write "
                     "`name: ...` to start)")
    if not isinstance(data, dict):
        raise _issue(path, "expected a mapping of policy keys (name, rules, detectors, ...) "
                     "at the top level")
    if problems:
        raise PolicyError([Issue(str(path), *_position(marks, loc), msg) for loc, msg in problems])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        issues = [Issue(str(path), *_position(marks, loc), msg)
                  for loc, msg in _describe(exc.errors(include_url=False))]
        raise PolicyError(sorted(issues, key=lambda i: (i.line, i.column))) from None
    return PolicySource(path=path, raw=raw, policy=policy, marks=marks)
