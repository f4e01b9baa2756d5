"""The install users get is the one tested: the wheel, installed non-editable in a fresh venv.

The editable install's finder serves any package from the checkout, so a package missing from
pyproject.toml only shows in a real install (the service's `hush` once died with "No module
named 'hush.tui.widgets'"). The fresh virtualenv gets the wheel itself, without dependencies;
those are put on its path from the test environment's site-packages, whose .pth files (the
editable finder among them) are not run, so `hush` can only come from the wheel.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import Daemon

ROOT = Path(__file__).resolve().parent.parent
# The import name of each source tree, as pyproject.toml's package-dir maps it.
SOURCE_TREES = {"daemon": "hush.daemon", "tui": "hush.tui"}


def source_packages() -> set[str]:
    """Every package in the checkout: each directory under daemon/ and tui/ that has an
    __init__.py, by import name."""
    found = set()
    for tree, name in SOURCE_TREES.items():
        for init in (ROOT / tree).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / tree).parts
            found.add(".".join((name, *parts)))
    return found


def wheel_packages(wheel: Path) -> set[str]:
    names = zipfile.ZipFile(wheel).namelist()
    return {n.removesuffix("/__init__.py").replace("/", ".") for n in names
            if n.endswith("/__init__.py")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (built,) = dist.glob("hushd-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (non-editable); returns its bin/."""
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    (site / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--quiet", "--no-deps", "--no-compile", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return root / "bin"


def test_pyproject_lists_every_package() -> None:
    # setuptools puts an unlisted subpackage into the wheel anyway when a listed parent's files
    # include it (only a deprecation warning says so), so the wheel's contents alone cannot
    # tell; the list itself must name every package, or a future setuptools drops it.
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    assert listed == source_packages(), {"unlisted": sorted(source_packages() - listed),
                                         "not in the checkout": sorted(listed - source_packages())}


def test_the_wheel_holds_every_package(wheel: Path) -> None:
    missing = source_packages() - wheel_packages(wheel)
    assert not missing, f"packages left out of the wheel (pyproject.toml): {sorted(missing)}"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"hush/tui/app.tcss", "hush/daemon/policy/default.yaml"} <= names


def test_every_module_imports_from_the_installed_wheel(installed: Path) -> None:
    code = textwrap.dedent("""
        import importlib, pkgutil, hush.daemon, hush.tui
        for root in (hush.daemon, hush.tui):
            for module in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
                if not module.name.endswith(".__main__"):  # that one starts the daemon
                    importlib.import_module(module.name)
        print(hush.tui.__file__)
    """)
    result = subprocess.run([installed / "python", "-c", code], cwd=installed,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(installed.parent)), result.stdout


def test_installed_hush_starts_its_ui_and_answers(installed: Path, real_daemon: Daemon,
                                                  tmp_path: Path) -> None:
    """hushd and hush from the wheel: the daemon answers `hush ask`, and the UI comes up
    under Textual's pilot and connects."""
    real_daemon.program = [str(installed / "hushd")]
    real_daemon.start()
    asked = subprocess.run(
        [installed / "hush", "--socket", str(real_daemon.socket), "ask", "--max-tokens", "24",
         "How many months are there in a year?"],
        env=real_daemon.env, capture_output=True, text=True, timeout=120)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip()
    pilot_script = tmp_path / "pilot.py"
    pilot_script.write_text(textwrap.dedent("""
        import asyncio, sys
        from pathlib import Path
        from hush.tui.app import HushApp

        async def main() -> None:
            app = HushApp(Path(sys.argv[1]))
            async with app.run_test(size=(100, 30)) as pilot:
                for _ in range(600):
                    if app.status.connection == "connected":
                        break
                    await pilot.pause(0.05)
                print(app.status.connection)

        asyncio.run(main())
    """))
    shown = subprocess.run([installed / "python", str(pilot_script), str(real_daemon.socket)],
                           env=real_daemon.env, capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "connected"
