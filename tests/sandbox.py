"""Run a command under the constraints hushd.service puts on the daemon, without systemd.

Used by tests as `python -m tests.sandbox -- CMD...`: applies, in this order, an empty
network namespace (PrivateNetwork=yes), umask 0077 (UMask=), no_new_privs
(NoNewPrivileges=) and W^X memory (MemoryDenyWriteExecute=, through PR_SET_MDWE), then
execs the command.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for name, result in (
        ("unshare(CLONE_NEWNET)", libc.unshare(CLONE_NEWNET)),
        ("PR_SET_NO_NEW_PRIVS", libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
        ("PR_SET_MDWE", libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)),
    ):
        if result != 0:
            sys.exit(f"sandbox: {name} failed: {os.strerror(ctypes.get_errno())}")
    os.umask(0o077)
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
