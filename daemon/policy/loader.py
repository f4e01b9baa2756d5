"""A policy directory: several files merged in a documented order, optionally per user.

Order (docs/policies.md): every `*.yaml` / `*.yml` directly in the directory, sorted by file name
(so `10-base.yaml` comes before `50-clinic.yaml`), then `users/<uid>.yaml` for that uid. Names
starting with a dot (editors' lock and swap files) are skipped; anything else with a policy
suffix that is not a regular file (a symbolic link, a FIFO) is an error, not silently skipped. Later
files override scalars and settings key by key, replace rules and custom detectors of the same
name (adding new ones after), and extend the allow-list. The version is a hash of the files'
names and bytes in that order, so it changes exactly when what was merged changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .compiled import CompiledPolicy, UnknownDetector
from .model import Policy
from .source import Issue, PolicyError, PolicySource, read_policy_file

BUILTIN_DEFAULT = Path(__file__).with_name("default.yaml")
USERS_DIR = "users"


def _candidates(directory: Path) -> list[Path]:
    # is_dir / is_symlink do not follow the link: a link is read (and refused) by source.py.
    return sorted((p for p in directory.glob("*") if p.suffix in (".yaml", ".yml")
                   and not p.name.startswith(".")
                   and (p.is_symlink() or not p.is_dir())), key=lambda p: p.name)


def _users_dir(directory: Path) -> Path | None:
    users = directory / USERS_DIR
    if users.is_symlink():
        raise PolicyError([Issue(str(users), 1, 1, "is a symbolic link; the users directory "
                                 "must be a real directory inside the policy directory")])
    return users if users.is_dir() else None


def policy_files(directory: Path, uid: int | None = None) -> list[Path]:
    """The files that make up the policy for `uid` (None: the shared part), in merge order."""
    found = _candidates(directory)
    users = _users_dir(directory)
    if uid is not None and users is not None:
        for suffix in (".yaml", ".yml"):
            personal = users / f"{uid}{suffix}"
            if personal.is_symlink() or personal.exists():
                found.append(personal)
                break
    return found


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in layer.items():
        if key in ("rules", "detectors"):
            by_name = {item["name"]: item for item in merged.get(key, [])}
            for item in value:
                by_name[item["name"]] = item  # replaces whole; insertion order keeps new last
            merged[key] = list(by_name.values())
        elif key == "allow":
            merged[key] = [*merged.get(key, []), *value]
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def merge_sources(sources: list[PolicySource]) -> CompiledPolicy:
    """Merge validated files in order and compile; errors point into the file responsible."""
    data: dict[str, Any] = {}
    origin: dict[tuple[str, str], tuple[PolicySource, int]] = {}
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.path.name.encode() + b"\0" + src.raw + b"\0")
        data = _merge(data, src.policy.model_dump(mode="python", exclude_unset=True))
        for index, rule in enumerate(src.policy.rules):
            origin[("rules", rule.name)] = (src, index)
    try:
        merged = Policy.model_validate(data)
    except ValidationError as exc:
        # Each file was valid alone; only cross-file checks (duplicate names) can fail here.
        last = sources[-1]
        raise PolicyError([last.issue((), f"after merging: {e['msg']}")
                           for e in exc.errors(include_url=False)]) from None
    version = digest.hexdigest()[:16]
    try:
        return CompiledPolicy(merged, version=version,
                              sources=tuple(str(s.path) for s in sources))
    except UnknownDetector as exc:
        rule_name = merged.rules[exc.where[1]].name
        src, index = origin[("rules", rule_name)]
        known = "see docs/policies.md for built-in detectors, or define it under `detectors:`"
        # Not quoted back: errors never echo a policy file (source.py).
        raise PolicyError([src.issue(("rules", index, "detectors", exc.where[3]),
                                     f"rules[{index}].detectors[{exc.where[3]}]: unknown "
                                     f"detector; {known}")]) from None


def load_policy_file(path: Path) -> CompiledPolicy:
    """One file on its own (`hush policy check` / `hush policy test --policy FILE`)."""
    return merge_sources([read_policy_file(path)])


def load_policy_dir(directory: Path, uid: int | None = None) -> CompiledPolicy:
    """The merged policy for `uid`; the built-in default when the directory has no files."""
    files = policy_files(directory, uid) if directory.is_dir() else []
    if not files:
        files = [BUILTIN_DEFAULT]
    return merge_sources(_read_all(files))


def _read_all(files: list[Path], settle_s: float = 0.0) -> list[PolicySource]:
    sources: list[PolicySource] = []
    issues: list[Issue] = []
    for path in files:
        try:
            sources.append(read_policy_file(path, settle_s=settle_s))
        except PolicyError as exc:
            issues.extend(exc.issues)  # report every broken file at once, not one per attempt
    if issues:
        raise PolicyError(issues)
    return sources


@dataclass(frozen=True)
class PolicySet:
    """The shared policy and each user's, loaded together so a reload swaps all at once."""

    directory: Path
    shared: CompiledPolicy
    per_uid: Mapping[int, CompiledPolicy] = field(default_factory=dict)

    def for_uid(self, uid: int | None) -> CompiledPolicy:
        """The policy a request from this peer uid runs under."""
        if uid is None:
            return self.shared
        return self.per_uid.get(uid, self.shared)

    @property
    def version(self) -> str:
        """One hash over the shared and per-user versions (changes when any of them does)."""
        parts = [self.shared.version,
                 *(f"{u}:{p.version}" for u, p in sorted(self.per_uid.items()))]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def load_policy_set(directory: Path, *, settle_s: float = 0.0) -> PolicySet:
    """Validate every file (shared and per-user) and compile each user's merge.

    With `settle_s`, files modified in the last `settle_s` seconds are used only once they stop
    changing (source.read_stable); the watcher passes it, a one-off check does not need it.
    """
    shared_files = policy_files(directory) if directory.is_dir() else []
    if not shared_files:
        shared_files = [BUILTIN_DEFAULT]
    shared_sources = _read_all(shared_files, settle_s)
    shared = merge_sources(shared_sources)
    per_uid: dict[int, CompiledPolicy] = {}
    users = _users_dir(directory) if directory.is_dir() else None
    issues: list[Issue] = []
    if users is not None:
        for path in _candidates(users):
            if not path.stem.isdigit():
                continue
            try:
                personal = read_policy_file(path, settle_s=settle_s)
                per_uid[int(path.stem)] = merge_sources([*shared_sources, personal])
            except PolicyError as exc:
                issues.extend(exc.issues)
    if issues:
        raise PolicyError(issues)
    return PolicySet(directory, shared, per_uid)
