"""Directories the policy code creates: private to the daemon's user."""

from __future__ import annotations

import contextlib
from pathlib import Path


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents with mode 0700; existing ones are left alone.

    `Path.mkdir(mode=..., parents=True)` applies the mode to the last component only, and the
    parents it creates get 0777 less the umask: 0755, listable by every local user.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by another process
            directory.mkdir(mode=0o700)
