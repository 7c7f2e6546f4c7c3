"""mg runs from its wheel: built from the sources alone, installed in a fresh virtualenv, started
from a directory outside the repository, it serves a generation through Envoy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess

REPO = Path(__file__).resolve().parents[2]
# What the wheel is built from: the sources and the stubs `make proto` generated.
SOURCES = ("pyproject.toml", "LICENSE", "service", "envoy", "gen/python")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (its dependencies come from this one's
    site-packages, added as a plain path: no .pth file there runs, so neither the editable install
    of the checkout nor the generated stubs' path is visible)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in SOURCES:
        origin, copy = REPO / name, source / name
        if origin.is_dir():
            shutil.copytree(origin, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)],
        check=True,
    )
    (wheel,) = (root / "dist").glob("mg_gateway-*.whl")
    target = root / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return target


def test_the_wheel_holds_the_service_and_what_it_reads_at_run_time(installed: Path) -> None:
    python = str(installed / "bin" / "python")
    where = subprocess.run(
        [python, "-c", "import mg, service; print(service.__file__); print(mg.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=installed,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert all(path.startswith(str(installed)) for path in where), where


def test_mg_serve_runs_from_the_wheel_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    gateway = GatewayProcess(tmp_path / "data", python=str(installed / "bin" / "python"), cwd=outside)
    gateway.env_overrides["PYTHONPATH"] = ""
    gateway.start()
    try:
        response = gateway.generate({"model": "local/sketch", "prompt": "a wheel", "size": "256x256"})
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 1
        assert gateway.mg("config", "check").returncode == 0
    finally:
        gateway.stop()
    assert not (outside / ".mg").exists()  # the data went where MG_DATA_DIR says
