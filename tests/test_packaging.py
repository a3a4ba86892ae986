"""Installable: pyproject.toml agrees with the requirements files the Space uses, the wheel carries the package
data and the console script, and `flowerdemo COMMAND` reaches every command."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from flowerdemo import cli

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML itself")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_lines(name: str) -> list[str]:
    """The requirements a file adds itself (comments and -r includes left out)."""
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


def test_pyproject_and_requirements_files_list_the_same_packages():
    project = PYPROJECT["project"]
    assert project["dependencies"] == requirement_lines("requirements.txt")
    assert project["optional-dependencies"]["train"] == requirement_lines("requirements-train.txt")
    assert project["optional-dependencies"]["dev"] == ["flowerdemo[train]"] + requirement_lines("requirements-dev.txt")
    assert project["scripts"] == {"flowerdemo": "flowerdemo.cli:main"}


def test_the_wheel_carries_the_console_script_and_the_reference_photos(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel offline needs setuptools installed")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "flowerdemo", source / "flowerdemo", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = zipfile.ZipFile(next((tmp_path / "dist").glob("flowerdemo-*.whl")))
    names = set(wheel.namelist())
    assert {"flowerdemo/training/recipe.py", "flowerdemo/ui/layout.py", "flowerdemo/assets/references/index.json",
            "flowerdemo/assets/references/000.jpg"} <= names
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "flowerdemo = flowerdemo.cli:main" in entry_points


@pytest.mark.parametrize("command, usage", [("train", "--arch ARCH"), ("export", "--nonflowers-path NONFLOWERS_PATH"),
                                            ("evaluate", "--split SPLIT"), ("publish", "--repo REPO")])
def test_every_command_is_reachable_from_the_console_script(command, usage, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: flowerdemo {command}") and usage in text


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for command in ("predict", "train", "export", "evaluate", "publish"):
        assert command in text


def test_every_subpackage_is_packaged():
    # a subpackage missing here installs a flowerdemo that fails on import (setuptools lists packages by hand)
    found = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "flowerdemo").rglob("__init__.py"))
    assert sorted(PYPROJECT["tool"]["setuptools"]["packages"]) == found
