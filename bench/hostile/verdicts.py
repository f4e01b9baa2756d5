"""How a red-team case is judged: its problems and notes, the verdict and reason that follow,
a deadline per case (SIGALRM as a backstop), and what a daemon log must never show.

Reasons come only from the harness (codes, counts, seconds), never from what the daemon echoed:
an echo may hold the very file content a case checks for.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

TRACEBACK = "Traceback (most recent call last)"
FORGED_PREFIX = "1999-01-01 00:00:00,000"
"""Log lines a hostile frame tries to forge start with this timestamp."""
CONTROL_CHARS = ("\x1b", "\r", "\x00", "\x07", "\x08")


class Deadline(Exception):
    """A case ran past its budget (raised from SIGALRM in the main thread)."""


class Skip(Exception):
    """A case that cannot run here (not root, no real model); the message says why."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise Deadline(f"no end within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- results ----------------------------------------------------------------------------------


@dataclass
class Case:
    category: str
    name: str
    verdict: str
    """held, breached, skipped (cannot run here) or error (a bug in this harness)."""
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


class Check:
    """What one case found: problems make it breached, notes explain a held verdict."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.figures: dict[str, Any] = {}

    def require(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

    def note(self, text: str) -> None:
        self.notes.append(text)


def play(category: str, name: str, run: Callable[[Check], None], *, budget_s: float) -> Case:
    """Run one case under a deadline and turn what it found into a verdict."""
    check = Check()
    started = time.monotonic()
    verdict = None
    try:
        with deadline(budget_s):
            run(check)
    except Deadline as exc:
        check.fail(f"the case {exc}")
    except Skip as exc:
        verdict, reason = "skipped", str(exc)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a harness bug must not stop the other cases
        verdict, reason = "error", f"harness error: {type(exc).__name__}: {exc}"[:240]
    if verdict is None:
        verdict = "breached" if check.problems else "held"
        reason = "; ".join(check.problems or check.notes or ["held"])
    check.figures["seconds"] = round(time.monotonic() - started, 2)
    case = Case(category, name, verdict, reason, check.figures)
    print(f"  {verdict:8} {category}/{name}: {reason}", flush=True)
    return case


# --- log --------------------------------------------------------------------------------------


def log_problems(text: str) -> list[str]:
    """What a daemon log must never show: tracebacks, forged lines, raw control characters."""
    found = []
    if TRACEBACK in text or "exception was never retrieved" in text:
        found.append("the log has a traceback")
    if any(line.startswith(FORGED_PREFIX) for line in text.splitlines()):
        found.append("a forged line in the log")
    if any(c in text for c in CONTROL_CHARS):
        found.append("raw control characters in the log")
    return found


