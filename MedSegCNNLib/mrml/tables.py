"""Evaluation results as a ``vtkMRMLTableNode``: one row per (case, label), as in ``medsegcnn evaluate --csv``.

One segmentation scored against its reference (the Slicer panel's case) gives one row per label. Several cases
give one row per (case, label), never averaged: the ``case`` column tells them apart and
:meth:`EvaluationResult.summary` gives the per-label statistics. Columns are
:data:`~MedSegCNNLib.metrics.result.ROW_KEYS` in that order, typed: ``case`` and ``name`` are text, the label
value and voxel counts are 64-bit integers, the empty-mask and resampling flags are bits, every metric is a
double (infinite distances stay ``inf``). Distances carry the unit label ``mm`` and volumes ``mL``.
"""

from __future__ import annotations

from typing import Any

from ..metrics.result import ROW_KEYS, EvaluationResult
from .runtime import slicer_module, vtk_modules

_TEXT = ("case", "name", "distance_unit")
_INTEGER = ("label", "tp", "fp", "fn", "tn")
_FLAGS = ("pred_empty", "ref_empty", "reference_resampled", "roi_mask")
_UNITS = {"hd": "mm", "hd95": "mm", "assd": "mm", "volume_pred_ml": "mL", "volume_ref_ml": "mL"}
_DESCRIPTIONS = {
    "case": "Case name",
    "label": "Label value",
    "name": "Label name",
    "dice": "Dice coefficient 2TP / (2TP + FP + FN)",
    "iou": "Intersection over union (Jaccard index)",
    "hd95": "95th-percentile Hausdorff distance (larger of the two directed percentiles)",
    "assd": "Average symmetric surface distance",
    "nsd": "Normalised surface distance (surface Dice) at the evaluation's tolerance",
    "rvd": "Relative volume difference (V_pred - V_ref) / V_ref",
    "pred_empty": "The label is absent from the segmentation",
    "ref_empty": "The label is absent from the reference",
    "reference_resampled": "The reference was resampled onto the segmentation's grid",
}


def table_from_metrics(scene: Any, result: EvaluationResult, *, table_node: Any = None, name: str | None = None) -> Any:
    """A table node holding ``result`` (see module docstring); returns it.

    Without ``table_node`` a new node named ``name`` (default "Segmentation metrics") is added to ``scene``;
    a given table node's columns are all replaced (tables are outputs, not user edits) and ``name`` renames it.
    """
    slicer = slicer_module()
    rows = result.to_rows()
    columns = [_column(key, [row[key] for row in rows]) for key in ROW_KEYS]
    created = table_node is None
    if created:
        table_node = slicer.vtkMRMLTableNode()
    modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    for key, column in zip(ROW_KEYS, columns, strict=True):
        table_node.AddColumn(column)
        table_node.SetColumnUnitLabel(key, _UNITS.get(key, ""))
        table_node.SetColumnDescription(key, _DESCRIPTIONS.get(key, key.replace("_", " ")))
    table_node.SetUseColumnNameAsColumnHeader(True)
    if name or created:
        table_node.SetName(name or "Segmentation metrics")
    table_node.EndModify(modifying)
    if created:
        scene.AddNode(table_node)
    return table_node


def _column(key: str, values: list[Any]) -> Any:
    """A VTK array named ``key`` holding ``values`` with the column's type."""
    vtk, _ = vtk_modules()
    if key in _TEXT:
        array, convert = vtk.vtkStringArray(), str
    elif key in _INTEGER:
        array, convert = vtk.vtkLongLongArray(), int
    elif key in _FLAGS:
        array, convert = vtk.vtkBitArray(), int
    else:
        array, convert = vtk.vtkDoubleArray(), float
    array.SetName(key)
    array.SetNumberOfValues(len(values))
    for index, value in enumerate(values):
        array.SetValue(index, convert(value))
    return array
