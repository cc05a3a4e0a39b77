"""Evaluation results as a table node: one row per (case, label), typed columns, exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegCNNLib import evaluate  # noqa: E402
from MedSegCNNLib.metrics.result import ROW_KEYS  # noqa: E402
from MedSegCNNLib.mrml import table_from_metrics  # noqa: E402


@pytest.fixture
def result(make_image):
    reference = make_image(dtype=np.uint8).with_array(np.zeros((4, 5, 6), np.uint8))
    reference.array[1:3, 1:4, 1:5] = 1
    reference.array[0, 0, 0] = 2  # label 2 is missed by the prediction: infinite distances
    prediction = reference.with_array(np.where(reference.array == 1, 1, 0).astype(np.uint8))
    prediction.array[1, 1, 1] = 0
    return evaluate(prediction, reference, label_names={1: "liver", 2: "lesion"}, case="case_01")


def column(table_node, key):
    return table_node.GetTable().GetColumnByName(key)


def test_one_row_per_label_with_typed_columns(build, result):
    before = build.scene.GetNumberOfNodes()
    table = table_from_metrics(build.scene, result)
    assert build.scene.GetNumberOfNodes() == before + 1 and table.GetName() == "Segmentation metrics"
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == list(ROW_KEYS)
    assert table.GetNumberOfRows() == 2
    types = {
        key: table.GetValueTypeAsString(table.GetColumnType(key)) for key in ("name", "dice", "label", "ref_empty")
    }
    assert types == {"name": "string", "dice": "double", "label": "long long", "ref_empty": "bit"}
    assert table.GetColumnUnitLabel("hd95") == "mm" and table.GetColumnUnitLabel("volume_ref_ml") == "mL"
    rows = result.to_rows()
    for index, row in enumerate(rows):
        for key in ROW_KEYS:
            value = column(table, key).GetValue(index)
            if isinstance(row[key], float):
                assert value == pytest.approx(row[key]) or (math.isinf(row[key]) and value == row[key])
            else:
                assert value == (row[key] if isinstance(row[key], str) else int(row[key]))
    assert column(table, "name").GetValue(1) == "lesion" and math.isinf(column(table, "hd95").GetValue(1))
    assert 0 < column(table, "dice").GetValue(0) < 1 and column(table, "pred_empty").GetValue(1) == 1


def test_several_cases_give_one_row_per_case_and_label_and_a_table_is_reused(build, result):
    both = type(result)(cases=(*result.cases, *result.cases), nsd_tolerance_mm=result.nsd_tolerance_mm)
    table = table_from_metrics(build.scene, result, name="first")
    before = build.scene.GetNumberOfNodes()
    same = table_from_metrics(build.scene, both, table_node=table, name="two cases")
    assert same is table and build.scene.GetNumberOfNodes() == before and table.GetName() == "two cases"
    assert table.GetNumberOfRows() == 4 and table.GetNumberOfColumns() == len(ROW_KEYS)
    assert [column(table, "label").GetValue(i) for i in range(4)] == [1, 2, 1, 2]
