"""Packaging checks: every library file is installed into Slicer, and the metadata agrees."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import MedSegCNNLib

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "MedSegCNNLib"


def _cmake_scripts() -> set[str]:
    text = (LIBRARY / "CMakeLists.txt").read_text(encoding="utf-8")
    block = re.search(r"set\(MedSegCNNLib_PYTHON_SCRIPTS(.*?)\)", text, re.S)
    assert block is not None, "MedSegCNNLib/CMakeLists.txt lost its MedSegCNNLib_PYTHON_SCRIPTS list"
    return set(block.group(1).split())


def test_every_library_file_is_installed_into_slicer():
    on_disk = {path.relative_to(LIBRARY).as_posix() for path in LIBRARY.rglob("*.py")}
    listed = _cmake_scripts()
    assert on_disk - listed == set(), "add these files to MedSegCNNLib/CMakeLists.txt"
    assert listed - on_disk == set(), "these files in MedSegCNNLib/CMakeLists.txt do not exist"


def test_top_level_cmake_declares_the_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(MedSegCNN\)", text, re.M)
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(MedSegCNNLib)" in text


def test_distribution_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "medsegcnn"
    assert project["scripts"]["medsegcnn"] == "MedSegCNNLib.cli.main:main"
    assert any(dep.startswith("torch>=") for dep in project["dependencies"]), "keep torch unpinned for users"
    assert re.fullmatch(r"\d+\.\d+\.\d+", MedSegCNNLib.__version__)
