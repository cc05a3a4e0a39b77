"""Thin stand-ins for the parts of Slicer's Python layer that the ``slicer-core`` wheel lacks, for the panel harness
(Testing/slicer_module/panel_harness.py): ``slicer.i18n``, ``slicer.ScriptedLoadableModule`` and
``slicer.parameterNodeWrapper``. Each follows Slicer's own code (Base/Python/slicer/ in Slicer/Slicer) in what the
module uses, and has nothing else:

- ``i18n``: ``tr`` and ``translate`` return the text (Slicer does so when no language pack is installed).
- ``ScriptedLoadableModule``: the logic's singleton parameter node (``getParameterNode``, as Slicer's), the widget's
  ``parent``, ``layout``, ``resourcePath`` and ``setup``.
- ``parameterNodeWrapper``: ``@parameterNodeWrapper`` with ``Choice`` and ``WithinRange``, for parameters of type
  bool, int, float, str and MRML node (or a ``typing.Union`` of node types and None). Values are stored in the real
  ``vtkMRMLScriptedModuleNode`` as Slicer stores them (``"True"``/``"False"``, ``str(number)``, node references
  under the parameter's name) and validated on writing. ``connectGui`` binds the widgets whose
  ``SlicerParameterName`` property names a parameter, with the connectors of Slicer's ``guiConnectors.py`` for
  QCheckBox, QSpinBox, QDoubleSpinBox, QComboBox (filled with the ``Choice`` values) and qMRMLNodeComboBox.
"""

# Slicer's names are camelCase.
# ruff: noqa: N803

from __future__ import annotations

import types
import typing
import unittest
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vtk
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox, QWidget
from slicer_module.pythonqt import unwrap, wrap
from slicer_module.qt_standins import qMRMLNodeComboBox, qSlicerScriptedLoadableModuleWidget

SLICER_PARAMETER_NAME = "SlicerParameterName"

# ----- slicer.i18n -------------------------------------------------------------------------------------------------


def make_i18n() -> types.ModuleType:
    """``slicer.i18n``: the texts untranslated."""
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


# ----- slicer.ScriptedLoadableModule -------------------------------------------------------------------------------


def make_scripted_loadable_module(slicer: Any, modulePath: Path) -> types.ModuleType:
    """``slicer.ScriptedLoadableModule`` for a module whose main file is ``modulePath`` (its ``Resources`` folder is
    beside it); ``slicer``: the ``slicer`` package, whose ``mrmlScene`` the logic uses."""
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent: Any) -> None:
            self.parent = parent
            self.moduleName = self.__class__.__name__

        def resourcePath(self, filename: str) -> str:
            return str(modulePath.parent / "Resources" / filename)

    class ScriptedLoadableModuleWidget:
        """``parent``: the module panel's frame (a qSlicerScriptedLoadableModuleWidget stand-in made here when None,
        as Slicer makes a top-level one)."""

        def __init__(self, parent: Any = None) -> None:
            super().__init__()
            self.moduleName = self.__class__.__name__.removesuffix("Widget")
            self.developerMode = False
            self.parent = parent if parent else wrap(qSlicerScriptedLoadableModuleWidget())
            self.layout = self.parent.layout()

        def resourcePath(self, filename: str) -> str:
            return str(modulePath.parent / "Resources" / filename)

        def setup(self) -> None:
            """Slicer adds its developer section here, in developer mode only."""

        def cleanup(self) -> None:
            pass

        def onReload(self) -> None:
            raise NotImplementedError("reloading needs the Slicer application")

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent: Any = None) -> None:
            super().__init__()
            self.moduleName = self.__class__.__name__.removesuffix("Logic")
            self.isSingletonParameterNode = True

        def getParameterNode(self) -> Any:
            """The scene's parameter node of this module (its singleton), made if there is none (as Slicer's)."""
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
            return scene.AddNode(self.createParameterNode())

        def createParameterNode(self) -> Any:
            scene = slicer.mrmlScene
            node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, requestedDelay: Any = None, msec: Any = None) -> None:
            pass

    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return module


# ----- slicer.parameterNodeWrapper ---------------------------------------------------------------------------------


class Choice:
    """The value is one of ``choices`` (slicer.parameterNodeWrapper.validators.Choice)."""

    def __init__(self, choices: typing.Iterable[Any]) -> None:
        self.choices = tuple(choices)

    def validate(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class WithinRange:
    """``minimum <= value <= maximum`` (slicer.parameterNodeWrapper.validators.WithinRange)."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value: Any) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


@dataclass
class Parameter:
    """One parameter: ``kind`` is ``bool``, ``int``, ``float``, ``str`` or ``node`` (of ``nodeTypes``)."""

    name: str
    kind: str
    default: Any
    validators: list[Any] = field(default_factory=list)
    node_types: tuple[type, ...] = ()

    def validate(self, value: Any) -> None:
        if self.kind == "node":
            if value is not None and not isinstance(value, self.node_types):
                raise TypeError(f"{self.name}: value must be of type {self.node_types}, is {type(value)}")
        else:
            allowed = {"bool": bool, "int": int, "float": (int, float), "str": str}[self.kind]
            if value is None or not isinstance(value, allowed):
                raise TypeError(f"{self.name}: value must be of type {allowed}, is {type(value)}")
        for validator in self.validators:
            validator.validate(value)

    def isIn(self, node: Any) -> bool:
        return node.HasParameter(self.name)

    def write(self, node: Any, value: Any) -> None:
        self.validate(value)
        if self.kind == "node":
            node.SetParameter(self.name, "")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        elif self.kind == "bool":
            node.SetParameter(self.name, "True" if value else "False")
        else:
            node.SetParameter(self.name, str(value))

    def read(self, node: Any) -> Any:
        if self.kind == "node":
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.kind == "bool":
            return text == "True"
        return {"int": int, "float": float, "str": str}[self.kind](text)


def _parameter(name: str, annotation: Any, default: Any, vtkMRMLNode: type) -> Parameter:
    """The parameter of a class annotation (``Annotated[T, validators...]``, a node class or a Union of them)."""
    validators: list[Any] = []
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *validators = typing.get_args(annotation)
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    nodeTypes = tuple(member for member in members if member is not type(None)) or (annotation,)
    if all(isinstance(member, type) and issubclass(member, vtkMRMLNode) for member in nodeTypes):
        return Parameter(name, "node", default, validators, nodeTypes)
    kind = {bool: "bool", int: "int", float: "float", str: "str"}[annotation]
    if default is None:
        default = {"bool": False, "int": 0, "float": 0.0, "str": ""}[kind]
    return Parameter(name, kind, default, validators)


# ----- GUI connectors (Slicer's guiConnectors.py, for the widgets the module binds) --------------------------------


class Connector:
    """Reads and writes one widget as a parameter's value, and calls back when the user changes it."""

    def __init__(self, widget: Any, parameter: Parameter, signal: str) -> None:
        self.widget, self.parameter = widget, parameter
        self._signal = getattr(widget, signal)
        self._callback: Callable[[], None] | None = None

    def onChanged(self, callback: Callable[[], None] | None) -> None:
        if self._callback is not None:
            self._signal.disconnect(self._changed)
        self._callback = callback
        if callback is not None:
            self._signal.connect(self._changed)

    def _changed(self, *args: Any) -> None:
        if self._callback is not None:
            self._callback()


class CheckBoxConnector(Connector):
    def __init__(self, widget: QCheckBox, parameter: Parameter) -> None:
        super().__init__(widget, parameter, "stateChanged")

    def read(self) -> bool:
        return self.widget.isChecked()

    def write(self, value: bool) -> None:
        self.widget.setChecked(value)


class SpinBoxConnector(Connector):
    """QSpinBox to int, QDoubleSpinBox to float: the range is the WithinRange validator's (else unbounded)."""

    def __init__(self, widget: QSpinBox | QDoubleSpinBox, parameter: Parameter) -> None:
        super().__init__(widget, parameter, "valueChanged")
        withinRange = next((v for v in parameter.validators if isinstance(v, WithinRange)), None)
        if withinRange is not None:
            widget.setRange(withinRange.minimum, withinRange.maximum)
        elif isinstance(widget, QSpinBox):
            widget.setRange(-(2**31), 2**31 - 1)
        else:
            widget.setRange(float("-inf"), float("inf"))

    def read(self) -> Any:
        return self.widget.value()

    def write(self, value: Any) -> None:
        self.widget.setValue(value)


class ComboBoxConnector(Connector):
    """A QComboBox filled with the Choice validator's values (required, as in Slicer)."""

    def __init__(self, widget: QComboBox, parameter: Parameter) -> None:
        super().__init__(widget, parameter, "currentIndexChanged")
        choice = next((v for v in parameter.validators if isinstance(v, Choice)), None)
        if choice is None:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        self.choices = choice.choices
        widget.clear()
        for value in self.choices:
            widget.addItem(str(value))

    def read(self) -> Any:
        return self.choices[self.widget.currentIndex()]

    def write(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"Unable to find value {value} in choices {self.choices}")
        self.widget.setCurrentIndex(self.choices.index(value))


class NodeComboBoxConnector(Connector):
    """A qMRMLNodeComboBox offering the parameter's node types."""

    def __init__(self, widget: qMRMLNodeComboBox, parameter: Parameter) -> None:
        super().__init__(widget, parameter, "currentNodeChanged")
        widget.setProperty("nodeTypes", [nodeType.__name__ for nodeType in parameter.node_types])

    def read(self) -> Any:
        return self.widget.currentNode()

    def write(self, value: Any) -> None:
        self.widget.setCurrentNode(value)


def makeConnector(widget: Any, parameter: Parameter) -> Connector:
    """The connector of a widget (a PySide6 object) for ``parameter``, as Slicer picks it (by the widget's exact
    class and the parameter's type)."""
    kind, cls = parameter.kind, type(widget)
    if kind == "bool" and cls is QCheckBox:
        return CheckBoxConnector(widget, parameter)
    if (kind == "int" and cls is QSpinBox) or (kind in ("int", "float") and cls is QDoubleSpinBox):
        return SpinBoxConnector(widget, parameter)
    if kind in ("int", "float", "str", "bool") and cls is QComboBox:
        return ComboBoxConnector(widget, parameter)
    if kind == "node" and cls is qMRMLNodeComboBox:
        return NodeComboBoxConnector(widget, parameter)
    raise RuntimeError(f"Unable to create GUI connector from parameter '{parameter.name}' to widget type '{cls}'.")


def make_parameter_node_wrapper(slicer: Any) -> types.ModuleType:
    """``slicer.parameterNodeWrapper`` (see the module's docstring)."""
    module = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(classtype: type) -> type:
        hints = typing.get_type_hints(classtype, include_extras=True)
        parameters = {
            name: _parameter(name, annotation, classtype.__dict__.get(name), slicer.vtkMRMLNode)
            for name, annotation in hints.items()
        }

        def initialize(self: Any, parameterNode: Any) -> None:
            self.parameterNode = parameterNode
            self._guis: dict[int, tuple[dict[str, Connector], int]] = {}
            self._nextTag = 0
            self._updatingGUI = False
            for parameter in parameters.values():
                if not parameter.isIn(parameterNode):
                    parameter.write(parameterNode, parameter.default)

        def makeProperty(parameter: Parameter) -> property:
            def get(self: Any) -> Any:
                return parameter.read(self.parameterNode)

            def set_(self: Any, value: Any) -> None:
                with slicer.util.NodeModify(self.parameterNode):
                    parameter.write(self.parameterNode, value)

            return property(get, set_)

        def updateGUI(self: Any) -> None:
            if self._updatingGUI:
                return
            self._updatingGUI = True
            try:
                for connectors, _tag in self._guis.values():
                    for name, connector in connectors.items():
                        connector.write(getattr(self, name))
            finally:
                self._updatingGUI = False

        def guiChanged(self: Any, name: str, connector: Connector) -> Callable[[], None]:
            def callback() -> None:
                if not self._updatingGUI:
                    setattr(self, name, connector.read())

            return callback

        def connectGui(self: Any, gui: Any) -> int:
            """Binds the widgets of ``gui`` (a widget, or an object whose attributes are widgets) that name a
            parameter in their SlicerParameterName property; returns the tag for disconnectGui."""
            if getattr(gui, "isWidgetType", lambda: False)():
                widgets = gui.findChildren(QWidget)
            else:
                widgets = list(vars(gui).values())
            connectors = {}
            for widget in widgets:
                name = widget.property(SLICER_PARAMETER_NAME)
                if name:
                    if name not in parameters:
                        raise ValueError(f"Cannot find a param with the given name: {name}")
                    connectors[name] = makeConnector(unwrap(widget), parameters[name])
            for name, connector in connectors.items():
                connector.write(getattr(self, name))
                connector.onChanged(guiChanged(self, name, connector))
            tag = self._nextTag
            self._nextTag += 1
            observer = self.parameterNode.AddObserver(
                vtk.vtkCommand.ModifiedEvent, lambda caller, event: updateGUI(self)
            )
            self._guis[tag] = (connectors, observer)
            return tag

        def disconnectGui(self: Any, tag: int) -> None:
            connectors, observer = self._guis.pop(tag, ({}, None))
            for connector in connectors.values():
                connector.onChanged(None)
            if observer is not None:
                self.parameterNode.RemoveObserver(observer)

        for name, parameter in parameters.items():
            setattr(classtype, name, makeProperty(parameter))
        classtype.__init__ = initialize
        classtype.allParameters = parameters
        classtype.connectGui = connectGui
        classtype.disconnectGui = disconnectGui
        classtype.StartModify = lambda self: self.parameterNode.StartModify()
        classtype.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
        classtype.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
            event, callback, priority
        )
        classtype.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
        classtype.Modified = lambda self: self.parameterNode.Modified()
        return classtype

    module.parameterNodeWrapper = parameterNodeWrapper
    module.Choice = Choice
    module.WithinRange = WithinRange
    module.SlicerParameterNamePropertyName = SLICER_PARAMETER_NAME
    return module
