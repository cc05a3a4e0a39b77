"""The annotation loop's running quality as MRML nodes (the Slicer panel's Annotate section): one point per round,
the mean Dice of the prediction the user then corrected against what they accepted (a held-out measurement).

The points go into a table node (columns ``round`` and ``mean Dice``) drawn by one plot series of a chart node,
which a plot view node shows: the plot machinery of :mod:`.training_curves`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .runtime import slicer_module
from .training_curves import new_table

ROUNDS_TABLE = "MedSegCNN annotation Dice"


def round_points(rounds: Iterable[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """``(round, mean Dice)`` of each round whose prediction was scored (rounds before the first model have none)."""
    return [(int(entry["round"]), float(entry["mean_dice"])) for entry in rounds if entry.get("mean_dice") is not None]


class RoundDiceCurve:
    """The Dice-per-round curve in ``scene``: :meth:`show` with the project's rounds, as often as they change."""

    def __init__(self, scene: Any) -> None:
        self.scene = scene
        self.table: Any = None
        self.chart: Any = None
        self.view: Any = None

    def show(self, rounds: Iterable[Mapping[str, Any]]) -> Any:
        """Fill the curve with ``rounds`` (the ``rounds`` of a ProjectStatus), making the nodes on first use or when
        one was removed (e.g. the scene was closed); the table is rewritten only when its points changed. Returns
        the plot view node to show."""
        if not all(node is not None and self.scene.IsNodePresent(node) for node in (self.table, self.chart, self.view)):
            self._make_nodes()
        points = round_points(rounds)
        if points != self.points():
            columns = self.table.GetTable()
            columns.SetNumberOfRows(0)
            for number, dice in points:
                columns.GetColumn(0).InsertNextValue(float(number))
                columns.GetColumn(1).InsertNextValue(dice)
            columns.Modified()
            self.table.Modified()
        return self.view

    def points(self) -> list[tuple[int, float]]:
        """The points the table holds."""
        if self.table is None:
            return []
        columns = self.table.GetTable()
        return [
            (int(columns.GetColumn(0).GetValue(row)), float(columns.GetColumn(1).GetValue(row)))
            for row in range(columns.GetNumberOfRows())
        ]

    def _make_nodes(self) -> None:
        series_class = slicer_module().vtkMRMLPlotSeriesNode
        self.table = new_table(self.scene, ROUNDS_TABLE, ("round", "mean Dice"))
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "MedSegCNN annotation")
        self.chart.SetTitle("Dice before correction")
        self.chart.SetXAxisTitle("round")
        self.chart.SetYAxisTitle("mean Dice")
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", "MedSegCNN Dice per round")
        series.SetAndObserveTableNodeID(self.table.GetID())
        series.SetXColumnName("round")
        series.SetYColumnName("mean Dice")
        series.SetPlotType(series_class.PlotTypeScatter)
        series.SetMarkerStyle(series_class.MarkerStyleCircle)
        series.SetColor(1.0, 0.5, 0.05)
        self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.view = self.scene.AddNewNodeByClass("vtkMRMLPlotViewNode", "MedSegCNN annotation view")
        self.view.SetPlotChartNodeID(self.chart.GetID())
