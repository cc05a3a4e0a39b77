"""Packaging checks: every file of the library, the Slicer module and the bundled data is installed into Slicer,
and the metadata agrees across pyproject.toml, the CMake files, the catalog entry and the module."""

from __future__ import annotations

import ast
import json
import re
import struct
import tomllib
from pathlib import Path

from slicer_module.test_module_static import TREES, module_metadata

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


# ----- the Slicer extension: module, bundled data, catalog entry ----------------------------------------------

MODULE = ROOT / "MedSegCNN"
CATALOG_ENTRY = ROOT / "MedSegCNN.json"
#: Slicer's extension catalog entry schema (Slicer/Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json):
#: the required fields, and the type of every allowed field ("additionalProperties": false).
CATALOG_SCHEMA = re.compile(
    r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#"
)
CATALOG_REQUIRED = ("$schema", "category", "scm_url")
CATALOG_FIELDS = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "dicom_support_rule": str,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}
#: Scripts that regenerate a resource (the icon, the example predictions, the bundled model): kept in the
#: repository, not installed.
GENERATOR_SCRIPT = re.compile(r"make_\w+\.py")


def _cmake(path: Path) -> str:
    """A CMake file without its comments."""
    return re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))


def _cmake_list(path: Path, variable: str) -> list[str]:
    """The items of ``set(variable ...)`` in ``path``, with ``${MODULE_NAME}`` substituted; [] when not set."""
    text = _cmake(path)
    block = re.search(rf"set\(\s*{variable}\s(.*?)\)", text, re.S)
    if block is None:
        return []
    module_name = re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", text)
    items = block.group(1).split()
    return [item.replace("${MODULE_NAME}", module_name.group(1)) if module_name else item for item in items]


def _cmake_value(path: Path, variable: str) -> str:
    match = re.search(rf'set\(\s*{variable}\s+"([^"]*)"\s*\)', _cmake(path))
    assert match is not None, f"{path.name} does not set {variable}"
    return match.group(1)


def _files(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and not GENERATOR_SCRIPT.fullmatch(path.name)
    }


def _imported_into_module_file() -> set[str]:
    """The names MedSegCNN.py imports (Slicer looks up the module's widget, logic and test classes there)."""
    body = TREES[MODULE / "MedSegCNN.py"].body
    return {alias.asname or alias.name for node in body if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_every_module_file_is_installed_into_slicer():
    """Every script and resource of MedSegCNN/ (its Testing/ and CMake files aside) is in its install lists."""
    cmake = MODULE / "CMakeLists.txt"
    listed = _cmake_list(cmake, "MODULE_PYTHON_SCRIPTS") + _cmake_list(cmake, "MODULE_PYTHON_RESOURCES")
    on_disk = {name for name in _files(MODULE) if not name.startswith("Testing/") and name != "CMakeLists.txt"}
    assert on_disk - set(listed) == set(), "add these files to MedSegCNN/CMakeLists.txt"
    assert set(listed) - on_disk == set(), "these files in MedSegCNN/CMakeLists.txt do not exist"
    assert {"MedSegCNN.py", "Resources/UI/MedSegCNN.ui", "Resources/Icons/MedSegCNN.png"} <= set(listed)


def test_every_library_data_file_is_installed_into_slicer():
    """Files of MedSegCNNLib/ other than Python scripts need a resources list in MedSegCNNLib/CMakeLists.txt."""
    data = {name for name in _files(LIBRARY) if not name.endswith(".py") and name != "CMakeLists.txt"}
    assert data == set(_cmake_list(LIBRARY / "CMakeLists.txt", "MedSegCNNLib_PYTHON_RESOURCES"))


def test_bundled_data_is_installed_where_the_library_finds_it():
    """The sample cases and bundled models are listed file by file and installed into the scripted-modules folder,
    whose MedSegCNNLib looks for them in ``Resources/`` beside itself, as in the source tree."""
    from MedSegCNNLib.demo import SAMPLE_DATA
    from MedSegCNNLib.registry import BUNDLED_MODELS

    cmake = MODULE / "CMakeLists.txt"
    listed = _cmake_list(cmake, "MODULE_DATA_FILES")
    bundled = ("SampleData/", "Models/")
    on_disk = {f"Resources/{name}" for name in _files(ROOT / "Resources") if name.startswith(bundled)}
    assert on_disk - set(listed) == set(), "add these files to MODULE_DATA_FILES in MedSegCNN/CMakeLists.txt"
    assert set(listed) - on_disk == set(), "these files in MODULE_DATA_FILES do not exist"
    assert (SAMPLE_DATA / "dataset.json").as_posix() in listed
    assert (BUNDLED_MODELS / "hippocampus-tiny" / "model.json").as_posix() in listed
    text = _cmake(cmake)
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${data_folder}" in text
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/MedSegCNNLib" in _cmake(LIBRARY / "CMakeLists.txt")


def test_module_tests_are_registered():
    text = _cmake(MODULE / "CMakeLists.txt")
    assert "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "add_subdirectory(Testing)" in text
    assert "add_subdirectory(Python)" in _cmake(MODULE / "Testing" / "CMakeLists.txt")
    registered = set(re.findall(r"SCRIPT\s+(\S+\.py)", _cmake(MODULE / "Testing" / "Python" / "CMakeLists.txt")))
    assert registered == {path.name for path in (MODULE / "Testing" / "Python").glob("*.py")}
    self_test = (MODULE / "MedSegCNNModule" / "selftest.py").read_text(encoding="utf-8")
    assert "class MedSegCNNTest(ScriptedLoadableModuleTest)" in self_test
    assert "MedSegCNNTest" in _imported_into_module_file()  # where slicer_add_python_unittest(SCRIPT ...) finds it


def test_names_agree_across_cmake_catalog_entry_and_module():
    top = ROOT / "CMakeLists.txt"
    text = _cmake(top)
    assert re.search(r"^project\(MedSegCNN\)", text, re.M)
    assert "add_subdirectory(MedSegCNN)" in text
    assert re.search(r"set\(\s*MODULE_NAME\s+MedSegCNN\s*\)", _cmake(MODULE / "CMakeLists.txt"))
    classes = {node.name for tree in TREES.values() for node in tree.body if isinstance(node, ast.ClassDef)}
    for suffix in ("", "Widget", "Logic", "Test"):
        assert f"MedSegCNN{suffix}" in classes
    assert {f"MedSegCNN{suffix}" for suffix in ("Widget", "Logic", "Test")} <= _imported_into_module_file()
    metadata = module_metadata()
    assert metadata["title"] == "MedSegCNN"
    entry = json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))
    category = _cmake_value(top, "EXTENSION_CATEGORY")
    assert entry["category"] == category == metadata["categories"][0] == "Segmentation"
    dependencies = _cmake_value(top, "EXTENSION_DEPENDS").split(";")
    assert dependencies == entry["build_dependencies"] == ["PyTorch"]
    assert entry["scm_url"].removesuffix(".git") == _cmake_value(top, "EXTENSION_HOMEPAGE")
    repository_files = re.escape(
        _cmake_value(top, "EXTENSION_HOMEPAGE").replace("github.com", "raw.githubusercontent.com")
    )
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in _cmake_value(top, variable).split(" "):  # the catalog's image URLs: files of this repository
            match = re.fullmatch(rf"{repository_files}/{entry['scm_revision']}/(.+\.png)", url)
            assert match and (ROOT / match[1]).is_file(), f"{variable} {url} names no PNG file of this repository"
    assert _cmake_value(top, "EXTENSION_ICONURL").endswith("/MedSegCNN/Resources/Icons/MedSegCNN.png")


def test_catalog_entry_follows_the_schema():
    entry = json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))
    assert [field for field in CATALOG_REQUIRED if field not in entry] == []
    assert sorted(set(entry) - set(CATALOG_FIELDS)) == [], "the schema allows no other fields"
    for field, value in entry.items():
        assert type(value) is CATALOG_FIELDS[field], f"{field} must be a {CATALOG_FIELDS[field].__name__}"
    assert CATALOG_SCHEMA.fullmatch(entry["$schema"])
    assert entry.get("scm_type", "git") in {"git", "local"}
    assert 1 <= entry.get("tier", 1) <= 5
    assert all(isinstance(name, str) for name in entry.get("build_dependencies", []))


def test_icon_is_a_128_pixel_rgba_png():
    data = (MODULE / "Resources" / "Icons" / "MedSegCNN.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert (width, height, bit_depth, colour_type) == (128, 128, 8, 6)  # 6: RGBA


def test_licence_is_apache_2():
    head = (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]
    assert "Apache License" in head and "Version 2.0" in head
