"""The live training plot: loss and validation Dice from progress events into MRML tables drawn by one chart."""

from __future__ import annotations

import math

import pytest

slicer = pytest.importorskip("slicer")

from MedSegCNNLib.mrml.training_curves import DICE_TABLE, LOSS_TABLE, TrainingCurves  # noqa: E402
from MedSegCNNLib.progress import Event  # noqa: E402


def _column(table, name: str) -> list[float]:
    column = table.GetTable().GetColumnByName(name)
    return [column.GetValue(i) for i in range(column.GetNumberOfValues())]


def test_training_curves_fill_mrml_tables_drawn_by_a_chart(scene):
    curves = TrainingCurves(scene)
    nodes_before = scene.GetNumberOfNodes()
    curves.add_events([Event("step", {"step": 1, "loss": 1.0})])  # before start: ignored, nothing made
    assert scene.GetNumberOfNodes() == nodes_before
    view = curves.start()
    assert view.IsA("vtkMRMLPlotViewNode")
    chart = view.GetPlotChartNode()
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert {s.GetTableNode().GetName() for s in series} == {LOSS_TABLE, DICE_TABLE}
    assert {(s.GetXColumnName(), s.GetYColumnName()) for s in series} == {("epoch", "loss"), ("epoch", "mean Dice")}

    curves.add_events(
        [
            Event("start", {"total_steps": 8, "steps_per_epoch": 4}),
            *(Event("step", {"epoch": 1 + (s - 1) // 4, "step": s, "loss": 1.0 / s}) for s in range(1, 9)),
            Event("validation", {"epoch": 2, "mean_dice": 0.5}),
            Event("step", {"epoch": 3, "step": 9, "loss": "nan"}),  # non-finite values arrive as strings
            Event("message", {"level": "info", "text": "ignored"}),
        ]
    )
    assert _column(curves.loss_table, "epoch") == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25]
    loss = _column(curves.loss_table, "loss")
    assert loss[:8] == pytest.approx([1.0 / s for s in range(1, 9)])
    assert math.isnan(loss[8])
    assert _column(curves.dice_table, "epoch") == [2.0] and _column(curves.dice_table, "mean Dice") == [0.5]

    nodes = scene.GetNumberOfNodes()
    assert curves.start() is view  # a new run reuses the nodes, emptied
    assert scene.GetNumberOfNodes() == nodes
    assert curves.loss_table.GetNumberOfRows() == 0 and curves.dice_table.GetNumberOfRows() == 0
    scene.RemoveNode(curves.chart)  # the user deleted a node: the next run makes a complete new set
    fresh = curves.start()
    assert fresh is not view and fresh.GetPlotChartNode().GetNumberOfPlotSeriesNodes() == 2
    scene.Clear(0)  # a closed scene: the next run makes new nodes
    assert curves.start().GetScene() is scene
