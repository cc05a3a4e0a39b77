"""The live training plot as MRML nodes, fed with training progress events (the Slicer panel's Train section).

The loss of every step (at its fractional epoch: step / steps per epoch) and the validation mean Dice of every
validated epoch go into two table nodes (columns ``epoch`` and ``loss`` / ``mean Dice``), drawn by two plot
series of one chart node, which a plot view node shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..progress import Event
from .runtime import slicer_module, vtk_modules

LOSS_TABLE = "MedSegCNN training loss"
DICE_TABLE = "MedSegCNN validation Dice"


class TrainingCurves:
    """Training curves in ``scene``: :meth:`start` before each run, then :meth:`add_events` as events arrive."""

    def __init__(self, scene: Any) -> None:
        self.scene = scene
        self.steps_per_epoch = 1
        self.loss_table: Any = None
        self.dice_table: Any = None
        self.chart: Any = None
        self.view: Any = None

    def start(self) -> Any:
        """Empty the curves for a new run, making the nodes on first use or when one was removed (e.g. the scene
        was closed); returns the plot view node to show."""
        nodes = (self.loss_table, self.dice_table, self.chart, self.view)
        if all(node is not None and self.scene.IsNodePresent(node) for node in nodes):
            for table in (self.loss_table, self.dice_table):
                table.GetTable().SetNumberOfRows(0)
                table.Modified()
        else:
            self._make_nodes()
        self.steps_per_epoch = 1
        return self.view

    def add_events(self, events: Iterable[Event]) -> None:
        """Append the points of ``events`` (``start``, ``step``, ``validation``; other kinds are ignored, and so
        is everything before the first :meth:`start`)."""
        if self.loss_table is None:
            return
        changed = set()
        for event in events:
            if event.kind == "start":
                self.steps_per_epoch = max(1, int(event.data.get("steps_per_epoch") or 1))
            elif event.kind == "step":
                _append(self.loss_table, event.data["step"] / self.steps_per_epoch, event.data["loss"])
                changed.add(self.loss_table)
            elif event.kind == "validation":
                _append(self.dice_table, event.data["epoch"], event.data["mean_dice"])
                changed.add(self.dice_table)
        for table in changed:
            table.GetTable().Modified()
            table.Modified()

    def _make_nodes(self) -> None:
        slicer = slicer_module()
        series_class = slicer.vtkMRMLPlotSeriesNode
        self.loss_table = self._table(LOSS_TABLE, "loss")
        self.dice_table = self._table(DICE_TABLE, "mean Dice")
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "MedSegCNN training")
        self.chart.SetTitle("Training")
        self.chart.SetXAxisTitle("epoch")
        self.chart.SetYAxisTitle("loss / mean Dice")
        for table, column, colour, marker in (
            (self.loss_table, "loss", (0.12, 0.47, 0.71), series_class.MarkerStyleNone),
            (self.dice_table, "mean Dice", (1.0, 0.5, 0.05), series_class.MarkerStyleCircle),
        ):
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"MedSegCNN {column}")
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(series_class.PlotTypeScatter)
            series.SetMarkerStyle(marker)
            series.SetColor(*colour)
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.view = self.scene.AddNewNodeByClass("vtkMRMLPlotViewNode", "MedSegCNN training view")
        self.view.SetPlotChartNodeID(self.chart.GetID())

    def _table(self, name: str, column: str) -> Any:
        return new_table(self.scene, name, ("epoch", column))


def new_table(scene: Any, name: str, columns: Iterable[str]) -> Any:
    """A table node ``name`` added to ``scene`` with an empty double column for each of ``columns``."""
    vtk, _ = vtk_modules()
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column_name in columns:
        array = vtk.vtkDoubleArray()
        array.SetName(column_name)
        node.AddColumn(array)
    return node


def _append(table: Any, epoch: float, value: float | str) -> None:
    """One point; a non-finite value arrives as the string ``"nan"``/``"inf"`` and is stored as that float."""
    columns = table.GetTable()
    columns.GetColumn(0).InsertNextValue(float(epoch))
    columns.GetColumn(1).InsertNextValue(float(value))
