"""The repository stands on its own: no file points at material outside it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared|\bshared/(providers|reference|bench)\b")


def test_no_tracked_file_refers_to_paths_outside_the_repository() -> None:
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    offenders = []
    for name in filter(None, tracked):
        path = ROOT / name
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [f"{name}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert offenders == []


def test_mg_version_is_the_package_version() -> None:
    declared = next(
        line.split('"')[1]
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.startswith("version = ")
    )
    shown = subprocess.run(
        [sys.executable, "-m", "service", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == f"mg {declared}"


def test_the_example_config_file_passes_mg_config_check_and_names_every_setting() -> None:
    example = ROOT / "docs" / "mg.example.yaml"
    checked = subprocess.run(
        [sys.executable, "-m", "service", "config", "check"],
        env={**os.environ, "MG_CONFIG": str(example)},
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    text = example.read_text()
    settings = [
        f.metadata["env"] for f in fields(Settings) if f.metadata.get("env") not in (None, "MG_CONFIG")
    ]
    missing = [env for env in settings if f"{env.removeprefix('MG_').lower()}:" not in text]
    assert missing == []
