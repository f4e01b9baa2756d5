"""`network: deny` enforced in-process: an audit hook refuses every socket but a Unix one.

The systemd unit already denies the network to the kernel's satisfaction; this guard is for
the laptop case (no unit) and catches a library that tries anyway. Audit hooks cannot be
removed, so installing is for the life of the process and idempotent. Child processes are not
covered (the unit's RestrictAddressFamilies is).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

_installed = False

# AF_UNIX is the daemon's own socket; -1 is an adopted file descriptor (socket activation),
# whose real family is checked when it connects, binds or sends.
_ALLOWED_FAMILIES = {int(socket.AF_UNIX), -1}


class NetworkDenied(PermissionError):
    """Raised where code opens a network socket while the policy says `network: deny`."""


def _family(sock: Any) -> int:
    try:
        return int(sock.family)
    except (AttributeError, OSError, ValueError):
        return -1


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not event.startswith("socket."):
        return
    if event == "socket.__new__":
        if int(args[1]) not in _ALLOWED_FAMILIES:
            raise NetworkDenied(f"network access is denied by policy (socket family {args[1]})")
    elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
        if _family(args[0]) != socket.AF_UNIX:
            raise NetworkDenied(f"network access is denied by policy ({event})")
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                   "socket.gethostbyaddr", "socket.getnameinfo"):
        raise NetworkDenied(f"network access is denied by policy ({event}: no name lookups)")


def install_network_guard() -> bool:
    """Refuse non-Unix sockets from now on; returns False if it was already installed."""
    global _installed
    if _installed:
        return False
    sys.addaudithook(_hook)
    _installed = True
    return True


def network_guard_installed() -> bool:
    return _installed
