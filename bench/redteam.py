"""Red team: hostile frames, documents, policy files, resource and load attacks against a real
hushd, each case judged "held" or "breached" with a short reason.

Starts real daemons (the tiny random-weight model where the answer's content does not matter,
the real small model where an attack needs real generation) in a temporary lab under /tmp,
plays every case of the chosen categories (bench/hostile/), prints a table and writes
bench/results/redteam.json. Reasons hold codes, counts and seconds, never what a file or the
daemon said. Run as root to include the attacks by another local user (uid 65534); without root
those are "skipped".

    .venv/bin/python -m bench.redteam                         # everything, ~20 min on 2 cores
    .venv/bin/python -m bench.redteam --only protocol,policy  # some categories
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from types import FrameType
from typing import Any

from . import common
from .hostile import documents, load, policies, protocol, resources
from .hostile.harness import Lab
from .hostile.verdicts import Case

CATEGORIES = {"protocol": protocol.run, "documents": documents.run, "policy": policies.run,
              "resources": resources.run, "load": load.run}
VERDICTS = ("held", "breached", "skipped", "error")


def summarize(cases: list[Case]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for case in cases:
        row = out.setdefault(case.category, {"tried": 0, **{v: 0 for v in VERDICTS}})
        row[case.verdict] += 1
        row["tried"] += case.verdict in ("held", "breached")
    return out


def headline(cases: list[Case]) -> dict[str, Any]:
    """The figures issue 17 asks for, picked out of the cases that measure them."""
    by_name = {f"{c.category}/{c.name}": c.figures for c in cases}
    picks = {
        "status_under_policy_test": ("load/status while a 10 MB policy.test runs",
                                     ("status_p50_ms", "status_p99_ms")),
        "status_under_document": ("load/status while a 10 MB document is checked",
                                  ("status_p50_ms", "status_p99_ms")),
        "non_reading_clients": ("resources/three clients that ask and never read",
                                ("rss_before_mb", "rss_after_60s_mb", "rss_peak_mb",
                                 "real_client_answered_s")),
    }
    return {key: {field: by_name[name].get(field) for field in fields}
            for key, (name, fields) in picks.items() if name in by_name}


def table(cases: list[Case]) -> str:
    width = max((len(f"{c.category}/{c.name}") for c in cases), default=10)
    lines = [f"{'case':{width}}  verdict   reason", "-" * (width + 60)]
    lines += [f"{c.category + '/' + c.name:{width}}  {c.verdict:8}  {c.reason}" for c in cases]
    lines += ["", f"{'category':12} tried  held  breached  skipped  error"]
    for category, row in summarize(cases).items():
        lines.append(f"{category:12} {row['tried']:5} {row['held']:5} {row['breached']:9} "
                     f"{row['skipped']:8} {row['error']:6}")
    total = summarize([Case("all", c.name, c.verdict, "") for c in cases]).get("all")
    if total:
        lines.append(f"{'all':12} {total['tried']:5} {total['held']:5} {total['breached']:9} "
                     f"{total['skipped']:8} {total['error']:6}")
    return "\n".join(lines)


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(common.ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the lab, which kills what it started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CATEGORIES),
                        help=f"comma-separated categories ({', '.join(CATEGORIES)})")
    parser.add_argument("--model", default="smollm2-135m",
                        help="the real model for attacks that need real generation")
    parser.add_argument("--rss-ceiling-mb", type=int, default=3000,
                        help="kill a daemon whose RSS passes this (protects the machine)")
    parser.add_argument("--output", default="redteam", help="bench/results/NAME.json")
    args = parser.parse_args()
    chosen = [c for c in args.only.split(",") if c]
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown:
        parser.error(f"unknown categories: {', '.join(unknown)}")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    result: dict[str, Any] = {"machine": common.machine(), "commit": _commit(),
                              "date": dt.datetime.now().isoformat(timespec="seconds"),
                              "categories": chosen}
    cases: list[Case] = []
    try:
        with Lab(real_model=args.model, rss_ceiling_mb=args.rss_ceiling_mb) as lab:
            for category in chosen:
                print(f"\n{category}", flush=True)
                try:
                    cases += CATEGORIES[category](lab)
                except RuntimeError as exc:  # a daemon that would not start: category lost
                    cases.append(Case(category, "(start-up)", "error", str(exc)[:240]))
                    print(f"  error    {category}: {exc}", flush=True)
    except KeyboardInterrupt:
        sys.exit("interrupted: every process and directory of the run is gone; no results "
                 "written")
    result.update(duration_s=round(time.monotonic() - started, 1), summary=summarize(cases),
                  headline=headline(cases), cases=[asdict(c) for c in cases])
    print("\n" + table(cases))
    print(f"\nresults: {common.write_result(args.output, result)}")
    if any(c.verdict == "error" for c in cases):
        sys.exit("some cases hit a harness error; see their reasons")


if __name__ == "__main__":
    main()
