"""Stand-ins for the Slicer and CTK widget classes of MedSegCNN/Resources/UI/MedSegCNN.ui, so that Qt's own UI
loader (PySide6's QUiLoader, Qt 6) can build the panel outside the Slicer app: for the loader checks
(Testing/slicer_module/test_ui_loader.py), the catalog preview (Resources/Screenshots/render_panel_preview.py) and
the panel harness (Testing/slicer_module/panel_harness.py), which runs the panel's code on a real MRML scene.

Each stand-in derives from the Qt class its real class derives from, has the real class's name, and declares as Qt
properties, signals and slots only members the real class has (:data:`REAL_API` names them and the header they
were read from). Qt's loader turns a property it cannot find into a silent dynamic property, so a property the .ui
sets that the real class lacks stays visible as one that the stand-in lacks too. The widgets' looks are rough
imitations for the preview. Of the real widgets' behaviour, collapsing is imitated, and what the panel harness
needs: the node selectors list the nodes of a real ``vtkMRMLScene`` (given with ``setMRMLScene``) and select one,
the table view shows its table node's rows, the Segment Editor keeps its segmentation and source volume in its real
parameter node. Their plain Python methods (``currentNode``, ``mrmlScene``, ...) are
the real classes' too (:data:`REAL_API`), except those named in :data:`NOT_REAL`.

PySide6 cannot pass a VTK object through Qt's meta-call (a ``vtkMRMLScene*`` argument is an unknown type to it), so
the .ui's ``mrmlSceneChanged(vtkMRMLScene*)`` connections are made by Qt's loader but replayed in Python
(:func:`replay_scene_connections`), and ``qMRMLNodeComboBox.currentNodeChanged`` carries a Python object.
"""

# Qt and Slicer names (ctkPathLineEdit, setMRMLScene, currentPath) must be spelled as in C++.
# ruff: noqa: N801, N815

from __future__ import annotations

import enum
import warnings
import xml.etree.ElementTree as ET
from typing import Any, NamedTuple

from PySide6.QtCore import Property, QEvent, QFlag, QPoint, QRect, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QHBoxLayout,
    QSizePolicy,
    QStyle,
    QStyleOptionButton,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


class RealClass(NamedTuple):
    """What a stand-in may declare: the real class's Qt base and the members (Q_PROPERTY, Q_FLAGS, signals, slots) of
    the real class and its Slicer/CTK ancestors that the stand-ins rely on, as read in ``header``."""

    base: str
    header: str
    members: frozenset[str]


#: The real classes' members the stand-ins declare, checked against the Slicer and CTK sources:
#: commontk/CTK Libs/Widgets/ctkCollapsibleButton.h, Libs/Widgets/ctkPathLineEdit.h; Slicer/Slicer
#: Libs/MRML/Widgets/qMRMLWidget.h, qMRMLNodeComboBox.h, qMRMLAbstractViewWidget.h, qMRMLPlotWidget.h,
#: qMRMLTableView.h, Base/QTGUI/qSlicerAbstractModuleWidget.h, Modules/Loadable/Segmentations/Widgets/
#: qMRMLSegmentEditorWidget.h. Inherited Qt members (text, toolTip, minimumSize, ...) come from the real Qt base class.
REAL_API: dict[str, RealClass] = {
    # class ctkCollapsibleButton : public QAbstractButton; Q_PROPERTY(bool collapsed ... NOTIFY contentsCollapsed)
    "ctkCollapsibleButton": RealClass(
        "QAbstractButton", "CTK Libs/Widgets/ctkCollapsibleButton.h", frozenset({"collapsed", "contentsCollapsed"})
    ),
    # class ctkPathLineEdit : public QWidget; Q_FLAGS(Filters); Q_PROPERTY(Filters filters ...),
    # Q_PROPERTY(QString currentPath ... USER true), Q_PROPERTY(QString settingKey ...);
    # signal currentPathChanged(const QString&); slot setCurrentPath(const QString&)
    "ctkPathLineEdit": RealClass(
        "QWidget",
        "CTK Libs/Widgets/ctkPathLineEdit.h",
        frozenset({"Filters", "filters", "currentPath", "settingKey", "currentPathChanged", "setCurrentPath"}),
    ),
    # class qMRMLWidget : public QWidget; slot setMRMLScene(vtkMRMLScene*); signal mrmlSceneChanged(vtkMRMLScene*);
    # Q_INVOKABLE vtkMRMLScene* mrmlScene() const
    "qMRMLWidget": RealClass(
        "QWidget",
        "Slicer Libs/MRML/Widgets/qMRMLWidget.h",
        frozenset({"setMRMLScene", "mrmlSceneChanged", "mrmlScene"}),
    ),
    # class qMRMLNodeComboBox : public QWidget; Q_PROPERTY(QStringList nodeTypes ...), bool showChildNodeTypes,
    # bool noneEnabled, bool addEnabled, bool removeEnabled, bool renameEnabled, QString noneDisplay,
    # QString currentNodeID; slots setMRMLScene(vtkMRMLScene*), setCurrentNode(vtkMRMLNode*),
    # setCurrentNodeID(const QString&); signal currentNodeChanged(vtkMRMLNode*); Q_INVOKABLE currentNode(),
    # nodeCount(), nodeFromIndex(int); mrmlScene() (Q_INVOKABLE in qMRMLNodeComboBox.h)
    "qMRMLNodeComboBox": RealClass(
        "QWidget",
        "Slicer Libs/MRML/Widgets/qMRMLNodeComboBox.h",
        frozenset(
            {
                "nodeTypes",
                "showChildNodeTypes",
                "noneEnabled",
                "addEnabled",
                "removeEnabled",
                "renameEnabled",
                "noneDisplay",
                "setMRMLScene",
                "currentNodeID",
                "setCurrentNode",
                "setCurrentNodeID",
                "currentNodeChanged",
                "currentNode",
                "nodeCount",
                "nodeFromIndex",
                "mrmlScene",
            }
        ),
    ),
    # class qMRMLPlotWidget : public qMRMLAbstractViewWidget (: public qMRMLWidget);
    # slot setMRMLPlotViewNode(vtkMRMLPlotViewNode*); Q_INVOKABLE mrmlPlotViewNode(); mrmlScene()
    "qMRMLPlotWidget": RealClass(
        "QWidget",
        "Slicer Libs/MRML/Widgets/qMRMLPlotWidget.h, qMRMLAbstractViewWidget.h",
        frozenset({"setMRMLScene", "mrmlSceneChanged", "setMRMLPlotViewNode", "mrmlPlotViewNode", "mrmlScene"}),
    ),
    # class qMRMLSegmentEditorWidget : public qMRMLWidget (Modules/Loadable/Segmentations/Widgets/, Slicer >= 5.2);
    # Q_PROPERTY(bool segmentationNodeSelectorVisible ...), Q_PROPERTY(bool sourceVolumeNodeSelectorVisible ...);
    # slots setMRMLScene(vtkMRMLScene*), setMRMLSegmentEditorNode(vtkMRMLSegmentEditorNode*),
    # setSegmentationNode(vtkMRMLNode*), setSourceVolumeNode(vtkMRMLNode*); Q_INVOKABLE mrmlSegmentEditorNode(),
    # segmentationNode(), sourceVolumeNode(), setupViewObservations(), removeViewObservations(); mrmlSceneChanged and
    # mrmlScene() from qMRMLWidget
    "qMRMLSegmentEditorWidget": RealClass(
        "QWidget",
        "Slicer Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h",
        frozenset(
            {
                "segmentationNodeSelectorVisible",
                "sourceVolumeNodeSelectorVisible",
                "setMRMLScene",
                "mrmlSceneChanged",
                "mrmlScene",
                "setMRMLSegmentEditorNode",
                "mrmlSegmentEditorNode",
                "setSegmentationNode",
                "segmentationNode",
                "setSourceVolumeNode",
                "sourceVolumeNode",
                "setupViewObservations",
                "removeViewObservations",
            }
        ),
    ),
    # class qMRMLTableView : public QTableView; slots setMRMLScene(vtkMRMLScene*), setMRMLTableNode(vtkMRMLTableNode*);
    # signal mrmlSceneChanged(vtkMRMLScene*); Q_INVOKABLE mrmlTableNode(), mrmlScene()
    "qMRMLTableView": RealClass(
        "QTableView",
        "Slicer Libs/MRML/Widgets/qMRMLTableView.h",
        frozenset({"setMRMLScene", "mrmlSceneChanged", "setMRMLTableNode", "mrmlTableNode", "mrmlScene"}),
    ),
    # class qSlicerScriptedLoadableModuleWidget : public qSlicerAbstractModuleWidget (: qSlicerWidget : QWidget);
    # Q_PROPERTY(bool isEntered READ isEntered) in qSlicerAbstractModuleWidget.h: the panel's ``self.parent``
    "qSlicerScriptedLoadableModuleWidget": RealClass(
        "QWidget", "Slicer Base/QTGUI/qSlicerAbstractModuleWidget.h", frozenset({"isEntered"})
    ),
}
#: Stand-in methods that the real classes lack, for the preview and the harness.
NOT_REAL = frozenset({"showNodeName", "setEntered"})

_LINE = 0.5  # pen width of the stand-ins' outlines (px)


class qMRMLWidget(QWidget):
    """Base of the MRML widgets; the panel's top-level widget (its scene signal feeds the MRML selectors)."""

    mrmlSceneChanged = Signal("vtkMRMLScene*")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scene: Any = None
        self._sceneReceivers: list[QWidget] = []  # filled by replay_scene_connections

    @Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene) -> None:
        """Keeps ``scene`` and gives it to the widgets that the .ui connects to mrmlSceneChanged (see the module's
        docstring: the connections Qt's loader made are replayed in Python)."""
        self._scene = scene
        for receiver in self._sceneReceivers:
            receiver.setMRMLScene(scene)

    def mrmlScene(self) -> Any:
        return self._scene


class ctkCollapsibleButton(QAbstractButton):
    """A section header (an arrow and the title) over its contents, which it hides when collapsed."""

    contentsCollapsed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setCheckable(True)
        self.setChecked(True)  # checked = expanded, as in CTK
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._hidden: list[QWidget] = []  # the contents hidden by collapsing, shown again on expanding
        self.toggled.connect(self._showContents)
        self._updateMargins()

    def _getCollapsed(self) -> bool:
        return not self.isChecked()

    def _setCollapsed(self, collapsed: bool) -> None:
        self.setChecked(not collapsed)

    collapsed = Property(bool, _getCollapsed, _setCollapsed)

    def _headerHeight(self) -> int:
        return self.fontMetrics().height() + 10

    def _updateMargins(self) -> None:
        self.setContentsMargins(1, self._headerHeight() + 1, 1, 1)

    def _showContents(self, expanded: bool) -> None:
        if expanded:
            for child in self._hidden:
                child.show()
            self._hidden.clear()
        else:
            for child in self.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly):
                if not child.isHidden():
                    child.hide()
                    self._hidden.append(child)
        self.updateGeometry()
        self.contentsCollapsed.emit(not expanded)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Polish and not self.isChecked():
            self._showContents(False)  # collapsed by the .ui before its contents were made
        elif event.type() == QEvent.Type.FontChange:
            self._updateMargins()
        return super().event(event)

    def sizeHint(self) -> QSize:
        if self.isChecked() and self.layout() is not None:
            return super().sizeHint()
        return QSize(self.fontMetrics().horizontalAdvance(self.text()) + 40, self._headerHeight())

    def minimumSizeHint(self) -> QSize:
        if self.isChecked() and self.layout() is not None:
            return super().minimumSizeHint()
        return self.sizeHint()

    def hitButton(self, pos: QPoint) -> bool:
        return pos.y() < self._headerHeight()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        header = QRect(0, 0, self.width(), self._headerHeight())
        option = QStyleOptionButton()
        option.initFrom(self)
        option.rect = header
        self.style().drawControl(QStyle.ControlElement.CE_PushButtonBevel, option, painter, self)
        arrow = QStyleOptionButton()
        arrow.initFrom(self)
        arrow.rect = QRect(6, (header.height() - 12) // 2, 12, 12)
        indicator = QStyle.PrimitiveElement.PE_IndicatorArrowDown
        if not self.isChecked():
            indicator = QStyle.PrimitiveElement.PE_IndicatorArrowRight
        self.style().drawPrimitive(indicator, arrow, painter, self)
        text = header.adjusted(24, 0, -4, 0)
        painter.drawText(text, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, self.text())
        if self.isChecked():
            painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), _LINE))
            painter.drawRect(QRect(0, header.height(), self.width() - 1, self.height() - header.height() - 1))
        painter.end()


with warnings.catch_warnings():
    # PySide6 (6.11, 6.12) first tries to add a property whose type is a flag of the class being defined before it
    # has registered that flag, warns, then adds it; test_ui_loader.py checks that it is a flag property. (Before
    # 6.11 it stays an unknown type, and the tests fail: PySide6-Essentials>=6.11 is needed.)
    warnings.filterwarnings("ignore", message=r".*Failed to add property \"filters\"", category=RuntimeWarning)

    class ctkPathLineEdit(QWidget):
        """A path field with a browse button; ``filters`` (what may be chosen) is the real class's flag type."""

        @QFlag
        class Filters(enum.Flag):
            """ctkPathLineEdit::Filter (the values of QDir::Filter)."""

            Dirs = 0x001
            Files = 0x002
            Drives = 0x004
            NoSymLinks = 0x008
            AllEntries = 0x007
            TypeMask = 0x00F
            Readable = 0x010
            Writable = 0x020
            Executable = 0x040
            PermissionMask = 0x070
            Modified = 0x080
            Hidden = 0x100
            System = 0x200
            AccessMask = 0x3F0
            AllDirs = 0x400
            CaseSensitive = 0x800
            NoDotAndDotDot = 0x1000
            NoDot = 0x2000
            NoDotDot = 0x4000

        currentPathChanged = Signal(str)

        def __init__(self, parent: QWidget | None = None) -> None:
            super().__init__(parent)
            self._filters = self.Filters.AllEntries
            self._settingKey = ""
            layout = QHBoxLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            layout.setSpacing(2)
            self._combo = QComboBox(self)
            self._combo.setEditable(True)
            self._combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self._combo.currentTextChanged.connect(self.currentPathChanged)
            browse = QToolButton(self)
            browse.setText("...")
            layout.addWidget(self._combo)
            layout.addWidget(browse)

        def _getFilters(self):
            return self._filters

        def _setFilters(self, filters) -> None:
            self._filters = filters

        filters = Property("ctkPathLineEdit::Filters", _getFilters, _setFilters)

        def _getSettingKey(self) -> str:
            return self._settingKey

        def _setSettingKey(self, key: str) -> None:
            self._settingKey = key

        settingKey = Property(str, _getSettingKey, _setSettingKey)

        def _getCurrentPath(self) -> str:
            return self._combo.currentText()

        @Slot(str)
        def setCurrentPath(self, path: str) -> None:
            self._combo.setEditText(path)

        currentPath = Property(str, _getCurrentPath, setCurrentPath, user=True)


def _flag_property(name: str, after: str = "") -> Property:
    """A bool Qt property kept in the widget's ``_flags[name]``; ``after``: a method the setter calls next."""

    def get(self) -> bool:
        return self._flags[name]

    def set_(self, value: bool) -> None:
        self._flags[name] = bool(value)
        if after:
            getattr(self, after)()

    return Property(bool, get, set_)


class qMRMLNodeComboBox(QWidget):
    """A node selector. Without a scene it shows one item, the "none" item or a node name given with
    :meth:`showNodeName` (the preview); with a real scene it lists the scene's nodes of its ``nodeTypes`` (not
    those hidden from editors; subclasses only with ``showChildNodeTypes``) after the "none" item if
    ``noneEnabled``, follows nodes being added and removed, and selects the first node when "none" is not
    allowed. A user picks a node in its inner combo box."""

    currentNodeChanged = Signal(object)  # vtkMRMLNode* in the real class (see the module's docstring)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._nodeTypes: list[str] = []
        self._flags = {
            "showChildNodeTypes": True,
            "noneEnabled": False,
            "addEnabled": True,
            "removeEnabled": True,
            "renameEnabled": False,
        }
        self._noneDisplay = "None"
        self._nodeName = ""
        self._scene: Any = None
        self._observerTags: list[int] = []
        self._currentNodeID = ""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._combo = QComboBox(self)
        self._combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._combo.currentIndexChanged.connect(self._onItemChosen)
        layout.addWidget(self._combo)
        self._showItem()

    def showNodeName(self, name: str) -> None:
        """Preview only (no scene here; the real class has no such method): show ``name`` as the current node."""
        self._nodeName = name
        self._showItem()

    def _showItem(self) -> None:
        if self._scene is not None:
            self._listNodes()
            return
        self._combo.blockSignals(True)
        self._combo.clear()
        text = self._nodeName or (self._noneDisplay if self._flags["noneEnabled"] else "")
        self._combo.addItem(text)
        self._combo.blockSignals(False)

    # ----- on a real scene ---------------------------------------------------------------------------------------

    def _nodes(self) -> list[Any]:
        """The scene's nodes this selector offers, in the scene's order."""
        nodes = []
        for index in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(index)
            if node.GetHideFromEditors():
                continue
            if self._flags["showChildNodeTypes"]:
                offered = any(node.IsA(node_type) for node_type in self._nodeTypes)
            else:
                offered = node.GetClassName() in self._nodeTypes
            if offered:
                nodes.append(node)
        return nodes

    def _listNodes(self) -> None:
        """Lists the nodes again, keeping the current one if it is still there."""
        ids = [node.GetID() for node in self._nodes()]
        current = self._currentNodeID if self._currentNodeID in ids else ""
        if not current and not self._flags["noneEnabled"] and ids:
            current = ids[0]
        self._combo.blockSignals(True)
        self._combo.clear()
        if self._flags["noneEnabled"]:
            self._combo.addItem(self._noneDisplay, "")
        for node_id in ids:
            self._combo.addItem(self._scene.GetNodeByID(node_id).GetName(), node_id)
        self._combo.setCurrentIndex(self._combo.findData(current))
        self._combo.blockSignals(False)
        self._select(current)

    def _select(self, node_id: str) -> None:
        if node_id != self._currentNodeID:
            self._currentNodeID = node_id
            self.currentNodeChanged.emit(self.currentNode())

    def _onItemChosen(self, index: int) -> None:
        if self._scene is not None:
            self._select(self._combo.itemData(index) or "" if index >= 0 else "")

    def _onSceneChanged(self, caller: Any, event: str) -> None:
        self._listNodes()

    @Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene) -> None:
        """Observes ``scene`` (None: forgets the scene) and lists its nodes."""
        if self._scene is not None:
            for tag in self._observerTags:
                self._scene.RemoveObserver(tag)
        self._observerTags = []
        self._scene = scene
        if scene is None:
            self._currentNodeID = ""
            self._showItem()
            return
        for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent, scene.EndImportEvent):
            self._observerTags.append(scene.AddObserver(event, self._onSceneChanged))
        self._listNodes()

    def mrmlScene(self) -> Any:
        return self._scene

    def currentNode(self) -> Any:
        """The selected node, or None."""
        if self._scene is None or not self._currentNodeID:
            return None
        return self._scene.GetNodeByID(self._currentNodeID)

    def setCurrentNode(self, node: Any) -> None:
        self.setCurrentNodeID(node.GetID() if node is not None else "")

    def _getCurrentNodeID(self) -> str:
        return self._currentNodeID

    @Slot(str)
    def setCurrentNodeID(self, node_id: str) -> None:
        """Selects the node ``node_id``; one that is not offered selects none (as in the real class)."""
        index = self._combo.findData(node_id) if node_id else -1
        node_id = node_id if index >= 0 else ""
        self._combo.blockSignals(True)
        self._combo.setCurrentIndex(self._combo.findData(node_id))
        self._combo.blockSignals(False)
        self._select(node_id)

    currentNodeID = Property(str, _getCurrentNodeID, setCurrentNodeID)

    def nodeCount(self) -> int:
        return len(self._nodes()) if self._scene is not None else 0

    def nodeFromIndex(self, index: int) -> Any:
        nodes = self._nodes() if self._scene is not None else []
        return nodes[index] if 0 <= index < len(nodes) else None

    # ----- properties --------------------------------------------------------------------------------------------

    def _getNodeTypes(self) -> list[str]:
        return list(self._nodeTypes)

    def _setNodeTypes(self, types: list[str]) -> None:
        self._nodeTypes = list(types)
        self._showItem()

    nodeTypes = Property("QStringList", _getNodeTypes, _setNodeTypes)

    def _getNoneDisplay(self) -> str:
        return self._noneDisplay

    def _setNoneDisplay(self, text: str) -> None:
        self._noneDisplay = text
        self._showItem()

    noneDisplay = Property(str, _getNoneDisplay, _setNoneDisplay)

    showChildNodeTypes = _flag_property("showChildNodeTypes", "_showItem")
    noneEnabled = _flag_property("noneEnabled", "_showItem")
    addEnabled = _flag_property("addEnabled", "_showItem")
    removeEnabled = _flag_property("removeEnabled", "_showItem")
    renameEnabled = _flag_property("renameEnabled", "_showItem")


class qMRMLPlotWidget(qMRMLWidget):
    """An empty plot: a white canvas with two axes; keeps the plot view node it is given."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._plotViewNode: Any = None

    @Slot("vtkMRMLPlotViewNode*")
    def setMRMLPlotViewNode(self, node) -> None:
        self._plotViewNode = node

    def mrmlPlotViewNode(self) -> Any:
        return self._plotViewNode

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        area = self.rect().adjusted(0, 0, -1, -1)
        painter.fillRect(area, QColor("white"))
        painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), _LINE))
        painter.drawRect(area)
        painter.drawLine(30, area.bottom() - 20, area.right() - 10, area.bottom() - 20)
        painter.drawLine(30, 10, 30, area.bottom() - 20)
        painter.end()


class qMRMLSegmentEditorWidget(qMRMLWidget):
    """The Segment Editor embedded in a panel: keeps its parameter node (a real ``vtkMRMLSegmentEditorNode``), which
    holds the segmentation and source volume it is given; its effects are not imitated (tests paint the
    segmentation's voxels directly)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._editorNode: Any = None
        self._flags = {"segmentationNodeSelectorVisible": True, "sourceVolumeNodeSelectorVisible": True}
        self._observingViews = False  # the slice views' events reach the effects (setupViewObservations)

    @Slot("vtkMRMLSegmentEditorNode*")
    def setMRMLSegmentEditorNode(self, node) -> None:
        self._editorNode = node

    def mrmlSegmentEditorNode(self) -> Any:
        return self._editorNode

    def _editor(self) -> Any:
        """The parameter node, which the real widget needs before a segmentation or volume is set."""
        if self._editorNode is None:
            raise RuntimeError("qMRMLSegmentEditorWidget: set the segment editor node first")
        return self._editorNode

    @Slot("vtkMRMLNode*")
    def setSegmentationNode(self, node) -> None:
        self._editor().SetAndObserveSegmentationNode(node)

    def segmentationNode(self) -> Any:
        """As the real widget: the segmentation of its parameter node."""
        return None if self._editorNode is None else self._editorNode.GetSegmentationNode()

    @Slot("vtkMRMLNode*")
    def setSourceVolumeNode(self, node) -> None:
        self._editor().SetAndObserveSourceVolumeNode(node)

    def sourceVolumeNode(self) -> Any:
        return None if self._editorNode is None else self._editorNode.GetSourceVolumeNode()

    def setupViewObservations(self) -> None:
        self._observingViews = True

    def removeViewObservations(self) -> None:
        self._observingViews = False

    segmentationNodeSelectorVisible = _flag_property("segmentationNodeSelectorVisible")
    sourceVolumeNodeSelectorVisible = _flag_property("sourceVolumeNodeSelectorVisible")


class qMRMLTableView(QTableView):
    """The spreadsheet of a table node: its cells as text, one row per table row, its columns' names as headers."""

    mrmlSceneChanged = Signal("vtkMRMLScene*")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scene: Any = None
        self._tableNode: Any = None

    @Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene) -> None:
        self._scene = scene

    def mrmlScene(self) -> Any:
        return self._scene

    @Slot("vtkMRMLTableNode*")
    def setMRMLTableNode(self, node) -> None:
        self._tableNode = node
        cells = QTableWidget(self)  # its model holds the cells
        if node is not None:
            table = node.GetTable()
            cells.setRowCount(table.GetNumberOfRows())
            cells.setColumnCount(table.GetNumberOfColumns())
            cells.setHorizontalHeaderLabels([table.GetColumnName(c) for c in range(table.GetNumberOfColumns())])
            for row in range(table.GetNumberOfRows()):
                for column in range(table.GetNumberOfColumns()):
                    cells.setItem(row, column, QTableWidgetItem(table.GetValue(row, column).ToString()))
        cells.hide()
        self.setModel(cells.model())

    def mrmlTableNode(self) -> Any:
        return self._tableNode


class qSlicerScriptedLoadableModuleWidget(QWidget):
    """The module panel's frame (the scripted widget's ``self.parent``), with a vertical layout; ``isEntered``
    while the module is shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entered = False
        QVBoxLayout(self)

    def _getEntered(self) -> bool:
        return self._entered

    isEntered = Property(bool, _getEntered)

    def setEntered(self, entered: bool) -> None:
        """The harness's (the real property is set by the module manager): the module is shown or left."""
        self._entered = entered


def replay_scene_connections(form: QWidget, ui_root: ET.Element) -> int:
    """Makes ``form`` (a :class:`qMRMLWidget` built from the .ui ``ui_root``) give its scene to the widgets that
    the .ui connects to its ``mrmlSceneChanged(vtkMRMLScene*)`` signal; returns how many."""
    form._sceneReceivers = [
        form.findChild(QWidget, connection.findtext("receiver"))
        for connection in ui_root.iter("connection")
        if connection.findtext("sender") == form.objectName()
        and connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    ]
    return len(form._sceneReceivers)


#: The stand-ins, by the class name the .ui uses.
STANDINS: dict[str, type[QWidget]] = {
    cls.__name__: cls
    for cls in (
        ctkCollapsibleButton,
        ctkPathLineEdit,
        qMRMLNodeComboBox,
        qMRMLPlotWidget,
        qMRMLSegmentEditorWidget,
        qMRMLTableView,
        qMRMLWidget,
        qSlicerScriptedLoadableModuleWidget,
    )
}


def make_loader() -> QUiLoader:
    """A QUiLoader that builds the stand-ins for the Slicer and CTK classes (needs a QApplication to load)."""
    loader = QUiLoader()
    for cls in STANDINS.values():
        loader.registerCustomWidget(cls)
    return loader
