"""CTranslate2 on x86 needs memory it can make executable: refuse to run without it.

On x86-64, CTranslate2's matrix products come from oneDNN, which generates its kernels at run
time (JIT): it writes machine code into memory and then makes that memory executable. Under
W^X (systemd's `MemoryDenyWriteExecute=yes`, or prctl PR_SET_MDWE) the second step is refused,
and oneDNN does not notice: measured on Linux 6.18, SmolLM2 then answered "What is the capital
of France?" with " dissemin" instead of "Paris". So the engine checks once, before loading a
model, that a page can go from writable to executable, and fails with the fix if it cannot.
Other CPUs (arm64 uses ruy, which compiles nothing at run time) are not affected.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
from functools import lru_cache

from .errors import ModelError

_JIT_MACHINES = ("x86_64", "amd64", "i686", "i386")


@lru_cache(maxsize=1)
def executable_memory_refused() -> str | None:
    """Why this process cannot make writable memory executable, or None when it can."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = mmap.PAGESIZE
    page = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if page in (None, ctypes.c_void_p(-1).value):
        return f"mmap failed: {os.strerror(ctypes.get_errno())}"
    try:
        if libc.mprotect(page, size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            return os.strerror(ctypes.get_errno())
        return None
    finally:
        libc.munmap(page, size)


def require_executable_memory() -> None:
    """Raise ModelError on x86 when run-time generated kernels could not execute."""
    if platform.machine().lower() not in _JIT_MACHINES:
        return
    reason = executable_memory_refused()
    if reason is not None:
        raise ModelError(
            "This process may not make memory executable (W^X: " + reason + "), and "
            "CTranslate2's x86 kernels are generated at run time, so the model would compute "
            "garbage. Remove MemoryDenyWriteExecute=yes from the hushd unit (`systemctl edit "
            "hushd`) or run hushd without PR_SET_MDWE."
        )
