"""The few exceptions the daemon and client raise on purpose; messages say how to fix things."""

from __future__ import annotations


class HushError(Exception):
    """An error a user can act on. `code` is stable and travels on the wire."""

    code = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class DaemonUnavailable(HushError):
    """No daemon answers on the socket."""

    code = "unavailable"
