"""hush: the terminal UI and command line for the Hush daemon.

This directory, tui/, is imported as `hush.tui`: pyproject.toml's package-dir maps it there
(and daemon/ to `hush.daemon`). It talks to hushd over the socket through
`hush.daemon.client` and imports the daemon's engine only for `hush model` commands.
"""
