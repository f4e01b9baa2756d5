"""The few exceptions the daemon and client raise on purpose; messages say how to fix things.

`ErrorCode` is the wire's vocabulary of error codes (docs/protocol.md's table, checked by
tests/test_protocol_docs.py). It lives here, beside the exception that carries it, because
protocol.py imports this module: defined there, it would tie the two in a cycle.
"""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    # frames and the handshake
    "bad_frame", "frame_too_large", "too_deep", "no_hello", "protocol_version",
    "hello_timeout", "bad_request", "unknown_method", "duplicate_id", "too_many_requests",
    # the connection as a whole
    "too_many_connections", "idle_timeout", "shutting_down", "forbidden",
    # a request's work
    "not_found", "busy", "model", "cancelled", "blocked", "too_large", "unsupported",
    "document_too_large", "unsupported_document", "document", "too_many_uploads",
    "locked", "not_locked", "integrity", "policy", "store", "config", "internal",
    # raised by the client or at startup, never sent by hushd
    "unavailable", "untrusted_daemon", "runtime_dir", "socket", "install",
]


class HushError(Exception):
    """An error a user can act on. `code` is stable and travels on the wire."""

    code: ErrorCode = "internal"

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class Blocked(HushError):
    """The policy refuses this text (input, a title, a document, a summary or an export)."""

    code = "blocked"


class DaemonUnavailable(HushError):
    """No daemon answers on the socket."""

    code = "unavailable"
