"""hushd: the Hush daemon (offline model, encrypted store, data policies).

This directory, daemon/, is imported as `hush.daemon`: pyproject.toml's package-dir maps it
there (and tui/ to `hush.tui`), so the source tree stays flat while both share the `hush`
name. Import it by that name (`from hush.daemon.engine.generator import Engine`); inside the
package, imports are relative.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hushd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
