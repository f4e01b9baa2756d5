"""Data policies: YAML rules on what the assistant may see, say and keep (docs/policies.md).

The daemon needs only what is re-exported here: load a PolicySet, keep a PolicyWatcher, take
`watcher.current.for_uid(uid)` once per request, and `apply` it (or, for a token stream, feed
a `StreamRedactor` of it).
"""

from __future__ import annotations

from .audit import AuditLog, audit_records
from .compiled import CompiledPolicy, Decision, Finding
from .loader import PolicySet, load_policy_dir, load_policy_file, load_policy_set
from .model import DIRECTIONS, Direction, Policy
from .network import NetworkDenied, install_network_guard, network_guard_installed
from .pseudonyms import Pseudonyms, Restorer
from .source import Issue, PolicyError
from .stream import StreamRedactor
from .watcher import PolicyWatcher

__all__ = [
    "DIRECTIONS", "AuditLog", "CompiledPolicy", "Decision", "Direction", "Finding", "Issue",
    "NetworkDenied", "Policy", "PolicyError", "PolicySet", "PolicyWatcher", "Pseudonyms",
    "Restorer", "StreamRedactor", "audit_records", "install_network_guard", "load_policy_dir",
    "load_policy_file", "load_policy_set", "network_guard_installed",
]
