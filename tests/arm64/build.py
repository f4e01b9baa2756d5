"""Build (and cache) an arm64 Python with Hush's aarch64 wheels, to run under qemu-user.

What it makes, under $HUSH_ARM64_CACHE (default ~/.cache/hush-arm64):

- `sysroot/`: Debian bookworm's arm64 Python 3.11 and the shared libraries it and the wheels
  load, unpacked with `dpkg -x` (nothing is installed into the host's arm64 dpkg database).
- `site-<hash>/`: the aarch64 wheels of every dependency in pyproject.toml (plus the test extra,
  because the checks are the project's own pytest tests), resolved by pip's own resolver for
  manylinux aarch64 / CPython 3.11 and unzipped. A dependency without an aarch64 wheel makes
  `pip download --only-binary=:all:` fail here, naming it, instead of on a user's board.
- `bin/python3.11`: a host shell script that starts the arm64 interpreter under
  `qemu-aarch64-static`. Without binfmt_misc the kernel cannot exec an arm64 binary, so every
  arm64 process (including the daemons the tests start through `sys.executable`) goes through it.

Each part is built in a temporary directory and renamed into place when complete, so an
interrupted run leaves nothing that a later run would mistake for a finished one. A second run
only checks that the parts exist (about a second).

Needs root the first time only, for apt-get (qemu-user-static, the arm64 package lists).
Usage: python tests/arm64/build.py  (prints the paths it made or reused)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QEMU = "qemu-aarch64-static"

# The arm64 packages of EDGE.md; their dependencies are added by apt's resolver. (bookworm has
# no libmpdec3: its Python builds `decimal` on the bundled libmpdec, and `import decimal` works.)
DEBIAN_ROOTS = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g",
    "libexpat1", "libffi8", "libssl3", "libsqlite3-0", "libbz2-1.0", "liblzma5", "libncursesw6",
    "libtinfo6", "libreadline8", "libuuid1", "libgcc-s1", "libstdc++6", "libgomp1", "libcrypt1",
    "libzstd1",
)
# In the dependency closure but never loaded by an interpreter: tools that readline-common and
# friends pull in. Architecture: all packages (config files, mime types) are skipped as well.
DEBIAN_SKIPPED = ("dpkg", "tar", "install-info")

# pip's platform tags for a glibc aarch64 board (Raspberry Pi OS / Debian bookworm: glibc 2.36).
PIP_PLATFORM = (
    "--only-binary=:all:",
    "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
    "--platform", "manylinux_2_17_aarch64", "--platform", "any",
    "--python-version", "3.11", "--implementation", "cp",
)

# Test extras that only the x86 UI snapshot tests use; the arm64 run never loads them.
SKIPPED_TEST_EXTRAS = ("pytest-textual-snapshot", "hypothesis")


@dataclass(frozen=True)
class Arm64Env:
    """What the checks need: the interpreter wrapper and the directories it runs with."""

    cache: Path
    sysroot: Path
    site: Path
    python: Path

    def as_json(self) -> str:
        return json.dumps({k: str(v) for k, v in self.__dict__.items()})


def cache_dir() -> Path:
    override = os.environ.get("HUSH_ARM64_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "hush-arm64"


def log(message: str) -> None:
    print(f"[arm64 build] {message}", flush=True)


def run(*cmd: str, cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _apt_ready_for_arm64() -> bool:
    foreign = run("dpkg", "--print-foreign-architectures").split()
    if "arm64" not in foreign:
        return False
    # The architecture can be registered before `apt-get update` fetched its lists.
    probe = subprocess.run(["apt-cache", "show", "libc6:arm64"], capture_output=True)
    return probe.returncode == 0


def ensure_host_tools() -> None:
    """qemu-user-static and Debian's arm64 package lists: the only steps that need root."""
    need_qemu = shutil.which(QEMU) is None
    need_arch = not _apt_ready_for_arm64()
    if not (need_qemu or need_arch):
        return
    if os.geteuid() != 0:
        missing = ["qemu-user-static"] * need_qemu + ["the arm64 package lists"] * need_arch
        raise SystemExit(
            f"arm64 checks need {' and '.join(missing)}; run once as root:\n"
            "  apt-get install qemu-user-static && dpkg --add-architecture arm64 && apt-get update"
        )
    started = time.monotonic()
    if need_arch:
        run("dpkg", "--add-architecture", "arm64")
    run("apt-get", "update", "-q")
    if need_qemu:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        result = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                 "qemu-user-static"], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"apt-get install qemu-user-static failed:\n{result.stderr[-3000:]}")
    log(f"host tools ready (qemu-user-static, arm64 lists) in {time.monotonic() - started:.0f} s")


def debian_packages() -> list[str]:
    """The arm64 libraries to unpack: DEBIAN_ROOTS and everything they depend on.

    apt spells arm64 packages `name:arm64`; bare names are Architecture: all packages, or
    host-architecture ones reached through them (perl), which an arm64 sysroot has no use for.
    """
    out = run("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
              "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
              *(f"{name}:arm64" for name in DEBIAN_ROOTS))
    names = set()
    for line in out.splitlines():
        if line.startswith((" ", "<")):
            continue  # dependency lines and virtual packages; real ones appear unindented too
        name = line.strip()
        if name.endswith(":arm64") and name.removesuffix(":arm64") not in DEBIAN_SKIPPED:
            names.add(name)
    return sorted(names)


def compile_tree(path: Path, sysroot: Path) -> None:
    """Write .pyc files next to every module under `path`.

    Debian's packages ship no .pyc (postinst makes them) and PYTHONDONTWRITEBYTECODE may be set:
    without this every emulated start recompiles the stdlib and the wheels, several times slower.
    Bytecode does not depend on the CPU, so the host compiles it when it is CPython 3.11 too.
    """
    if sys.version_info[:2] == (3, 11):
        python = [sys.executable]
    else:
        python = [QEMU, "-L", str(sysroot), str(sysroot / "usr/bin/python3.11")]
    # Some stdlib test data and wheel templates are not valid Python 3.11; skip, don't fail.
    subprocess.run([*python, "-m", "compileall", "-q", "-j0", str(path)],
                   capture_output=True, check=False)


def build_sysroot(cache: Path) -> Path:
    sysroot = cache / "sysroot"
    if (sysroot / "usr" / "bin" / "python3.11").exists():
        return sysroot
    started = time.monotonic()
    packages = debian_packages()
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # apt-get download writes into the working directory; a half-written .deb from an
    # interrupted run has a partial name apt cleans up, so re-running here is safe.
    have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
    wanted = [name for name in packages if name.removesuffix(":arm64") not in have]
    if wanted:
        run("apt-get", "download", "-q", *wanted, cwd=debs)
    tmp = Path(tempfile.mkdtemp(prefix="sysroot-", dir=cache))
    bare = {name.removesuffix(":arm64") for name in packages}
    for deb in sorted(debs.glob("*.deb")):
        if deb.name.split("_")[0] in bare:
            run("dpkg", "-x", str(deb), str(tmp))
    compile_tree(tmp / "usr" / "lib" / "python3.11", tmp)
    (tmp / "hush-packages.txt").write_text("\n".join(packages) + "\n")
    if sysroot.exists():  # a stale, incomplete one from an older layout
        shutil.rmtree(sysroot)
    tmp.rename(sysroot)
    log(f"sysroot: {len(packages)} arm64 packages unpacked in {time.monotonic() - started:.0f} s")
    return sysroot


def requirements() -> list[str]:
    """pyproject's dependencies and the test extra, read now so there is no copy to maintain.

    Those whose environment marker excludes aarch64 are left out here: `pip download
    --platform` would judge the markers by this x86-64 machine."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test = [r for r in project["optional-dependencies"]["test"]
            if not r.startswith(SKIPPED_TEST_EXTRAS)]
    target = {"platform_machine": "aarch64"}
    return [r for r in [*project["dependencies"], *test]
            if (marker := Requirement(r).marker) is None or marker.evaluate(target)]


def _unpack_wheel(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # Wheels may put modules under <name>.data/{purelib,platlib}: that is site-packages too.
    for data in site.glob("*.data"):
        for sub in ("purelib", "platlib"):
            for item in (data / sub).glob("*") if (data / sub).is_dir() else ():
                shutil.move(str(item), site / item.name)
        shutil.rmtree(data)


def build_site(cache: Path, sysroot: Path) -> Path:
    reqs = requirements()
    key = hashlib.sha256(json.dumps([reqs, PIP_PLATFORM]).encode()).hexdigest()[:12]
    site = cache / f"site-{key}"
    if site.is_dir():
        return site
    started = time.monotonic()
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    # pip's resolver picks the versions; already-downloaded wheels in `wheels` are reused.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
         *PIP_PLATFORM, "-d", str(wheels), *reqs],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise SystemExit(
            "Some dependency has no aarch64 wheel for CPython 3.11 (pip cannot resolve it "
            "without building from source); replace it or document its build step:\n"
            + result.stderr[-3000:]
        )
    # `wheels` may hold older versions from earlier runs: take exactly the files pip named.
    chosen = sorted({Path(line.split()[-1]).name for line in result.stdout.splitlines()
                     if line.strip().startswith(("Saved ", "File was already downloaded "))})
    tmp = Path(tempfile.mkdtemp(prefix="site-", dir=cache))
    for name in chosen:
        _unpack_wheel(wheels / name, tmp)
    (tmp / "hush-wheels.txt").write_text("\n".join(sorted(chosen)) + "\n")
    # Runs first in every arm64 interpreter: spawned processes must re-enter qemu via the
    # wrapper, not exec the arm64 binary that the host kernel cannot run.
    (tmp / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('HUSH_ARM64_PYTHON'):\n"
        "    sys.executable = os.environ['HUSH_ARM64_PYTHON']\n"
    )
    compile_tree(tmp, sysroot)
    tmp.rename(site)
    log(f"site: {len(chosen)} wheels resolved and unpacked in {time.monotonic() - started:.0f} s")
    return site


def write_wrapper(cache: Path, sysroot: Path) -> Path:
    qemu = shutil.which(QEMU)
    assert qemu is not None  # ensure_host_tools installed it
    wrapper = cache / "bin" / "python3.11"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "#!/bin/sh\n"
        "# The arm64 Python under qemu-user (written by tests/arm64/build.py).\n"
        f'HUSH_ARM64_PYTHON="{wrapper}" exec {qemu} -L "{sysroot}" '
        f'"{sysroot}/usr/bin/python3.11" "$@"\n'
    )
    if not wrapper.exists() or wrapper.read_text() != text:
        tmp = wrapper.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.rename(wrapper)
    return wrapper


def build() -> Arm64Env:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    ensure_host_tools()
    sysroot = build_sysroot(cache)
    site = build_site(cache, sysroot)
    python = write_wrapper(cache, sysroot)
    return Arm64Env(cache=cache, sysroot=sysroot, site=site, python=python)


def main() -> None:
    started = time.monotonic()
    env = build()
    wheels = (env.site / "hush-wheels.txt").read_text().split()
    log(f"ready in {time.monotonic() - started:.1f} s: {env.python}")
    log(f"sysroot {env.sysroot}; {len(wheels)} aarch64/any wheels in {env.site}")


if __name__ == "__main__":
    main()
