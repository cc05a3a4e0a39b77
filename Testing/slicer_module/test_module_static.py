"""Static checks of the Slicer module (MedSegCNN/MedSegCNN.py, its MedSegCNNModule/ package and its .ui): Slicer's
Qt layer cannot run here.

The module's files are parsed, never imported (they need Slicer's ``qt``). Its Qt-free helpers are compiled out of
the files and run against the ``slicer-core`` wheel's real MRML classes.
"""

from __future__ import annotations

import ast
import copy
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
PACKAGE = MODULE_FOLDER / "MedSegCNNModule"
#: The module's Python files: MedSegCNN.py (metadata, registration) and its package (panel, logic, installer, ...).
MODULE_FILES = [MODULE, *sorted(PACKAGE.glob("*.py"))]
TREES = {path: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for path in MODULE_FILES}
#: The top-level statements of all the module's files in one body (no name is defined twice: checked below).
TREE = ast.Module(body=[node for tree in TREES.values() for node in tree.body], type_ignores=[])
UI = MODULE_FOLDER / "Resources" / "UI" / "MedSegCNN.ui"
UI_ROOT = ET.parse(UI).getroot()

#: Top-level imports the module may make: Slicer's own modules, the module's package and the standard library.
SLICER_MODULES = {"qt", "ctk", "slicer", "vtk"}
#: The names Slicer looks up in MedSegCNN.py's namespace, besides the module class itself.
REGISTERED_CLASSES = {"MedSegCNNWidget", "MedSegCNNLogic", "MedSegCNNTest"}
#: Slicer's translation functions (slicer.i18n): ``_(text)`` and ``translate(context, text)``.
TRANSLATION_FUNCTIONS = {"_", "translate"}
#: Calls whose first argument, and attributes of ``self.ui`` widgets whose value, the user reads.
SHOWN_BY_CALLS = {"setStatus", "errorDisplay", "confirmOkCancelDisplay", "warningDisplay", "infoDisplay"}
SHOWN_BY_ATTRIBUTES = {"text", "toolTip", "placeholderText", "windowTitle"}
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
    raise AssertionError(f"the module's files define no constant {name}")


def top_level_class(name: str) -> ast.ClassDef:
    for node in TREE.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"the module's files define no class {name}")


def is_ui_object(node: ast.AST) -> bool:
    """``self.ui`` or ``ui``."""
    return (isinstance(node, ast.Attribute) and node.attr == "ui" and isinstance(node.value, ast.Name)) or (
        isinstance(node, ast.Name) and node.id == "ui"
    )


def is_translation_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) in TRANSLATION_FUNCTIONS


def source_text(node: ast.expr):
    """The literal value of ``node`` with each translation call replaced by the text it translates (its last
    argument): the value Slicer shows when no translation is installed."""

    class Untranslated(ast.NodeTransformer):
        def visit_Call(self, call: ast.Call) -> ast.AST:
            return call.args[-1] if is_translation_call(call) else self.generic_visit(call)

    return ast.literal_eval(Untranslated().visit(copy.deepcopy(node)))


def module_metadata() -> dict:
    """The values ``MedSegCNN.__init__`` gives ``self.parent``, untranslated."""
    module_class = next(node for node in TREES[MODULE].body if getattr(node, "name", None) == "MedSegCNN")
    init = next(node for node in module_class.body if getattr(node, "name", "") == "__init__")
    return {
        target.attr: source_text(node.value)
        for node in init.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
    }


def untranslated_texts(node: ast.expr) -> list[str]:
    """The string literals and f-strings that ``node`` evaluates to without a translation call (empty strings aside):
    ``node`` itself, the branches of ``a or b`` and ``a if c else b``, the parts of ``a + b``, the template of
    ``template.format(...)`` and the items of a list."""
    if isinstance(node, ast.JoinedStr):
        return [ast.unparse(node)]
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) and node.value else []
    if isinstance(node, ast.BoolOp | ast.List):
        parts = node.values if isinstance(node, ast.BoolOp) else node.elts
    elif isinstance(node, ast.IfExp):
        parts = [node.body, node.orelse]
    elif isinstance(node, ast.BinOp):
        parts = [node.left, node.right]
    elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "format":
        parts = [node.func.value]
    else:
        return []  # a translation call, a name, another call's result
    return [text for part in parts for text in untranslated_texts(part)]


def module_definitions(*names: str) -> types.SimpleNamespace:
    """The named top-level functions, classes and constants of the module's files, compiled and run with
    slicer-core's ``slicer`` and ``vtk`` (none of them may use Qt)."""
    slicer = pytest.importorskip("slicer")
    import vtk

    body = [
        node
        for node in TREE.body
        if getattr(node, "name", None) in names
        or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets))
    ]
    assert {getattr(n, "name", None) or n.targets[0].id for n in body} == set(names)
    namespace = {"html": html, "sys": sys, "slicer": slicer, "vtk": vtk, "_": lambda text: text}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(MODULE), "exec"), namespace)
    return types.SimpleNamespace(**namespace)


# ----- the module file --------------------------------------------------------------------------------


def test_module_compiles():
    for path in MODULE_FILES:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_module_imports_only_slicer_and_the_standard_library_at_top_level():
    """MedSegCNNLib (numpy, SimpleITK, torch) is imported inside functions, so the module loads before the
    packages are installed; the module's own files import each other."""
    for path, tree in TREES.items():
        for node in tree.body:
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {PACKAGE.name if node.level else (node.module or "").split(".")[0]}
            else:
                continue
            for root in roots:
                allowed = root in SLICER_MODULES or root == PACKAGE.name or root in sys.stdlib_module_names
                assert allowed, f"top-level import of {root} in {path.name}"


def test_module_file_registers_the_module_and_imports_what_slicer_looks_up():
    """MedSegCNN.py defines the module class only; the widget, logic and test classes, defined in the package, are
    imported into it, where Slicer looks for ``<Module>Widget``, ``<Module>Logic`` and ``<Module>Test``."""
    body = TREES[MODULE].body
    assert [node.name for node in body if isinstance(node, ast.ClassDef)] == ["MedSegCNN"]
    imported = {
        alias.asname or alias.name: node.module
        for node in body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    for name in REGISTERED_CLASSES:
        assert imported.get(name, "").startswith(f"{PACKAGE.name}."), f"MedSegCNN.py does not import {name}"
        defined_in = PACKAGE / (imported[name].split(".")[-1] + ".py")
        assert name in {node.name for node in TREES[defined_in].body if isinstance(node, ast.ClassDef)}


def test_no_name_is_defined_in_two_module_files():
    defined: dict[str, str] = {}
    for path, tree in TREES.items():
        for node in tree.body:
            names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            names += [node.name] if isinstance(node, ast.ClassDef | ast.FunctionDef) else []
            for name in set(names) - {"__all__"}:
                assert name not in defined, f"{name} is defined in {defined[name]} and {path.name}"
                defined[name] = path.name


def test_widget_takes_its_logic_objects():
    """Tests can give the panel fakes: ``MedSegCNNWidget(parent, logic=..., installLogic=...)``, None meaning the
    real ones, and the panel reaches the logic only through those attributes."""
    init = next(node for node in top_level_class("MedSegCNNWidget").body if getattr(node, "name", "") == "__init__")
    arguments = init.args
    defaults = dict(zip([a.arg for a in arguments.args][-len(arguments.defaults) :], arguments.defaults, strict=True))
    for name in ("logic", "installLogic"):
        assert name in defaults and ast.literal_eval(defaults[name]) is None, name
    widget = ast.unparse(top_level_class("MedSegCNNWidget"))
    assert "MedSegCNNLogic()" in ast.unparse(init) and widget.count("MedSegCNNLogic()") == 1
    assert "InstallLogic()" in ast.unparse(init) and widget.count("InstallLogic()") == 1


def test_shown_text_goes_through_the_translation_function():
    """Text the user reads (status line, dialogs, tooltips, labels, module metadata) is wrapped in ``_()``
    (slicer.i18n.tr) or ``translate()``, so that Slicer's language packs can translate it."""
    untranslated = []
    for node in ast.walk(TREE):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in SHOWN_BY_CALLS and node.args:
            untranslated += untranslated_texts(node.args[0])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                shown = isinstance(target, ast.Attribute) and target.attr in SHOWN_BY_ATTRIBUTES
                if shown and any(is_ui_object(part) for part in ast.walk(target.value)):
                    untranslated += untranslated_texts(node.value)
    assert untranslated == []
    init = next(node for node in top_level_class("MedSegCNN").body if getattr(node, "name", "") == "__init__")
    shown = {"title", "categories", "helpText", "acknowledgementText"}
    for node in init.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "attr", None) in shown:
            assert untranslated_texts(node.value) == [], node.targets[0].attr


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
    values = module_metadata()
    assert values["title"] == "MedSegCNN"
    assert values["categories"] == ["Segmentation"]
    assert values["contributors"]
    for section in ("Inputs", "Model", "Segment", "Train", "Evaluate", "Annotate", "Cancel", "logic.segment(",
                    "logic.nextCase("):  # fmt: skip
        assert section in values["helpText"]
    for attribution in ("CC-BY-SA 4.0", "Medical Segmentation Decathlon", "Antonelli", "Simpson"):
        assert attribution in values["acknowledgementText"]


def test_device_backend_and_precision_choices_are_the_librarys():
    """The parameter record lists the choices itself (it loads before the library's packages may be installed)."""
    from MedSegCNNLib.runtime import BACKENDS, DEVICES, PRECISIONS

    assert top_level_constant("DEVICES") == list(DEVICES)
    assert top_level_constant("BACKENDS") == list(BACKENDS)
    assert top_level_constant("PRECISIONS") == list(PRECISIONS)


def test_optional_packages_are_the_distributions_extras():
    """The optional packages the module offers to install are the pyproject.toml extras of the same name."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    for name, requirement in top_level_constant("OPTIONAL_REQUIREMENTS").items():
        assert extras[name] == [requirement]


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
    assert {"Inputs", "Model", "Segment", "Train", "Evaluate", "Annotate", "Log"} <= titles


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


def test_a_vector_volume_fills_one_input_selector_per_component(tmp_path):
    """The panel shows input selectors until they give the model's channels: a colour volume gives three."""
    helpers = module_definitions("channelsPerSelector")
    import numpy as np
    import vtk
    from mrml_scene import wired_scene
    from vtk.util import numpy_support

    scene = wired_scene(str(tmp_path))

    def volume(node_class: str, components: int):
        node = scene.AddNewNodeByClass(node_class)
        data = vtk.vtkImageData()
        data.SetDimensions(4, 3, 1)
        data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.zeros((12, components), np.uint8), deep=True))
        node.SetAndObserveImageData(data)
        return node

    gray, colour = volume("vtkMRMLScalarVolumeNode", 1), volume("vtkMRMLVectorVolumeNode", 3)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")  # no voxels: segmenting it says so
    assert helpers.channelsPerSelector(3, [colour, None, None, None]) == [3]
    assert helpers.channelsPerSelector(3, [gray, gray, None, None]) == [1, 1, 1]
    assert helpers.channelsPerSelector(4, [colour, gray, None, None]) == [3, 1]
    assert helpers.channelsPerSelector(1, [colour, gray, None, None]) == [3]  # too many: segmenting says so
    assert helpers.channelsPerSelector(2, [empty, None, None, None]) == [1, 1]
    assert helpers.channelsPerSelector(6, [None] * 4) == [1, 1, 1, 1]  # more than the panel's selectors


def test_the_panel_passes_the_logic_one_options_record():
    """The widget builds a PredictOptions / TrainingConfig and passes it as ``options=``, not the console keywords
    one by one."""
    helpers = module_definitions("SEGMENT_KEYWORDS", "TRAIN_KEYWORDS")
    calls = [
        node
        for node in ast.walk(top_level_class("MedSegCNNWidget"))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) in {"segment", "train"}
        and ast.unparse(node.func.value) == "self.logic"
    ]
    assert sorted(call.func.attr for call in calls) == ["segment", "train"]
    for call in calls:
        keywords = {keyword.arg for keyword in call.keywords}
        assert "options" in keywords, call.func.attr
        assert not keywords & (set(helpers.SEGMENT_KEYWORDS) | set(helpers.TRAIN_KEYWORDS)), ast.unparse(call)


def test_console_keywords_build_the_options_record():
    """``logic.segment(volume, tta=True)`` and ``logic.train(pairs, folder, epochs=5)`` still work from the console:
    the keywords build the record; mixing them with ``options=`` or an unknown keyword is refused."""
    helpers = module_definitions("optionsRecord", "SEGMENT_KEYWORDS", "TRAIN_KEYWORDS")
    from MedSegCNNLib.inference.options import PredictOptions
    from MedSegCNNLib.training.config import TrainingConfig

    options = helpers.optionsRecord(
        PredictOptions, None, {"tta": True, "keepLargest": True, "minSizeMm3": 5.0}, helpers.SEGMENT_KEYWORDS
    )
    assert options == PredictOptions(tta=True, keep_largest=True, min_size_mm3=5.0)
    assert helpers.optionsRecord(PredictOptions, None, {}, helpers.SEGMENT_KEYWORDS) == PredictOptions()
    config = helpers.optionsRecord(
        TrainingConfig, None, {"dims": 2, "timeBudgetMin": 3.0, "initFrom": "m"}, helpers.TRAIN_KEYWORDS
    )
    assert (config.spatial_dims, config.time_budget_minutes, config.init_from) == (2, 3.0, "m")
    given = PredictOptions(device="cpu")
    assert helpers.optionsRecord(PredictOptions, given, {}, helpers.SEGMENT_KEYWORDS) is given
    with pytest.raises(TypeError, match="not both"):
        helpers.optionsRecord(PredictOptions, given, {"tta": True}, helpers.SEGMENT_KEYWORDS)
    with pytest.raises(TypeError, match="keep_largest"):
        helpers.optionsRecord(PredictOptions, None, {"keep_largest": True}, helpers.SEGMENT_KEYWORDS)
    with pytest.raises(TypeError, match="PredictOptions"):
        helpers.optionsRecord(PredictOptions, TrainingConfig(), {}, helpers.SEGMENT_KEYWORDS)
