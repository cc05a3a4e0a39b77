"""Renders a preview of the MedSegCNN module panel for the extension catalog: Resources/Screenshots/MedSegCNN.png.

    python Resources/Screenshots/render_panel_preview.py

This is NOT a screenshot of the running Slicer app. It is the panel's .ui (MedSegCNN/Resources/UI/MedSegCNN.ui)
built by Qt 6's own UI loader (PySide6's QUiLoader) and drawn offscreen, with stand-ins for Slicer's and CTK's
widgets (Testing/slicer_module/qt_standins.py: node selectors, path fields, collapsible sections), filled as the
module fills it when the bundled model is selected: the model list, the bundled model's card as the module formats
it (ModelEntry.summary_html; the Location row shows the model folder relative to the repository, not this
checkout's absolute path), one input row per model input channel, the parameter node's choices and defaults, and
the sample case as the input volume. Inputs, Model and Segment are expanded; Train, Evaluate and Log are collapsed,
as the .ui starts them. Needs PySide6 (``pip install PySide6-Essentials``); writes the PNG atomically.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_FOLDER = ROOT / "MedSegCNN"
UI = ROOT / "MedSegCNN" / "Resources" / "UI" / "MedSegCNN.ui"
OUTPUT = Path(__file__).resolve().parent / "MedSegCNN.png"
WIDTH = 420  # px, about a Slicer module panel's width; wider if the panel's minimum width is
FONT = ("DejaVu Sans", 9)  # family, points


class ModuleSource:
    """The pieces of the module's files (MedSegCNN.py, MedSegCNNModule/*.py) the preview uses, read from the files
    (they need Slicer to be imported); text wrapped in Slicer's translation function ``_()`` is read untranslated."""

    def __init__(self, folder: Path) -> None:
        paths = [folder / "MedSegCNN.py", *sorted((folder / "MedSegCNNModule").glob("*.py"))]
        trees = [ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for path in paths]
        self.tree = ast.Module(body=[node for tree in trees for node in tree.body], type_ignores=[])
        self.constants = {
            target.id: ast.literal_eval(_untranslated(node.value))
            for node in self.tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name) and _is_literal(_untranslated(node.value))
        }

    def choices(self) -> dict[str, tuple[list[str], str]]:
        """Parameters annotated ``Annotated[str, Choice(...)]`` in MedSegCNNParameterNode: (choices, default)."""
        wrapper = next(
            node for node in self.tree.body if isinstance(node, ast.ClassDef) and node.name == "MedSegCNNParameterNode"
        )
        found = {}
        for node in wrapper.body:
            if not isinstance(node, ast.AnnAssign):
                continue
            calls = [call for call in ast.walk(node.annotation) if isinstance(call, ast.Call)]
            choice = next((call for call in calls if getattr(call.func, "id", None) == "Choice"), None)
            if choice is not None:
                found[node.target.id] = (self._value(choice.args[0]), self._value(node.value))
        return found

    def _value(self, node: ast.expr):
        return self.constants[node.id] if isinstance(node, ast.Name) else ast.literal_eval(node)


def _untranslated(node: ast.expr) -> ast.expr:
    """``_("text")`` as ``"text"``; any other node as it is."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_" and len(node.args) == 1:
        return node.args[0]
    return node


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def fill_panel(form, module: ModuleSource) -> None:
    """Fills the loaded form as MedSegCNNWidget does with the default (bundled) model selected."""
    from PySide6.QtWidgets import QComboBox, QWidget

    from MedSegCNNLib.registry import find_model, list_models

    def widget(name: str):
        return form.findChild(QWidget, name)

    model_name = module.constants["DEFAULT_MODEL"]
    entry = find_model(model_name)
    combo = widget("modelComboBox")
    for listed in list_models():
        combo.addItem(listed.name)
    combo.addItem(module.constants["BROWSE_ITEM"])
    combo.setCurrentText(model_name)
    widget("modelPathLabel").hide()  # shown only for "Model folder..."
    widget("modelPathLineEdit").hide()
    try:
        shown_path = entry.path.relative_to(ROOT)
    except ValueError:
        shown_path = entry.path
    widget("modelCardTextBrowser").setHtml(dataclasses.replace(entry, path=shown_path).summary_html())

    channels = list(entry.channels) or ["image"]
    for i in range(module.constants["MAX_INPUT_CHANNELS"]):
        label, selector = widget(f"inputVolumeLabel{i}"), widget(f"inputVolumeSelector{i}")
        label.setVisible(i < len(channels))
        selector.setVisible(i < len(channels))
        if i < len(channels):
            label.setText("Input volume:" if len(channels) == 1 else f"{channels[i]} (input {i + 1}):")
    widget("inputVolumeSelector0").showNodeName(module.constants["SAMPLE_CASE"])

    for parameter, (choices, default) in module.choices().items():
        for combo in form.findChildren(QComboBox):
            if combo.property("SlicerParameterName") == parameter:
                combo.addItems(choices)
                combo.setCurrentText(default)
    widget("applyButton").setEnabled(True)  # a usable model and an input volume: Segment can run


def render(output: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT / "Testing" / "slicer_module"))
    sys.path.insert(0, str(ROOT))
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QApplication
    from qt_standins import make_loader

    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    app.setFont(QFont(*FONT))
    loader = make_loader()
    form = loader.load(str(UI))
    if form is None:
        raise SystemExit(f"Qt could not load {UI}: {loader.errorString()}")
    form.ensurePolished()
    fill_panel(form, ModuleSource(MODULE_FOLDER))
    width = max(WIDTH, form.minimumSizeHint().width())  # the longest check box text may need more
    form.resize(width, form.heightForWidth(width) if form.hasHeightForWidth() else form.sizeHint().height())
    form.show()
    app.processEvents()
    image = form.grab()
    with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", suffix=".png", delete=False) as tmp:
        temporary = Path(tmp.name)
    try:
        if not image.save(str(temporary), "PNG"):
            raise SystemExit(f"Qt could not write {temporary}")
        temporary.chmod(0o644)  # a temporary file is private to its owner
        temporary.replace(output)  # atomic (os.replace)
    finally:
        temporary.unlink(missing_ok=True)
    print(f"{output}: {image.width()} x {image.height()} px")


if __name__ == "__main__":
    render(OUTPUT)
