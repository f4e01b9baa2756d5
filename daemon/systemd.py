"""The two systemd interfaces hushd speaks: sd_notify and socket activation (LISTEN_FDS)."""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def notify(*lines: str) -> bool:
    """Send `READY=1`, `STATUS=...` etc. to $NOTIFY_SOCKET; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall("\n".join(lines).encode())
    return True


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds when the watchdog is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def listen_socket() -> socket.socket | None:
    """The listening socket systemd passed us, if it passed exactly one Unix stream socket."""
    pid = os.environ.get("LISTEN_PID")
    count = os.environ.get("LISTEN_FDS")
    if not count or (pid and int(pid) != os.getpid()):
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for our children
    if int(count) != 1:
        raise OSError(f"expected one socket from systemd, got LISTEN_FDS={count}")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise OSError("the socket systemd passed is not a Unix stream socket")
    os.set_inheritable(sock.fileno(), False)
    sock.setblocking(False)
    return sock
