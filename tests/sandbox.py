"""Run a command under the constraints hushd.service puts on the daemon, without systemd.

Used by tests as `python -m tests.sandbox [--deny-write-execute] -- CMD...`: applies, in this
order, an empty network namespace (PrivateNetwork=yes), umask 0077 (UMask=) and no_new_privs
(NoNewPrivileges=), then execs the command. `--deny-write-execute` adds W^X memory
(MemoryDenyWriteExecute=, through PR_SET_MDWE), which the units leave out: CTranslate2's x86
kernels are generated at run time.
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
    args = sys.argv[1:]
    deny_write_execute = args[:1] == ["--deny-write-execute"]
    if deny_write_execute:
        args = args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    steps = [("unshare(CLONE_NEWNET)", lambda: libc.unshare(CLONE_NEWNET)),
             ("PR_SET_NO_NEW_PRIVS", lambda: libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))]
    if deny_write_execute:
        steps.append(("PR_SET_MDWE",
                      lambda: libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)))
    for name, step in steps:
        if step() != 0:
            sys.exit(f"sandbox: {name} failed: {os.strerror(ctypes.get_errno())}")
    os.umask(0o077)
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
