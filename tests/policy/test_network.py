"""`network: deny` in-process: checked in a fresh interpreter (audit hooks cannot be removed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import os, socket, sys, tempfile
from hush.daemon.policy.network import NetworkDenied, install_network_guard
assert install_network_guard() is True
assert install_network_guard() is False  # idempotent
for attempt in (lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
                lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
                lambda: socket.getaddrinfo("example.com", 80)):
    try:
        attempt()
    except NetworkDenied:
        pass
    else:
        sys.exit("network access was allowed")
path = os.path.join(tempfile.mkdtemp(), "s")
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path); server.listen()
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(path)
a, b = socket.socketpair()
a.sendall(b"ok"); assert b.recv(2) == b"ok"
import asyncio
asyncio.run(asyncio.sleep(0))  # the event loop's self-pipe is a Unix socketpair
print("guarded")
"""


def test_network_guard_refuses_inet_and_allows_unix(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "guarded"
