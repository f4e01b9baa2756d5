"""Daemon memory for small devices: peak RSS per catalog model and RSS after keep-alive unload.

For each installed catalog model (or those named), starts a real `hushd` with
`keep_alive_s` set, asks one question through the real `hush` client, and reads the daemon's
/proc/PID/status: VmRSS once the model is loaded, VmHWM (peak) after the answer, and VmRSS after
the daemon unloaded the model for being idle. One more daemon with `lazy_load: true` gives the
floor: the daemon with no model ever loaded. Writes JSON to bench/results/ and prints a table.

Usage: python bench/edge_rss.py [--models smollm2-135m,gemma3-270m] [--threads 1]
       MALLOC_ARENA_MAX=2 python bench/edge_rss.py ...   (the daemon inherits the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hush.daemon import paths
from hush.daemon.engine import catalog

RESULTS = Path(__file__).resolve().parent / "results"
KEEP_ALIVE_S = 3.0
# A question with some context, so prefill buffers are part of the peak, and a long-ish answer.
PROMPT = (
    "Here are my notes from this week. Monday: the boiler service was booked for Thursday "
    "morning and the engineer asked for the gas meter to be accessible. Tuesday: the school "
    "asked parents to send in old clothes for the art project and to sign the trip form by "
    "Friday. Wednesday: the car's MOT is due at the end of next month; the garage has slots on "
    "the 3rd and the 10th. Thursday: boiler fixed, the pressure valve was replaced. "
    "List what is still to do, one line each."
)

# About 2,000 tokens for these vocabularies: what summarizing a few pages asks of the daemon.
LONG_PROMPT = "Summarize these notes in three lines.\n" + " ".join([PROMPT] * 24)


def _status_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return fields


class Hushd:
    """One daemon in private temporary directories, on the machine's model cache."""

    def __init__(self, model: str, settings: dict[str, Any]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hush-rss-", dir="/tmp"))
        for sub in ("run", "state", "config"):
            (self.dir / sub).mkdir(mode=0o700)
        (self.dir / "config" / "hushd.yaml").write_text(json.dumps(settings))  # JSON is YAML
        self.socket = self.dir / "run" / "hushd.sock"
        self.env = dict(
            os.environ,
            HUSH_SOCKET=str(self.socket),
            HUSH_STATE_DIR=str(self.dir / "state"),
            HUSH_CONFIG_DIR=str(self.dir / "config"),
            HUSH_CACHE_DIR=str(paths.CacheLayout.default().root),
        )
        log = (self.dir / "hushd.log").open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "hush.daemon", "--model", model],
                                        env=self.env, stderr=log, stdout=subprocess.DEVNULL)
        log.close()

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit((self.dir / "hushd.log").read_text())
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket))
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"hushd did not listen within {timeout} s")

    def hush(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "hush.tui.cli", "--socket", str(self.socket), *args],
            env=self.env, capture_output=True, text=True, timeout=600, check=True)
        return result.stdout

    def status(self) -> dict[str, Any]:
        value = json.loads(self.hush("status", "--json"))
        assert isinstance(value, dict)
        return value

    def memory(self) -> dict[str, float]:
        return _status_mb(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_model(name: str, threads: int) -> dict[str, Any]:
    settings: dict[str, Any] = {"keep_alive_s": KEEP_ALIVE_S}
    if threads:
        settings["intra_threads"] = threads
    daemon = Hushd(name, settings)
    try:
        daemon.wait_ready()
        loaded = daemon.memory()["VmRSS"]  # the model loads at start (lazy_load is off)
        # Three asks: the peak is over all of them, the speed is the median (malloc settings
        # below trade memory against speed, so both are reported).
        dones = [json.loads(daemon.hush("ask", "--json", "--max-tokens", "128", PROMPT)
                            .splitlines()[-1]) for _ in range(3)]
        peak = daemon.memory()["VmHWM"]
        done = dones[-1]
        # A long prompt: prefill attention and the KV cache grow with it, so the peak does too.
        long_done = json.loads(daemon.hush("ask", "--json", "--max-tokens", "16",
                                           LONG_PROMPT).splitlines()[-1])
        long_peak = daemon.memory()["VmHWM"]
        # Wait for keep-alive: the daemon reports model_loaded false once it let go.
        deadline = time.monotonic() + KEEP_ALIVE_S + 30
        while daemon.status().get("model_loaded") and time.monotonic() < deadline:
            time.sleep(0.5)
        unloaded = not daemon.status().get("model_loaded")
        after = daemon.memory()["VmRSS"]
    finally:
        daemon.stop()
    model_dir = paths.CacheLayout.default().models / name
    return {
        "model": name,
        "model_bin_mb": round((model_dir / "model.bin").stat().st_size / 2**20, 1),
        "rss_loaded_mb": round(loaded, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_after_unload_mb": round(after, 1),
        "unloaded": unloaded,
        "long_prompt_tokens": long_done.get("usage", {}).get("prompt_tokens"),
        "long_peak_rss_mb": round(long_peak, 1),
        "prompt_tokens": done.get("usage", {}).get("prompt_tokens"),
        "completion_tokens": done.get("usage", {}).get("completion_tokens"),
        "decode_tokens_per_s": statistics.median(d["timings"]["decode_tokens_per_s"]
                                                 for d in dones),
        "first_token_ms": statistics.median(d["timings"]["first_token_ms"] for d in dones),
    }


def measure_floor() -> dict[str, Any]:
    """The daemon with everything imported and the store open, but no model loaded."""
    installed = sorted(catalog.installed(paths.CacheLayout.default().models))
    daemon = Hushd(installed[0], {"lazy_load": True})
    try:
        daemon.wait_ready()
        daemon.hush("status", "--json")
        time.sleep(1.0)
        return {"rss_mb": round(daemon.memory()["VmRSS"], 1),
                "peak_rss_mb": round(daemon.memory()["VmHWM"], 1)}
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated catalog names (default: installed)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra_threads for the daemon (0: what the import probe chose)")
    args = parser.parse_args()
    models_dir = paths.CacheLayout.default().models
    names = args.models.split(",") if args.models else [
        n for n in catalog.CATALOG if (models_dir / n / "model.bin").exists()]
    if not names:
        raise SystemExit("no catalog model installed; run `hush model pull smollm2-135m` first")
    rows = [measure_model(name, args.threads) for name in names]
    floor = measure_floor()
    result = {
        "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "threads": args.threads, "keep_alive_s": KEEP_ALIVE_S,
        # glibc malloc tuning passed through to the daemon, e.g. MALLOC_ARENA_MAX=2.
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "no_model": floor, "models": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"edge_rss-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| model | model.bin MB | RSS loaded MB | peak RSS MB | peak, long prompt MB | "
          "RSS after unload MB | decode tok/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['model_bin_mb']} | {r['rss_loaded_mb']} | "
              f"{r['peak_rss_mb']} | {r['long_peak_rss_mb']} ({r['long_prompt_tokens']} tokens) | "
              f"{r['rss_after_unload_mb']}"
              f"{'' if r['unloaded'] else ' (not unloaded)'} | {r['decode_tokens_per_s']} |")
    print(f"| (no model, lazy_load) | - | {floor['rss_mb']} | {floor['peak_rss_mb']} | - | - "
          "| - |")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
