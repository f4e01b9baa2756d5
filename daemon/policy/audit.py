"""Audit trail of policy decisions: which rule did what, how often; never the matched text.

One JSON object per line. A Finding holds no text by construction, so nothing here can leak
what was matched; the record is still built field by field so a future field cannot slip in.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from .compiled import Finding
from .dirs import private_dir


def audit_records(findings: Iterable[Finding], *, request_id: str, policy_version: str,
                  uid: int | None = None, now: float | None = None) -> list[dict[str, object]]:
    """The JSON-ready records for one request's findings."""
    stamp = time.time() if now is None else now
    return [{"time": round(stamp, 3), "request": request_id, "uid": uid,
             "policy": policy_version, "rule": f.rule, "detector": f.detector,
             "direction": f.direction, "action": f.action, "count": f.count}
            for f in findings]


class AuditLog:
    """Appends records to a JSON-lines file (mode 0600); safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        private_dir(path.parent)

    def write(self, findings: Iterable[Finding], *, request_id: str, policy_version: str,
              uid: int | None = None) -> int:
        """Append one line per finding; returns how many were written."""
        records = audit_records(findings, request_id=request_id,
                                policy_version=policy_version, uid=uid)
        if not records:
            return 0
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return len(records)
