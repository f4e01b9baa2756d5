"""Load: `status` latency (connect, hello, status, as `hush status` does) while the daemon
checks 10 MB of text, through `policy.test` and through a document's policy check.

Holds when the 99th percentile of SAMPLES answers stays within P99_BOUND_MS (issue 17's bar).
The daemon runs with max_frame_bytes raised to 16 MiB so 10 MB of text fits one `policy.test`.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

from .. import common
from .harness import Hushd, Lab
from .verdicts import Case, Check, play
from .wire import connect, status_once

SAMPLES = 50
INTERVAL_S = 0.1
SAMPLING_BUDGET_S = 120.0
"""Sampling stops after this long even if fewer than SAMPLES answered (a frozen loop)."""
P99_BOUND_MS = 100.0
TEXT_BYTES = 10_000_000
PERSONAL = ("Call Anna Smith on +44 20 7946 0958 or write to anna.smith@example.com about the "
            "invoice for card 4111 1111 1111 1111. ")


def text(size: int = TEXT_BYTES) -> str:
    """Prose with personal data in every paragraph, so each detector has work to do."""
    paragraph = (common.DECODE_PROMPT + " " + PERSONAL) * 4 + "\n\n"
    return (paragraph * (size // len(paragraph) + 1))[:size]


def sample(daemon: Hushd, check: Check) -> None:
    latencies: list[float] = []
    timeouts = 0
    end = time.monotonic() + SAMPLING_BUDGET_S
    for _ in range(SAMPLES):
        if time.monotonic() > end:
            break
        ms, _ = status_once(daemon.socket, 60.0)
        if ms is None:
            timeouts += 1
        else:
            latencies.append(ms)
        time.sleep(INTERVAL_S)
    p50 = common.percentile(latencies, 0.50)
    p99 = common.percentile(latencies, 0.99)
    check.figures.update(samples=len(latencies), status_timeouts=timeouts,
                         status_p50_ms=round(p50, 1), status_p99_ms=round(p99, 1),
                         status_max_ms=round(max(latencies, default=float("nan")), 1))
    check.require(timeouts == 0, f"{timeouts} of {SAMPLES} status requests got no answer in 60 s")
    if check.require(p99 <= P99_BOUND_MS, f"status p50 {p50:,.0f} ms, p99 {p99:,.0f} ms "
                     f"(bound {P99_BOUND_MS:g})"):
        check.note(f"status p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def _idle(daemon: Hushd) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        sample(daemon, check)

    return run


def _policy_test_loop(daemon: Hushd, body: str, stop: threading.Event, runs: list[float]) -> None:
    """policy.test of `body`, one after another until `stop`."""
    while not stop.is_set():
        raw = connect(daemon.socket, timeout=30.0)
        if raw is None:
            return
        try:
            started = time.monotonic()
            frame = raw.call("policy.test", {"text": body, "direction": "input"}, timeout=120)
            if frame.get("type") != "done":
                return
            runs.append(time.monotonic() - started)
        finally:
            raw.close()


def _under_policy_test(daemon: Hushd) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        body = text()
        stop = threading.Event()
        runs: list[float] = []
        worker = threading.Thread(target=_policy_test_loop, args=(daemon, body, stop, runs),
                                  daemon=True)
        worker.start()
        time.sleep(0.5)
        try:
            sample(daemon, check)
        finally:
            stop.set()
            worker.join(150)
        check.figures["policy_test_runs"] = len(runs)
        if runs:
            check.figures["policy_test_s"] = round(sum(runs) / len(runs), 2)
        daemon.calm(60)

    return run


def _under_document(daemon: Hushd) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        raw = connect(daemon.socket, timeout=30.0)
        assert raw is not None, "no connection"
        try:
            data = text().encode()
            part = 512 * 1024
            for start in range(0, len(data), part):
                answer = raw.call("document.put", {
                    "document": "big", "filename": "notes.txt",
                    "data": base64.b64encode(data[start:start + part]).decode(),
                    "last": start + part >= len(data)}, timeout=30)
                assert answer.get("type") == "done", "the upload was refused"
            raw.request("summarize", {"document": "big"})
            sample(daemon, check)
        finally:
            raw.close()  # cancels the summary
        daemon.calm(120)

    return run


def run(lab: Lab) -> list[Case]:
    daemon = lab.daemon("load", settings={"limits": {"max_frame_bytes": 16 << 20}})
    daemon.start()
    try:
        return [
            play("load", "status while idle (reference)", _idle(daemon), budget_s=120),
            play("load", "status while a 10 MB policy.test runs", _under_policy_test(daemon),
                 budget_s=SAMPLING_BUDGET_S + 240),
            play("load", "status while a 10 MB document is checked", _under_document(daemon),
                 budget_s=SAMPLING_BUDGET_S + 240),
        ]
    finally:
        daemon.stop()
