"""`hushd`: run the daemon in the foreground, logging to stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .config import load_settings
from .errors import HushError
from .logfilter import EscapeControl

# journald reads "<N>" prefixes as syslog levels when stderr is connected to it.
_JOURNAL_LEVELS = {
    logging.DEBUG: "<7>",
    logging.INFO: "<6>",
    logging.WARNING: "<4>",
    logging.ERROR: "<3>",
    logging.CRITICAL: "<2>",
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _JOURNAL_LEVELS.get(record.levelno, "<6>") + super().format(record)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(EscapeControl())
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hushd",
        description="Run the Hush daemon in the foreground. It serves an offline model over a "
        "Unix socket; stop it with SIGTERM or Ctrl+C.",
    )
    p.add_argument("--config", type=Path, help="YAML settings file (default: "
                   "$HUSH_CONFIG_DIR/hushd.yaml if it exists)")
    p.add_argument("--socket", type=Path, help="Unix socket to listen on")
    p.add_argument("--state-dir", type=Path, help="directory for the encrypted store")
    p.add_argument("--policy-dir", type=Path, help="directory of YAML data policies")
    p.add_argument("--model", help="name of an installed model (see `hush model list`)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"hushd {__version__}")
    return p


def install_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hushd install",
        description="Put this virtualenv's hushd under systemd: units, user, sealed key, "
        "default configuration, policy and model. `hushd uninstall` undoes it and keeps "
        "your data unless --purge.")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--system", action="store_true", help="system service (run as root)")
    scope.add_argument("--user", action="store_true", help="user service (systemctl --user)")
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="write under this directory instead of / and run no systemctl")
    p.add_argument("--model", help="catalog model to serve and pull (default: the best "
                   "measured one that fits this machine's memory, see `hush model list`)")
    p.add_argument("--no-model", action="store_true", help="do not pull the model")
    p.add_argument("--source", type=Path, help="the Hush checkout holding systemd/ and "
                   "policies/ (default: the one this package was installed from)")
    p.add_argument("--purge", action="store_true",
                   help="uninstall only: also delete configuration and models")
    return p


def install_main(command: str, argv: list[str]) -> int:
    from . import install

    args = install_parser().parse_args(argv)
    try:
        if command == "install":
            install.install(user=args.user, root=args.root, source=args.source,
                            model=args.model, pull_model=not args.no_model)
        else:
            install.uninstall(user=args.user, root=args.root, purge=args.purge)
    except HushError as exc:
        print(f"hushd: {exc.message}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["install"], ["uninstall"]):
        return install_main(argv[0], argv[1:])
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        overrides = {
            "socket": args.socket,
            "state_dir": args.state_dir,
            "policy_dir": args.policy_dir,
            "model": args.model,
        }
        settings = load_settings(args.config, overrides)
        from .engine.fast_paths import check_environment
        from .server import run  # after argument parsing: loads CTranslate2

        check_environment()

        run(settings, reload_settings=lambda: load_settings(args.config, overrides))
    except HushError as exc:
        print(f"hushd: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
