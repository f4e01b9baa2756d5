"""hush: the terminal UI and command line for the Hush daemon."""
