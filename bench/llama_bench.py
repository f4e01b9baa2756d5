"""The reference peer: llama.cpp (through llama-cpp-python) in a worker process.

The worker speaks JSON lines on stdin/stdout and imports nothing but the standard library and
`llama_cpp`, so it can run under any interpreter that has llama-cpp-python (the `bench` extra,
or a separate virtualenv named by `HUSH_BENCH_LLAMA_PYTHON`). The benchmark hands it token
ids made by Hush's tokenizer, so both engines read exactly the same prompt; decoding is greedy.

Commands (one JSON object per line; one answer line each):
    {"cmd": "load", "path": "model.gguf", "threads": 1, "n_ctx": 4096}
    {"cmd": "generate", "ids": [...], "max_tokens": 128, "stop_ids": [...],
     "repeat_penalty": 1.0, "keep_cache": false}
    {"cmd": "rss"}
    {"cmd": "quit"}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _serve() -> None:  # runs in the worker process
    import llama_cpp

    llm: Any = None
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        answer: dict[str, Any]
        if cmd == "load":
            if llm is not None:
                llm.close()
            start = time.perf_counter()
            threads = int(request["threads"])
            llm = llama_cpp.Llama(model_path=request["path"], n_ctx=int(request["n_ctx"]),
                                  n_threads=threads, n_threads_batch=threads, n_batch=512,
                                  verbose=False)
            answer = {"load_s": time.perf_counter() - start, "version": llama_cpp.__version__}
        elif cmd == "generate":
            if not request.get("keep_cache"):
                # Without a reset llama-cpp-python reuses the KV cache of a shared prefix.
                llm.reset()
            stop = set(request.get("stop_ids", ()))
            limit = int(request["max_tokens"])
            tokens: list[int] = []
            first = 0.0
            start = time.perf_counter()
            for token in llm.generate(request["ids"], top_k=1, top_p=1.0, temp=0.0,
                                      repeat_penalty=float(request.get("repeat_penalty", 1.0)),
                                      reset=True):
                if not tokens:
                    first = time.perf_counter() - start
                tokens.append(int(token))
                if token in stop or len(tokens) >= limit:
                    break
            answer = {"tokens": tokens, "first_token_s": first,
                      "total_s": time.perf_counter() - start}
        elif cmd == "rss":
            answer = {"peak_rss_mb": _status_mb("VmHWM"), "rss_mb": _status_mb("VmRSS")}
        elif cmd == "quit":
            break
        else:
            answer = {"error": f"unknown command {cmd!r}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    if llm is not None:
        llm.close()


def llama_python() -> str:
    """The interpreter that has llama-cpp-python: HUSH_BENCH_LLAMA_PYTHON, else this one."""
    return os.environ.get("HUSH_BENCH_LLAMA_PYTHON") or sys.executable


def available() -> str | None:
    """None when llama-cpp-python imports and runs; otherwise why not."""
    probe = subprocess.run([llama_python(), "-c", "import llama_cpp"], capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        return f"{llama_python()}: cannot import llama_cpp ({tail})"
    return None


class LlamaPeer:
    """The benchmark side of the worker: one llama.cpp model in another process."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [llama_python(), __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1,
        )
        self.pid = self._process.pid

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the llama.cpp worker exited ({self._process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def load(self, path: Path, threads: int, n_ctx: int = 4096) -> dict[str, Any]:
        return self._call({"cmd": "load", "path": str(path), "threads": threads,
                           "n_ctx": n_ctx})

    def generate(self, ids: Sequence[int], max_tokens: int, *, stop_ids: Sequence[int] = (),
                 repeat_penalty: float = 1.0, keep_cache: bool = False) -> dict[str, Any]:
        return self._call({"cmd": "generate", "ids": list(ids), "max_tokens": max_tokens,
                           "stop_ids": list(stop_ids), "repeat_penalty": repeat_penalty,
                           "keep_cache": keep_cache})

    def peak_rss_mb(self) -> float:
        return float(self._call({"cmd": "rss"})["peak_rss_mb"])

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self._process.stdin.close()
            self._process.wait(30)

    def __enter__(self) -> LlamaPeer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
