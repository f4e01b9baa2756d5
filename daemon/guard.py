"""The daemon's side of data policies: the live policy set, its watcher, the audit trail.

Each request takes one snapshot (`for_uid`) when it starts and keeps it to the end, so a
reload never changes the rules under a request in flight; the request's `done` names the
version it ran under.

Policy work never runs on the event loop: detecting in 1 MB of text takes seconds, and a
policy author's pattern may run up to its time budget (policy/patterns.py). `run` hands it to
one of two small thread pools, chosen by the size of the text: bulk texts (documents, large
`policy.test` and exports) queue among themselves, so a user sending several 10 MB texts
delays only other bulk work, never a chat message or the token stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from . import systemd
from .errors import Blocked
from .policy import (
    AuditLog,
    CompiledPolicy,
    Decision,
    Direction,
    Finding,
    PolicyError,
    PolicySet,
    PolicyWatcher,
    Pseudonyms,
    install_network_guard,
    load_policy_set,
)
from .protocol import PolicyEvent

log = logging.getLogger("hushd.guard")

T = TypeVar("T")
BULK_CHARS = 64 * 1024
"""Texts at least this long go to the bulk pool."""


class Guard:
    def __init__(self, policy_dir: Path, audit_path: Path) -> None:
        self.policy_dir = policy_dir
        # A broken policy at start is fatal (PolicyError): never serve without the rules.
        initial = load_policy_set(policy_dir)
        self.audit = AuditLog(audit_path)
        self._initial = initial
        self.watcher: PolicyWatcher | None = None
        self.network_guarded = False
        self._quick = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hushd-policy")
        self._bulk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hushd-policy-bulk")

    @property
    def current(self) -> PolicySet:
        return self.watcher.current if self.watcher is not None else self._initial

    def for_uid(self, uid: int) -> CompiledPolicy:
        return self.current.for_uid(uid)

    @property
    def last_error(self) -> PolicyError | None:
        return self.watcher.last_error if self.watcher is not None else None

    def start(self) -> None:
        shared = self._initial.for_uid(None)
        if shared.network_deny:
            # Belt and braces under PrivateNetwork=: refuse any non-Unix socket in-process.
            install_network_guard()
            self.network_guarded = True
            log.info("network: denied in-process by policy %s (only Unix sockets)",
                     shared.name)
        self.watcher = PolicyWatcher(self.policy_dir, self._initial, on_swap=self._swapped,
                                     on_error=self._failed)
        self.watcher.start()
        log.info("policy %s version %s from %s", shared.name, self._initial.version,
                 self.policy_dir)

    def _swapped(self, fresh: PolicySet) -> None:
        log.info("policy reloaded: version %s", fresh.version)
        systemd.notify(f"STATUS=policy {fresh.version}")

    def _failed(self, error: PolicyError) -> None:
        systemd.notify("STATUS=policy reload failed; the previous policy stays in force")

    async def reload(self) -> None:
        if self.watcher is not None:
            await self.watcher.reload()

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        for pool in (self._quick, self._bulk):
            pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, size: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a policy thread; `size` (characters) picks the pool."""
        pool = self._bulk if size >= BULK_CHARS else self._quick
        return await asyncio.get_running_loop().run_in_executor(
            pool, functools.partial(fn, *args, **kwargs))

    async def apply(self, policy: CompiledPolicy, direction: Direction, text: str, *,
                    pseudonyms: Pseudonyms | None = None) -> Decision:
        """`policy.apply` off the loop."""
        return await self.run(len(text), policy.apply, direction, text, pseudonyms=pseudonyms)

    async def storable(self, policy: CompiledPolicy, text: str, *, request_id: str, uid: int,
                       withheld: str | None = None) -> str:
        """`text` as the storage rules keep it, audited. When they block it: `withheld` if
        given, else a `blocked` error."""
        decision = await self.apply(policy, "storage", text)
        self.record(decision.findings, request_id=request_id, policy=policy, uid=uid)
        if not decision.blocked:
            return decision.text
        if withheld is not None:
            return withheld
        raise Blocked(decision.block_message or "the policy does not allow storing this")

    def record(self, findings: tuple[Finding, ...] | list[Finding], *, request_id: str,
               policy: CompiledPolicy, uid: int) -> None:
        if findings:
            self.audit.write(findings, request_id=request_id, policy_version=policy.version,
                             uid=uid)

    def describe(self, uid: int) -> dict[str, Any]:
        policy = self.for_uid(uid)
        error = self.last_error
        return {"name": policy.name, "version": policy.version,
                "storage": policy.storage_mode, "network_deny": policy.network_deny,
                "error": str(error) if error is not None else None}


def notice(findings: tuple[Finding, ...] | list[Finding], direction: str) -> str | None:
    """A sentence for the user about what the policy did, without the matched text."""
    parts = []
    for f in findings:
        if f.action in ("allow",):
            continue
        what = f.detector.replace("_", " ")
        verb = {"redact": "redacted", "mask": "masked", "pseudonymize": "replaced by "
                "placeholders", "warn": "flagged", "block": "blocked"}.get(f.action, f.action)
        parts.append(f"{f.count} {what}{'s' if f.count != 1 else ''} {verb}")
    if not parts:
        return None
    where = {"input": "before the model saw them", "output": "in the answer",
             "storage": "before storing", "documents": "in the document",
             "export": "in the export"}.get(direction, "")
    return f"{', '.join(parts)} {where}".strip()


def policy_event(request_id: str, direction: str, findings: tuple[Finding, ...] | list[Finding],
                 warnings: tuple[str, ...] = ()) -> PolicyEvent | None:
    """The `policy` event telling a client what the policy did to its text, in counts; None
    when there is nothing to tell."""
    text = notice(findings, direction)
    if not text and not warnings:
        return None
    return {"type": "policy", "id": request_id, "direction": direction, "notice": text,
            "warnings": list(warnings),
            "findings": [{"detector": f.detector, "action": f.action, "count": f.count}
                         for f in findings]}


async def load_guard(policy_dir: Path, audit_path: Path) -> Guard:
    return await asyncio.to_thread(Guard, policy_dir, audit_path)
