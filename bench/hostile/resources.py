"""Resource attacks: connections that never say hello, clients that ask and never read,
SIGTERM with a stuck client or during a summary, uploads that never finish.

Attacks any local client could make run as uid 65534 when the harness is root (so a per-uid
limit is what is tested), else as this user.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from . import files
from .harness import Hushd, Lab, OtherUser, is_root
from .verdicts import Case, Check, play
from .wire import Raw, connect, status_once

IDLE_CONNECTIONS = 70
"""More than the default max_connections (64)."""
GET_IN_S = 20.0
"""How long a new client may wait to be let in past idle connections ("a few seconds")."""
SLOW_CLIENTS = 3
SLOW_SECONDS = 60.0
SLOW_RSS_BOUND_MB = 200
ANSWER_BOUND_S = 30.0
GRACE_S = 5.0
EXIT_BOUND_S = GRACE_S + 5.0
UPLOADS = 80
UPLOAD_PARTS = 19
"""19 parts of 512 KiB: 9.5 MB per upload, just under the default 10 MiB document limit."""
UPLOAD_RSS_BOUND_MB = 256
STORY = {"message": "Write a very long story about a lighthouse keeper and her daughter.",
         "options": {"max_tokens": 2048}}


def _attacker(lab: Lab, target: Callable[..., Any], *args: Any) -> OtherUser:
    return OtherUser(lab, target, *args, switch_user=is_root())


def _hold_idle(report: IO[str], path: str, count: int) -> None:
    """Open `count` connections, say nothing on any, and wait to be killed."""
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(path)
        except OSError:
            break
        held.append(sock)
    report.write(f'{{"opened": {len(held)}}}\n')
    report.flush()
    time.sleep(3600)


def _ask_never_read(report: IO[str], path: str, clients: int) -> None:
    """`clients` connections, each with max_inflight long answers requested, never read."""
    import json

    held = []
    for _ in range(clients):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(path)
        frames = [b'{"type":"hello","protocol":1}\n']
        frames += [json.dumps({"id": f"s{i}", "method": "chat", "params": STORY}).encode()
                   + b"\n" for i in range(8)]
        sock.sendall(b"".join(frames))
        held.append(sock)
    report.write(f'{{"asking": {len(held)}}}\n')
    report.flush()
    time.sleep(3600)


def _idle_connections(lab: Lab) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        daemon = lab.daemon("idle")
        daemon.start()
        try:
            child = _attacker(lab, _hold_idle, str(daemon.socket), IDLE_CONNECTIONS)
            opened = child.line(30)
            check.figures["attacker_connections"] = (opened or {}).get("opened")
            started = time.monotonic()
            served_after = None
            while time.monotonic() - started < GET_IN_S:
                if status_once(daemon.socket, 3.0)[0] is not None:
                    served_after = time.monotonic() - started
                    break
                time.sleep(1.0)
            child.stop()
            check.figures["served_after_s"] = None if served_after is None else round(
                served_after, 1)
            if check.require(served_after is not None,
                             f"a new client was refused for {GET_IN_S:g} s behind "
                             f"{IDLE_CONNECTIONS} idle connections"):
                check.note(f"a new client got in after {served_after:.1f} s")
        finally:
            daemon.stop()

    return run


def _peak(daemon: Hushd, seconds: float, sample: list[float]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if (rss := daemon.rss()) is not None:
            sample.append(rss)
        time.sleep(0.5)


def _ask(path: Path, timeout: float) -> float | None:
    """Seconds until a short chat answer is done, or None."""
    started = time.monotonic()
    raw = connect(path, timeout=timeout)
    if raw is None:
        return None
    try:
        frame = raw.call("chat", {"message": "Say hello.", "options": {"max_tokens": 16}},
                         timeout=timeout)
    finally:
        raw.close()
    return time.monotonic() - started if frame.get("type") == "done" else None


def _non_reading(lab: Lab) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        daemon = lab.daemon("slow", real=True)
        daemon.start()
        try:
            _ask(daemon.socket, 60)  # warm up: the model's buffers are part of the baseline
            before = daemon.rss() or 0.0
            child = _attacker(lab, _ask_never_read, str(daemon.socket), SLOW_CLIENTS)
            check.require(child.line(30) is not None, "the attacker could not connect")
            samples: list[float] = []
            watcher = threading.Thread(target=_peak, args=(daemon, SLOW_SECONDS, samples),
                                       daemon=True)
            watcher.start()
            time.sleep(20)
            answered = _ask(daemon.socket, ANSWER_BOUND_S)
            watcher.join(SLOW_SECONDS + 5)
            after = daemon.rss() or 0.0
            child.stop()
            time.sleep(5)
            left = daemon.rss()
            # How many of the attackers the daemon cut off (its warning says "unread"): a
            # figure for whoever tunes the bound, not part of the verdict.
            cut = sum("unread" in line for line in daemon.log_since(0).splitlines())
            check.figures.update(
                attackers_cut_off=cut,
                rss_before_mb=round(before), rss_after_60s_mb=round(after),
                rss_peak_mb=round(max(samples, default=after)),
                rss_after_they_left_mb=None if left is None else round(left),
                real_client_answered_s=None if answered is None else round(answered, 1))
            check.require(answered is not None, f"a real client got no answer within "
                          f"{ANSWER_BOUND_S:g} s")
            check.require(after - before <= SLOW_RSS_BOUND_MB,
                          f"RSS {before:,.0f} -> {after:,.0f} MB after {SLOW_SECONDS:g} s "
                          f"(bound +{SLOW_RSS_BOUND_MB})")
            check.require(daemon.alive(), "hushd died")
            check.note(f"RSS {before:,.0f} -> {after:,.0f} MB; a real client answered in "
                       f"{answered or 0:.1f} s")
        finally:
            daemon.stop()

    return run


def _sigterm_stuck(lab: Lab) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        daemon = lab.daemon("stuck", settings={"shutdown_grace_s": GRACE_S})
        daemon.start()
        stuck = Raw(daemon.socket, timeout=10.0, rcvbuf=4096)
        try:
            stuck.send(b'{"type":"hello","protocol":1}\n')
            for i in range(8):
                stuck.request("chat", {"message": "Go on.", "options": {"max_tokens": 6000}},
                              request_id=f"g{i}")
            time.sleep(3)  # the answers fill the socket buffers; the client reads nothing
            seconds = daemon.stop(timeout=60)
        finally:
            stuck.close()
            daemon.kill()
        check.figures["exit_s"] = None if seconds is None else round(seconds, 1)
        if seconds is None:
            check.fail("still running 60 s after SIGTERM (killed)")
        elif check.require(seconds <= EXIT_BOUND_S, f"exited {seconds:.1f} s after SIGTERM "
                           f"(grace {GRACE_S:g} s, bound {EXIT_BOUND_S:g})"):
            check.note(f"exited {seconds:.1f} s after SIGTERM")

    return run


def _drain(raw: Raw, stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        try:
            seen.append(str(raw.frame(1.0).get("type")))
        except TimeoutError:
            continue
        except Exception:  # closed: the daemon went away
            return


def _sigterm_summary(lab: Lab) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        daemon = lab.daemon("summary-term", real=True, settings={"shutdown_grace_s": GRACE_S})
        daemon.start()
        raw = connect(daemon.socket, timeout=10.0)
        assert raw is not None, "no connection"
        stop = threading.Event()
        seen: list[str] = []
        try:
            data = base64.b64encode(files.prose(60_000)).decode()
            put = raw.call("document.put", {"document": "d", "data": data,
                                            "filename": "notes.txt", "last": True})
            assert put.get("type") == "done", "the upload was refused"
            raw.request("summarize", {"document": "d"}, request_id="sum")
            reader = threading.Thread(target=_drain, args=(raw, stop, seen), daemon=True)
            reader.start()
            time.sleep(6)
            check.require("done" not in seen, "the summary ended before SIGTERM (no test)")
            seconds = daemon.stop(timeout=90)
        finally:
            stop.set()
            raw.close()
            daemon.kill()
        check.figures["exit_s"] = None if seconds is None else round(seconds, 1)
        if seconds is None:
            check.fail("still running 90 s after SIGTERM (killed)")
        elif check.require(seconds <= EXIT_BOUND_S, f"exited {seconds:.1f} s after SIGTERM "
                           f"(grace {GRACE_S:g} s, bound {EXIT_BOUND_S:g})"):
            check.note(f"exited {seconds:.1f} s after SIGTERM")

    return run


def _fill_uploads(daemon: Hushd, connections: int, check: Check) -> None:
    part = base64.b64encode(os.urandom(512 * 1024)).decode()
    raws = [connect(daemon.socket, timeout=10.0) for _ in range(connections)]
    try:
        assert all(raws), "no connection"
        before = daemon.rss() or 0.0
        accepted = refused = 0
        for n in range(UPLOADS):
            raw = raws[n % connections]
            assert raw is not None
            for _ in range(UPLOAD_PARTS):
                answer = raw.call("document.put", {"document": f"u{n}", "data": part,
                                                   "filename": "a.txt"}, timeout=30)
                if answer.get("type") != "done":
                    refused += 1
                    break
            else:
                accepted += 1
        held = daemon.rss() or 0.0
    finally:
        for raw in raws:
            if raw is not None:
                raw.close()
    time.sleep(2)
    after_close = daemon.rss()
    check.figures.update(uploads_kept=accepted, uploads_refused=refused,
                         rss_before_mb=round(before), rss_held_mb=round(held),
                         rss_after_disconnect_mb=None if after_close is None
                         else round(after_close))
    if check.require(held - before <= UPLOAD_RSS_BOUND_MB,
                     f"{accepted} unfinished uploads held {held - before:,.0f} MB "
                     f"(bound {UPLOAD_RSS_BOUND_MB})"):
        check.note(f"{accepted} kept, {refused} refused, {held - before:,.0f} MB held")


def _uploads(lab: Lab, connections: int) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        daemon = lab.daemon(f"uploads{connections}")
        daemon.start()
        try:
            _fill_uploads(daemon, connections, check)
        finally:
            daemon.stop()

    return run


def run(lab: Lab) -> list[Case]:
    return [
        play("resources", f"{IDLE_CONNECTIONS} connections that never say hello",
             _idle_connections(lab), budget_s=90),
        play("resources", "three clients that ask and never read", _non_reading(lab),
             budget_s=SLOW_SECONDS + 120),
        play("resources", "SIGTERM with a client that never reads", _sigterm_stuck(lab),
             budget_s=120),
        play("resources", "SIGTERM during a summary", _sigterm_summary(lab), budget_s=150),
        play("resources", f"{UPLOADS} unfinished 9.5 MB uploads on one connection",
             _uploads(lab, 1), budget_s=240),
        play("resources", f"{UPLOADS} unfinished 9.5 MB uploads over 8 connections",
             _uploads(lab, 8), budget_s=240),
    ]
