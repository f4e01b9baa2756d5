"""Import memory: peak RSS of importing each catalog model's GGUF as int8, in a fresh process.

The bar (issue 16) is the int8 model's size plus 1 GiB, so that the model that fits a board
can also be imported on it. Each import runs in its own process (VmHWM, which exec resets) into
a temporary directory; the cached GGUF must be there (`hush model pull NAME` fetches it).

    python -m bench.import_bench --models smollm2-135m,qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import common

_CHILD = """
import json, sys, time
from pathlib import Path
from hush.daemon.engine.convert.gguf_import import import_gguf
start = time.monotonic()
import_gguf(Path(sys.argv[1]), Path(sys.argv[2]))
seconds = time.monotonic() - start
peak_kb = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
print(json.dumps({"seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}))
"""


def measure(gguf: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hush-import-") as tmp:
        dest = Path(tmp) / "model"
        done = subprocess.run([sys.executable, "-c", _CHILD, str(gguf), str(dest)],
                              capture_output=True, text=True, check=True, cwd=common.ROOT)
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        int8_mb = (dest / "model.bin").stat().st_size / 2**20
    bar = int8_mb + 1024
    result.update(int8_model_mb=round(int8_mb, 1), bar_mb=round(bar, 1),
                  within_bar=result["peak_rss_mb"] <= bar)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,"
                                            "qwen2.5-coder-1.5b")
    args = parser.parse_args()
    from hush.daemon.engine.convert.pull import fetch_gguf
    from hush.daemon.paths import CacheLayout

    downloads = CacheLayout.default().downloads
    rows = {}
    for name in [m for m in args.models.split(",") if m]:
        rows[name] = measure(fetch_gguf(name, downloads))
        r = rows[name]
        print(f"  {name}: peak {r['peak_rss_mb']:,.0f} MiB for a {r['int8_model_mb']:,.0f} MiB "
              f"int8 model (bar {r['bar_mb']:,.0f}: {'met' if r['within_bar'] else 'NOT met'}), "
              f"{r['seconds']} s", flush=True)
    path = common.write_result("import", {"machine": common.machine(), "models": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
