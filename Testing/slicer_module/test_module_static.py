"""Static checks of the Slicer module (MedSegCNN/MedSegCNN.py and its .ui): Slicer's Qt layer cannot run here.

The module file is parsed, never imported (it needs Slicer's ``qt``). Its Qt-free helpers are compiled out of
the file and run against the ``slicer-core`` wheel's real MRML classes.
"""

from __future__ import annotations

import ast
import html
import re
import shutil
import subprocess
import sys
import tomllib
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_FOLDER = ROOT / "MedSegCNN"
MODULE = MODULE_FOLDER / "MedSegCNN.py"
UI = MODULE_FOLDER / "Resources" / "UI" / "MedSegCNN.ui"
SOURCE = MODULE.read_text(encoding="utf-8")
TREE = ast.parse(SOURCE, filename=str(MODULE))
UI_ROOT = ET.parse(UI).getroot()

#: Top-level imports the module may make: Slicer's own modules and the standard library.
SLICER_MODULES = {"qt", "ctk", "slicer", "vtk"}
#: Widget classes a parameter of each annotation may bind to (slicer.parameterNodeWrapper's connectors).
CONNECTORS = {
    "bool": {"QCheckBox", "ctkCheckBox"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox"},
    "str": {"QLineEdit", "QComboBox", "ctkComboBox", "QTextEdit", "QLabel"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
}


def ui_widgets() -> dict[str, ET.Element]:
    return {widget.get("name"): widget for widget in UI_ROOT.iter("widget")}


def top_level_constant(name: str):
    for node in TREE.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"MedSegCNN.py defines no constant {name}")


def top_level_class(name: str) -> ast.ClassDef:
    for node in TREE.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"MedSegCNN.py defines no class {name}")


def is_ui_object(node: ast.AST) -> bool:
    """``self.ui`` or ``ui``."""
    return (isinstance(node, ast.Attribute) and node.attr == "ui" and isinstance(node.value, ast.Name)) or (
        isinstance(node, ast.Name) and node.id == "ui"
    )


def module_definitions(*names: str) -> types.SimpleNamespace:
    """The named top-level functions, classes and constants of MedSegCNN.py, compiled and run with slicer-core's
    ``slicer`` and ``vtk`` (none of them may use Qt)."""
    slicer = pytest.importorskip("slicer")
    import vtk

    body = [
        node
        for node in TREE.body
        if getattr(node, "name", None) in names
        or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets))
    ]
    assert {getattr(n, "name", None) or n.targets[0].id for n in body} == set(names)
    namespace = {"html": html, "sys": sys, "slicer": slicer, "vtk": vtk}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(MODULE), "exec"), namespace)
    return types.SimpleNamespace(**namespace)


# ----- the module file --------------------------------------------------------------------------------


def test_module_compiles():
    compile(SOURCE, str(MODULE), "exec")


def test_module_imports_only_slicer_and_the_standard_library_at_top_level():
    """MedSegCNNLib (numpy, SimpleITK, torch) is imported inside functions, so the module loads before the
    packages are installed."""
    for node in TREE.body:
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        for root in roots:
            assert root in SLICER_MODULES or root in sys.stdlib_module_names, f"top-level import of {root}"


def test_lazy_library_imports_name_what_the_library_has():
    """Every ``from MedSegCNNLib... import name`` inside the module resolves (the interface the module wires to)."""
    imported = [
        (node.module, alias.name)
        for node in ast.walk(TREE)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("MedSegCNNLib")
        for alias in node.names
    ]
    assert {module for module, _ in imported} >= {"MedSegCNNLib.registry", "MedSegCNNLib.mrml.tasks"}
    for module, name in imported:
        assert hasattr(__import__(module, fromlist=[name]), name), f"{module} has no {name}"


def test_metadata_names_the_module_category_and_data_attribution():
    init = next(node for node in top_level_class("MedSegCNN").body if getattr(node, "name", "") == "__init__")
    values = {
        target.attr: ast.literal_eval(node.value)
        for node in init.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
    }
    assert values["title"] == "MedSegCNN"
    assert values["categories"] == ["Segmentation"]
    assert values["contributors"]
    for section in ("Inputs", "Model", "Segment", "Train", "Evaluate", "Cancel", "logic.segment("):
        assert section in values["helpText"]
    for attribution in ("CC-BY-SA 4.0", "Medical Segmentation Decathlon", "Antonelli", "Simpson"):
        assert attribution in values["acknowledgementText"]


def test_requirements_agree_with_the_distribution():
    """The packages the module installs are the library's runtime dependencies, with the same minimum versions."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    requirements = top_level_constant("REQUIREMENTS")
    assert sorted(requirements.values(), key=str.lower) == sorted(dependencies, key=str.lower)
    for name, requirement in requirements.items():
        assert requirement.lower().startswith(name.lower())


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_module_folder_is_ruff_clean():
    for command in (["ruff", "check", "MedSegCNN"], ["ruff", "format", "--check", "MedSegCNN"]):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


# ----- the .ui file -----------------------------------------------------------------------------------


def test_ui_is_a_qt_designer_form_for_a_mrml_widget():
    assert UI_ROOT.tag == "ui"
    assert UI_ROOT.get("version") == "4.0"
    assert UI_ROOT.findtext("class") == "MedSegCNN"
    top = UI_ROOT.find("widget")
    assert top.get("class") == "qMRMLWidget"
    assert top.get("name") == "MedSegCNN"


def test_ui_object_names_are_unique():
    names = [element.get("name") for tag in ("widget", "layout", "spacer") for element in UI_ROOT.iter(tag)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert duplicates == []
    assert all(names), "every widget and layout has a name"


def test_ui_declares_its_custom_widgets_and_connects_mrml_widgets_to_the_scene():
    declared = {custom.findtext("class") for custom in UI_ROOT.iter("customwidget")}
    used = {widget.get("class") for widget in UI_ROOT.iter("widget")}
    assert {cls for cls in used if cls.startswith(("ctk", "qMRML"))} <= declared
    connected = {
        connection.findtext("receiver")
        for connection in UI_ROOT.iter("connection")
        if connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
        and connection.findtext("sender") == "MedSegCNN"
    }
    mrml = {name for name, widget in ui_widgets().items() if widget.get("class").startswith("qMRML")}
    assert connected == mrml - {"MedSegCNN"}


def test_ui_has_the_panel_sections():
    titles = {
        widget.findtext("property[@name='text']/string")
        for widget in UI_ROOT.iter("widget")
        if widget.get("class") == "ctkCollapsibleButton"
    }
    assert {"Inputs", "Model", "Segment", "Train", "Evaluate", "Log"} <= titles


def test_every_ui_name_the_module_uses_exists():
    widgets = ui_widgets()
    used = {node.attr for node in ast.walk(TREE) if isinstance(node, ast.Attribute) and is_ui_object(node.value)}
    assert used, "the module uses self.ui"
    assert sorted(used - set(widgets)) == []
    # getattr(self.ui, f"inputVolumeSelector{i}") for every input channel the panel offers
    channels = top_level_constant("MAX_INPUT_CHANNELS")
    patterns = [
        node.args[1]
        for node in ast.walk(TREE)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "getattr"
        and is_ui_object(node.args[0])
        and isinstance(node.args[1], ast.JoinedStr)
    ]
    assert patterns
    for pattern in patterns:
        prefix = "".join(part.value for part in pattern.values if isinstance(part, ast.Constant))
        assert {f"{prefix}{i}" for i in range(channels)} <= set(widgets)


def test_parameter_bindings_exist_and_fit_their_widgets():
    """Every "SlicerParameterName" in the .ui is a parameter of the wrapper, bound to a widget that
    slicer.parameterNodeWrapper can connect to its type; node selectors offer exactly the annotated node
    types; every parameter is bound or used by the module's code."""
    parameters = {
        node.target.id: ast.unparse(node.annotation)
        for node in top_level_class("MedSegCNNParameterNode").body
        if isinstance(node, ast.AnnAssign)
    }
    bound = {}
    for name, widget in ui_widgets().items():
        parameter = widget.findtext("property[@name='SlicerParameterName']/string")
        if parameter is None:
            continue
        assert widget.find("property[@name='SlicerParameterName']").get("stdset") == "0", name
        assert parameter in parameters, f"{name} binds to unknown parameter {parameter}"
        assert parameter not in bound, f"{parameter} is bound twice"
        bound[parameter] = widget
    for parameter, widget in bound.items():
        annotation = parameters[parameter]
        node_types = re.findall(r"vtkMRML\w+", annotation)
        kind = "node" if node_types else re.sub(r"Annotated\[(\w+),.*", r"\1", annotation)
        assert widget.get("class") in CONNECTORS[kind], f"{parameter}: {annotation} on {widget.get('class')}"
        if kind == "node":
            offered = [s.text for s in widget.findall("property[@name='nodeTypes']/stringlist/string")]
            assert sorted(offered) == sorted(node_types), parameter
        if widget.get("class") in {"QComboBox", "ctkComboBox"}:
            assert "Choice(" in annotation, f"{parameter}: a bound combo box needs a Choice validator"
    used = {node.attr for node in ast.walk(TREE) if isinstance(node, ast.Attribute)}
    assert sorted(set(parameters) - set(bound) - used) == []


def test_every_button_is_wired():
    """Buttons in the .ui are connected to a handler in the module (a button nobody listens to is a bug)."""
    buttons = {name for name, widget in ui_widgets().items() if widget.get("class") in {"QPushButton", "QToolButton"}}
    connected = {
        node.func.value.value.attr
        for node in ast.walk(TREE)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) == "connect"
        and isinstance(node.func.value, ast.Attribute)
        and isinstance(node.func.value.value, ast.Attribute)
        and is_ui_object(node.func.value.value.value)
    }
    assert buttons <= connected


# ----- Qt-free helpers, run here ---------------------------------------------------------------------


def test_user_errors_are_told_apart_from_bugs():
    helpers = module_definitions("isUserError")
    from MedSegCNNLib.errors import GeometryError, InputError

    assert helpers.isUserError(InputError("no volume"))
    assert helpers.isUserError(GeometryError("no overlap"))
    assert not helpers.isUserError(ValueError("a bug"))
    assert not helpers.isUserError(RuntimeError("a bug"))
