"""Runs the module's real panel code (MedSegCNN/MedSegCNNModule/widget.py) outside Slicer, on a real MRML scene.

What is real: the panel's code, the module's logic, parameter record and installer, MedSegCNNLib (its background
processes included), the ``slicer-core`` wheel's MRML scene and its ``slicer.util`` (Slicer's own file:
``getNodesByClass``, ``VTKObservationMixin``, ``NodeModify``, ``WaitCursor``, ``tryWithErrorDisplay``,
``childWidgetVariables``, ``loadUI``, ``startupEnvironment``), Qt (PySide6) and its loader building the panel's
.ui. What stands in, only while :func:`open_panel` holds:

- ``qt``: PySide6's classes, with PythonQt's attribute rules (pythonqt.py); ``qt.QUiLoader`` builds the Slicer and
  CTK widgets as the stand-ins of qt_standins.py; ``qt.QFileDialog`` answers from :class:`Dialogs`.
- ``slicer.i18n``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` (slicer_standins.py).
- ``slicer.mrmlScene`` (the test's scene), ``slicer.app`` (:class:`SlicerApp`) and ``slicer.util``'s message
  boxes (:class:`Dialogs`, which records what the panel showed).

An exception that escapes a Qt slot (Slicer prints it to the Python console and goes on) is recorded in
``Panel.slotErrors``.
"""

# Slicer's and Qt's names are camelCase.
# ruff: noqa: N803, N815

from __future__ import annotations

import importlib
import os
import sys
import time
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QDir, QFile, QProcessEnvironment, Qt, QTimer, QtMsgType, qInstallMessageHandler
from PySide6.QtGui import QCursor, QTextCursor
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget
from slicer_module.pythonqt import PythonQtClass, PythonQtObject, unwrap, wrap
from slicer_module.qt_standins import make_loader, qSlicerScriptedLoadableModuleWidget, replay_scene_connections
from slicer_module.slicer_standins import make_i18n, make_parameter_node_wrapper, make_scripted_loadable_module

ROOT = Path(__file__).resolve().parents[2]
MODULE_FOLDER = ROOT / "MedSegCNN"
PACKAGE = "MedSegCNNModule"
#: How long a background task may take before the harness gives up on it (not a test of its speed).
TASK_DEADLINE_S = 300


@dataclass
class Dialogs:
    """The message boxes and file dialogs the panel showed, in order, as ``(kind, text)``; and the answers the
    file and confirmation dialogs give (a file dialog without a queued answer is cancelled)."""

    shown: list[tuple[str, str]] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)  # answers of QFileDialog.getExistingDirectory
    saveFiles: list[str] = field(default_factory=list)  # answers of QFileDialog.getSaveFileName
    confirm: bool = False

    def texts(self, kind: str = "error") -> list[str]:
        return [text for shownKind, text in self.shown if shownKind == kind]

    def _show(self, kind: str, text: str, kwargs: dict[str, Any]) -> None:
        self.shown.append((kind, str(text)))
        self.details.append(str(kwargs.get("detailedText", "")))

    def errorDisplay(self, text: str, windowTitle: Any = None, parent: Any = None, standardButtons: Any = None,
                     **kwargs: Any) -> None:  # fmt: skip
        self._show("error", text, kwargs)

    def warningDisplay(self, text: str, windowTitle: Any = None, parent: Any = None, standardButtons: Any = None,
                       **kwargs: Any) -> None:  # fmt: skip
        self._show("warning", text, kwargs)

    def infoDisplay(self, text: str, windowTitle: Any = None, parent: Any = None, standardButtons: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        self._show("info", text, kwargs)

    def confirmOkCancelDisplay(self, text: str, windowTitle: Any = None, parent: Any = None, **kwargs: Any) -> bool:
        self._show("confirm", text, kwargs)
        return self.confirm

    def fileDialogClass(self) -> type:
        """``qt.QFileDialog``: its static dialogs record their caption and return the next queued answer (PythonQt
        returns the chosen path as a string, "" when cancelled)."""
        dialogs = self

        class QFileDialog:
            @staticmethod
            def getExistingDirectory(parent: Any = None, caption: str = "", directory: str = "", *args: Any) -> str:
                dialogs.shown.append(("directory dialog", caption))
                return dialogs.directories.pop(0) if dialogs.directories else ""

            @staticmethod
            def getSaveFileName(parent: Any = None, caption: str = "", directory: str = "", *args: Any) -> str:
                dialogs.shown.append(("save dialog", caption))
                return dialogs.saveFiles.pop(0) if dialogs.saveFiles else ""

        return QFileDialog


class SlicerApp:
    """``slicer.app``: the members of qSlicerApplication that slicer.util and the module use."""

    applicationName = "3D Slicer"

    def testingEnabled(self) -> bool:
        return False  # message boxes are shown (here: recorded), as for a user

    def processEvents(self) -> None:
        QApplication.processEvents()

    def setOverrideCursor(self, cursor: Any) -> None:
        QApplication.setOverrideCursor(cursor)

    def restoreOverrideCursor(self) -> None:
        QApplication.restoreOverrideCursor()

    def startupEnvironment(self) -> QProcessEnvironment:
        return QProcessEnvironment.systemEnvironment()

    def layoutManager(self) -> None:
        """No view layout here (the Slicer app without a main window returns None too): slice views are the
        scene's slice composite nodes only."""
        return None


class PanelUiLoader:
    """``qt.QUiLoader``: Qt's loader with the Slicer and CTK stand-ins; the form it builds gives its scene to the
    widgets the .ui connects, and comes back as PythonQt shows it."""

    def load(self, device: QFile) -> PythonQtObject | None:
        path = Path(device.fileName())
        loader = make_loader()
        loader.setWorkingDirectory(QDir(str(path.parent)))
        form = loader.load(device)
        if form is None:
            return None
        replay_scene_connections(form, ET.parse(path).getroot())
        return wrap(form)


def make_qt(dialogs: Dialogs) -> types.ModuleType:
    """``qt``: the PySide6 classes the module and slicer.util use."""
    module = types.ModuleType("qt")
    for name, cls in {"QTimer": QTimer, "QWidget": QWidget}.items():
        setattr(module, name, PythonQtClass(cls))
    module.Qt, module.QTextCursor, module.QCursor = Qt, QTextCursor, QCursor
    module.QApplication, module.QFile, module.QMessageBox = QApplication, QFile, QMessageBox
    module.QUiLoader = PanelUiLoader
    module.QFileDialog = dialogs.fileDialogClass()
    return module


@dataclass
class Panel:
    """The panel (``widget``, a MedSegCNNWidget) on ``scene``, its widgets (``ui``, as the panel's code sees them),
    what it showed (``dialogs``) and the exceptions that escaped its slots (``slotErrors``)."""

    widget: Any
    ui: Any
    scene: Any
    dialogs: Dialogs
    slotErrors: list[BaseException]

    @property
    def status(self) -> str:
        return self.ui.statusLabel.text

    def choose(self, selectorName: str, node: Any) -> None:
        """Picks ``node`` (None: the "none" item) in the node selector ``selectorName`` as a user does: in its list."""
        combo = unwrap(getattr(self.ui, selectorName))._combo
        index = combo.findData(node.GetID() if node is not None else "")
        assert index >= 0, f"{selectorName} does not offer {node.GetName() if node else 'none'}"
        combo.setCurrentIndex(index)

    def chooseItem(self, comboName: str, text: str) -> None:
        """Picks the item ``text`` in the combo box ``comboName`` as a user does."""
        combo = unwrap(getattr(self.ui, comboName))
        index = combo.findText(text)
        assert index >= 0, f"{comboName} has no item {text!r}"
        combo.setCurrentIndex(index)

    def typePath(self, pathEditName: str, path: str | Path) -> None:
        """Types ``path`` into the path field ``pathEditName``."""
        unwrap(getattr(self.ui, pathEditName)).setCurrentPath(str(path))

    def waitForTask(self) -> str:
        """Polls the running task with the panel's own ``onPoll`` (as its timer does) until the panel lets go of it;
        returns the status line."""
        deadline = time.monotonic() + TASK_DEADLINE_S
        while self.widget._task is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the task did not end within {TASK_DEADLINE_S} s; log:\n{self.widget._task.log}")
            time.sleep(0.05)
            QApplication.processEvents()
            self.widget.onPoll()
        assert not self.widget._pollTimer.isActive()
        return self.status


def application() -> QApplication:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display here: Qt's offscreen platform plugin
    return QApplication.instance() or QApplication([])


@contextmanager
def open_panel(monkeypatch: pytest.MonkeyPatch, scene: Any) -> Iterator[Panel]:
    """The module's panel, set up and entered on ``scene`` with the stand-ins installed (see the module's
    docstring); closed, and the stand-ins removed, afterwards."""
    application()
    import slicer
    import slicer.util

    dialogs = Dialogs()
    slotErrors: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, traceback: slotErrors.append(error))
    previousHandler = qInstallMessageHandler(_quietOffscreen)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", SlicerApp(), raising=False)
    standins = {
        "qt": make_qt(dialogs),
        "slicer.i18n": make_i18n(),
        "slicer.ScriptedLoadableModule": make_scripted_loadable_module(slicer, MODULE_FOLDER / "MedSegCNN.py"),
        "slicer.parameterNodeWrapper": make_parameter_node_wrapper(slicer),
    }
    for name, module in standins.items():
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.removeprefix("slicer."), module, raising=False)
    for name in ("errorDisplay", "warningDisplay", "infoDisplay", "confirmOkCancelDisplay"):
        monkeypatch.setattr(slicer.util, name, getattr(dialogs, name))
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
    monkeypatch.syspath_prepend(str(MODULE_FOLDER))
    _forgetPackage()
    try:
        widgetModule = importlib.import_module(f"{PACKAGE}.widget")
        parent = wrap(qSlicerScriptedLoadableModuleWidget())
        widget = widgetModule.MedSegCNNWidget(parent)
        widget.setup()
        unwrap(parent).show()  # offscreen: the panel is shown, as Slicer shows the module's panel
        unwrap(parent).setEntered(True)
        widget.enter()
        panel = Panel(widget, widget.ui, scene, dialogs, slotErrors)
        try:
            yield panel
        finally:
            widget.exit()
            unwrap(parent).setEntered(False)
            widget.cleanup()
            unwrap(parent).findChild(QWidget, "MedSegCNN").setMRMLScene(None)  # the selectors stop observing
    finally:
        _forgetPackage()
        qInstallMessageHandler(previousHandler)


def _quietOffscreen(kind: QtMsgType, context: Any, message: str) -> None:
    """Qt's messages, less the offscreen platform's note on every window shown."""
    if message != "This plugin does not support propagateSizeHints()":
        sys.stderr.write(f"{message}\n")


def _forgetPackage() -> None:
    """Removes the module's package from ``sys.modules``, so that each panel imports it with its stand-ins."""
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]
