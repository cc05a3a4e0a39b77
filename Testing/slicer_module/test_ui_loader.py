"""The panel's .ui (MedSegCNN/Resources/UI/MedSegCNN.ui) built by Qt's own UI loader (PySide6's QUiLoader, Qt 6),
with stand-ins for the Slicer and CTK widgets (qt_standins.py).

Stronger than the XML checks of test_module_static.py: Qt reports bad enum and flag values, unknown classes,
connections to missing slots and occupied layout cells; and since Qt silently turns a property it cannot find into
a dynamic property, every property the .ui sets is looked up in the built widget's meta-object and read back. The
stand-ins declare only members of the real Slicer/CTK classes, so a property those lack is caught too. The last
test breaks copies of the .ui on purpose and checks that each defect is reported.
"""

from __future__ import annotations

import ast
import copy
import enum
import math
import os
import xml.etree.ElementTree as ET

import pytest
from PySide6 import QtWidgets
from PySide6.QtCore import (
    SIGNAL,
    QBuffer,
    QByteArray,
    QDir,
    QIODevice,
    QObject,
    QSize,
    QtMsgType,
    qInstallMessageHandler,
)
from PySide6.QtWidgets import QApplication, QFormLayout, QWidget
from slicer_module.pythonqt import meta_object
from slicer_module.qt_standins import NOT_REAL, REAL_API, STANDINS, make_loader
from slicer_module.test_module_static import TREE, UI, is_ui_object, top_level_constant

UI_TEXT = UI.read_text(encoding="utf-8")
#: Properties QFormBuilder applies to a layout itself, not through QObject::setProperty.
LAYOUT_MARGINS = {"margin", "leftMargin", "topMargin", "rightMargin", "bottomMargin"}
SPACER_PROPERTIES = {"orientation", "sizeType", "sizeHint"}
FORM_ROLES = {
    (0, 1): QFormLayout.ItemRole.LabelRole,
    (1, 1): QFormLayout.ItemRole.FieldRole,
    (0, 2): QFormLayout.ItemRole.SpanningRole,
}


@pytest.fixture(scope="module")
def qapp() -> QApplication:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display here: Qt's offscreen platform plugin
    return QApplication.instance() or QApplication([])


def load(ui_text: str) -> tuple[QWidget | None, list[str]]:
    """The form built by QUiLoader, and what Qt said meanwhile (warnings and worse) plus the loader's error."""
    messages = []

    def collect(kind: QtMsgType, context, message: str) -> None:
        if kind != QtMsgType.QtDebugMsg:
            messages.append(message)

    buffer = QBuffer()
    buffer.setData(QByteArray(ui_text.encode("utf-8")))
    buffer.open(QIODevice.OpenModeFlag.ReadOnly)
    loader = make_loader()
    loader.setWorkingDirectory(QDir(str(UI.parent)))
    previous = qInstallMessageHandler(collect)
    try:
        form = loader.load(buffer)
    finally:
        qInstallMessageHandler(previous)
    if loader.errorString():
        messages.append(f"QUiLoader: {loader.errorString()}")
    return form, messages


@pytest.fixture(scope="module")
def panel(qapp) -> tuple[QWidget | None, list[str]]:
    return load(UI_TEXT)


# ----- checks: each returns the problems found in a loaded form ----------------------------------------------------


def find(form: QWidget, name: str) -> QObject | None:
    """The form's object named ``name`` (the form itself included); None when there is not exactly one."""
    if form.objectName() == name:
        return form
    found = form.findChildren(QObject, name)
    return found[0] if len(found) == 1 else None


def class_problems(root: ET.Element, form: QWidget) -> list[str]:
    """Every widget and layout is built once, with its declared class: Qt's own, or the stand-in of a Slicer/CTK
    class, which derives from the class the .ui says it extends."""
    problems = []
    for element in (*root.iter("widget"), *root.iter("layout")):
        name, declared = element.get("name"), element.get("class")
        built = find(form, name)
        if built is None:
            problems.append(f"{name} ({declared}) was not built once")
        elif meta_object(built).className() != declared:
            problems.append(f"{name} was built as {meta_object(built).className()}, not {declared}")
        elif declared in STANDINS and not isinstance(built, STANDINS[declared]):
            problems.append(f"{name} is not the stand-in for {declared}")
    for custom in root.iter("customwidget"):
        standin, extends = STANDINS.get(custom.findtext("class")), custom.findtext("extends")
        if standin is None or not issubclass(standin, getattr(QtWidgets, extends, ())):
            problems.append(f"custom widget {custom.findtext('class')} (extends {extends}) has no fitting stand-in")
    return problems


def expected_value(meta_property, value: ET.Element):
    """The .ui's value of a property as Qt holds it, or None for kinds not read back."""
    text = value.text or ""
    kind = value.tag
    if kind == "bool":
        return text == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind in {"string", "cstring"}:
        return text
    if kind == "stringlist":
        return [item.text or "" for item in value.findall("string")]
    if kind == "size":
        return QSize(int(value.findtext("width")), int(value.findtext("height")))
    if kind == "enum":
        return meta_property.enumerator().keyToValue(text)[0]
    if kind == "set":
        return meta_property.enumerator().keysToValue(text)[0]
    return None


def same(actual, expected) -> bool:
    if isinstance(actual, enum.Enum):
        actual = actual.value
    if isinstance(expected, float):
        return isinstance(actual, float) and math.isclose(actual, expected)
    return actual == expected


def property_problems(root: ET.Element, form: QWidget) -> list[str]:
    """Every property the .ui sets exists in the built object's meta-object (a dynamic one only where the .ui says
    stdset="0") and holds the .ui's value afterwards (not clamped, say, by a range set after it)."""
    problems = []
    for element in (*root.iter("widget"), *root.iter("layout")):
        built = find(form, element.get("name"))
        if built is None:
            continue  # reported by class_problems
        meta = meta_object(built)
        for prop in element.findall("property"):
            name, value = prop.get("name"), prop[0]
            where = f"{element.get('name')} ({element.get('class')}): property {name}"
            if prop.get("stdset") == "0":
                if not same(built.property(name), expected_value(None, value)):
                    problems.append(f"{where} is {built.property(name)!r}")
                continue
            if element.tag == "layout" and name in LAYOUT_MARGINS:
                continue
            index = meta.indexOfProperty(name)
            if index < 0:
                hint = " (if the real class has it, declare it in qt_standins.py)"
                problems.append(f"{where} does not exist" + (hint if element.get("class") in STANDINS else ""))
                continue
            expected = expected_value(meta.property(index), value)
            if expected is not None and not same(built.property(name), expected):
                problems.append(f"{where} is {built.property(name)!r} after loading, not {expected!r}")
    for spacer in root.iter("spacer"):
        unknown = {prop.get("name") for prop in spacer.findall("property")} - SPACER_PROPERTIES
        if unknown:
            problems.append(f"spacer {spacer.get('name')}: unknown properties {sorted(unknown)}")
    return problems


def layout_problems(root: ET.Element, form: QWidget) -> list[str]:
    """Items of form layouts sit in the row and role (label, field, both) that the .ui gives them."""
    problems = []
    for element in root.iter("layout"):
        layout = find(form, element.get("name"))
        if element.get("class") != "QFormLayout" or not isinstance(layout, QFormLayout):
            continue
        for item in element.findall("item"):
            child = item[0]
            row, column, span = int(item.get("row")), int(item.get("column")), int(item.get("colspan", "1"))
            placed = layout.itemAt(row, FORM_ROLES[(column, span)])
            placed = placed and (placed.widget() or placed.layout())
            holder = placed.objectName() if placed else None
            if holder != child.get("name"):
                problems.append(f"{element.get('name')}: row {row}, column {column} holds {holder}")
    return problems


def reference_problems(root: ET.Element, form: QWidget) -> list[str]:
    """Connections, buddies and the tab order name widgets of the form; each connection is made."""
    problems = []
    names = {element.get("name") for element in root.iter("widget")}
    made = {}
    for connection in root.iter("connection"):
        sender, signal = connection.findtext("sender"), connection.findtext("signal")
        for end in (sender, connection.findtext("receiver")):
            if end not in names:
                problems.append(f"a connection names {end}, which is not a widget of the .ui")
        made[(sender, signal)] = made.get((sender, signal), 0) + 1
    for (sender, signal), count in made.items():
        built = find(form, sender)
        receivers = built.receivers(SIGNAL(signal)) if built is not None else 0
        if receivers != count:
            problems.append(f"{sender}.{signal} has {receivers} receivers, the .ui connects {count}")
    for widget in root.iter("widget"):
        buddy = widget.findtext("property[@name='buddy']/cstring")
        if buddy is not None:
            label = find(form, widget.get("name"))
            if buddy not in names or label is None or label.buddy() is None or label.buddy().objectName() != buddy:
                problems.append(f"{widget.get('name')}: buddy {buddy} is not set")
    for stop in root.iter("tabstop"):
        if stop.text not in names:
            problems.append(f"tab stop {stop.text} is not a widget of the .ui")
    return problems


def module_uses() -> dict[str, set[str]]:
    """The ``self.ui.<name>`` the module uses, each with the attributes it reads on it (``self.ui.name.attr``);
    ``getattr(self.ui, f"prefix{i}")`` stands for every input channel the panel offers."""
    channels = top_level_constant("MAX_INPUT_CHANNELS")
    uses: dict[str, set[str]] = {}

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Attribute) and is_ui_object(node.value):
            return [node.attr]
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "getattr"
            and is_ui_object(node.args[0])
            and isinstance(node.args[1], ast.JoinedStr)
        ):
            prefix = "".join(part.value for part in node.args[1].values if isinstance(part, ast.Constant))
            return [f"{prefix}{i}" for i in range(channels)]
        return []

    for function in ast.walk(TREE):
        if not isinstance(function, ast.FunctionDef):
            continue
        aliases = {  # combo = self.ui.modelComboBox
            target.id: names(node.value)
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name) and names(node.value)
        }
        for node in ast.walk(function):
            for name in names(node):
                uses.setdefault(name, set())
            if isinstance(node, ast.Attribute):
                used = names(node.value) or aliases.get(getattr(node.value, "id", None), [])
                for name in used:
                    uses.setdefault(name, set()).add(node.attr)
    return uses


def module_problems(form: QWidget) -> list[str]:
    """Every widget the module uses is a widget of the built form, with the members it uses (Qt properties, signals,
    slots and methods)."""
    problems = []
    for name, members in sorted(module_uses().items()):
        widget = find(form, name)
        if not isinstance(widget, QWidget):
            problems.append(f"self.ui.{name} is not a widget of the form")
            continue
        for member in sorted(members):
            if meta_object(widget).indexOfProperty(member) < 0 and not hasattr(widget, member):
                problems.append(f"self.ui.{name}.{member}: {meta_object(widget).className()} has no {member}")
    return problems


def all_problems(ui_text: str) -> list[str]:
    form, messages = load(ui_text)
    if form is None:
        return [*messages, "the form was not built"]
    root = ET.fromstring(ui_text)
    checks = (class_problems, property_problems, layout_problems, reference_problems)
    return messages + [problem for check in checks for problem in check(root, form)] + module_problems(form)


# ----- the panel ---------------------------------------------------------------------------------------------------

UI_ROOT = ET.fromstring(UI_TEXT)


def test_qt_builds_the_panel_without_a_complaint(panel):
    form, messages = panel
    assert messages == []
    assert form is not None and form.objectName() == "MedSegCNN"


def test_every_widget_and_layout_is_built_with_its_class(panel):
    form, _ = panel
    assert class_problems(UI_ROOT, form) == []


def test_every_property_exists_and_holds_its_value(panel):
    form, _ = panel
    assert property_problems(UI_ROOT, form) == []
    assert form.findChild(QWidget, "trainCollapsibleButton").property("collapsed") is True
    assert form.findChild(QWidget, "inputsCollapsibleButton").property("collapsed") is False


def test_form_layout_items_are_where_the_ui_puts_them(panel):
    form, _ = panel
    assert layout_problems(UI_ROOT, form) == []


def test_connections_buddies_and_tab_order_name_widgets_of_the_form(panel):
    form, _ = panel
    assert reference_problems(UI_ROOT, form) == []
    assert form.receivers(SIGNAL("mrmlSceneChanged(vtkMRMLScene*)")) == len(list(UI_ROOT.iter("connection"))) > 0


def test_every_ui_name_the_module_uses_is_a_widget_of_the_form(panel):
    form, _ = panel
    uses = module_uses()
    assert {"applyButton", "modelCardTextBrowser", "inputVolumeSelector3"} <= set(uses)
    assert "currentPathChanged" in uses["modelPathLineEdit"]
    assert {"findData", "currentIndex", "addItem"} <= uses["modelComboBox"]  # through combo = self.ui.modelComboBox
    assert module_problems(form) == []


def test_stand_ins_declare_only_members_of_the_real_classes(qapp):
    for name, standin in STANDINS.items():
        real = REAL_API[name]
        assert issubclass(standin, getattr(QtWidgets, real.base)), name
        meta = standin.staticMetaObject
        declared = {meta.property(i).name() for i in range(meta.propertyOffset(), meta.propertyCount())}
        declared |= {bytes(meta.method(i).name()).decode() for i in range(meta.methodOffset(), meta.methodCount())}
        declared |= {meta.enumerator(i).name() for i in range(meta.enumeratorOffset(), meta.enumeratorCount())}
        assert declared <= real.members, f"{name} declares {sorted(declared - real.members)}"
    # plain Python methods too (the panel harness calls currentNode(), mrmlScene(), ...): the real class's, or an
    # override of its Qt base class, or one of the few named in NOT_REAL
    for name, standin in STANDINS.items():
        base = getattr(QtWidgets, REAL_API[name].base)
        public = {
            member
            for cls in standin.__mro__
            if cls.__module__ == standin.__module__
            for member in vars(cls)
            if not member.startswith("_") and not hasattr(base, member)
        }
        assert public <= REAL_API[name].members | NOT_REAL, f"{name} has {sorted(public - REAL_API[name].members)}"
    # the flag type of ctkPathLineEdit.filters, which PySide6 warns about while it builds the class
    meta = STANDINS["ctkPathLineEdit"].staticMetaObject
    filters = meta.property(meta.indexOfProperty("filters"))
    assert filters.isFlagType() and filters.enumerator().scope() == "ctkPathLineEdit"
    assert filters.enumerator().keysToValue("ctkPathLineEdit::Dirs|ctkPathLineEdit::Writable") == (0x21, True)


# ----- the checks find defects -------------------------------------------------------------------------------------


def first(root: ET.Element, widget_class: str) -> ET.Element:
    return next(element for element in root.iter("widget") if element.get("class") == widget_class)


def add_property(widget: ET.Element, name: str, kind: str, text: str, index: int | None = None) -> None:
    prop = ET.Element("property", name=name)
    ET.SubElement(prop, kind).text = text
    widget.insert(len(widget.findall("property")) if index is None else index, prop)


def unknown_property_on_a_qt_widget(root):
    add_property(first(root, "QLabel"), "wordwarp", "bool", "true")


def property_the_real_slicer_class_lacks(root):
    add_property(first(root, "qMRMLNodeComboBox"), "showHiddenNodes", "bool", "true")


def bad_enum_value(root):
    next(root.iter("enum")).text = "QPlainTextEdit::NoWarp"


def bad_flag_value(root):
    first(root, "ctkPathLineEdit").find("property[@name='filters']/set").text = "ctkPathLineEdit::Directories"


def unknown_widget_class(root):
    first(root, "QTextBrowser").set("class", "QTextBrowzer")


def connection_to_a_missing_slot(root):
    next(root.iter("connection")).find("receiver").text = first(root, "QComboBox").get("name")


def value_set_before_its_range(root):
    bar = first(root, "QProgressBar")
    for prop in bar.findall("property[@name='value']"):
        bar.remove(prop)
    add_property(bar, "value", "number", "500", index=0)


def occupied_form_layout_cell(root):
    layout = next(element for element in root.iter("layout") if element.get("class") == "QFormLayout")
    item = ET.SubElement(layout, "item", row="0", column="0")
    ET.SubElement(item, "widget", attrib={"class": "QLabel", "name": "extraLabel"})


def widget_the_module_uses_renamed(root):
    root.find(".//widget[@name='applyButton']").set("name", "segmentButton")


@pytest.mark.parametrize(
    ("defect", "reported"),
    [
        (unknown_property_on_a_qt_widget, "property wordwarp does not exist"),
        (property_the_real_slicer_class_lacks, "property showHiddenNodes does not exist"),
        (bad_enum_value, "NoWarp"),
        (bad_flag_value, "Directories"),
        (unknown_widget_class, "QTextBrowzer"),
        (connection_to_a_missing_slot, "setMRMLScene"),
        (value_set_before_its_range, "property value is -1 after loading, not 500"),
        (occupied_form_layout_cell, "row 0, column 0"),
        (widget_the_module_uses_renamed, "self.ui.applyButton is not a widget"),
    ],
)
def test_the_checks_report_a_broken_ui(qapp, defect, reported):
    root = copy.deepcopy(UI_ROOT)
    defect(root)
    problems = all_problems(ET.tostring(root, encoding="unicode"))
    assert any(reported in problem for problem in problems), problems
