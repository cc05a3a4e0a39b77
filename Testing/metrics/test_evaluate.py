"""evaluate(): inputs, label discovery, names, grids, cases, rows and summaries."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegCNNLib import Image, LabelInfo, evaluate, read_image, write_image
from MedSegCNNLib.errors import GeometryError, InputError
from MedSegCNNLib.metrics.result import ROW_KEYS, describe

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "Hippocampus"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _label_map(shape=(10, 12, 14), boxes=(), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), labels=()):
    """A uint8 label map with ``boxes`` = [(value, z0, z1, y0, y1, x0, x1), ...]."""
    array = np.zeros(shape, dtype=np.uint8)
    for value, z0, z1, y0, y1, x0, x1 in boxes:
        array[z0:z1, y0:y1, x0:x1] = value
    return Image.from_array(array, spacing=spacing, origin=origin, labels=labels)


def test_labels_found_in_either_map_are_reported_with_the_empty_policy():
    pred = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6), (3, 7, 9, 7, 9, 7, 9)])
    ref = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6), (2, 7, 9, 1, 3, 1, 3)])
    result = evaluate(pred, ref)
    rows = {row["label"]: row for row in result.to_rows()}
    assert sorted(rows) == [1, 2, 3]
    assert rows[1]["dice"] == 1.0 and rows[1]["hd95"] == 0.0
    assert rows[2]["dice"] == 0.0 and rows[2]["pred_empty"] and math.isinf(rows[2]["hd"])  # missed
    assert rows[3]["dice"] == 0.0 and rows[3]["ref_empty"] and math.isinf(rows[3]["hd95"])  # spurious


def test_explicit_labels_include_absent_ones_as_both_empty():
    pred = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    result = evaluate(pred, pred, labels=[1, 5])
    rows = {row["label"]: row for row in result.to_rows()}
    assert rows[5]["dice"] == 1.0 and rows[5]["pred_empty"] and rows[5]["ref_empty"]
    assert result.summary()[5]["n_both_empty"] == 1


def test_rows_have_the_stable_keys_in_order():
    pred = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    row = evaluate(pred, pred, case="c1").to_rows()[0]
    assert tuple(row) == ROW_KEYS
    assert row["case"] == "c1" and row["label"] == 1 and row["name"] == "label_1"
    for key in ("dice", "iou", "precision", "recall", "specificity", "f1", "hd", "hd95", "assd", "nsd"):
        assert isinstance(row[key], float)


def test_dice_and_volumes_match_simpleitk_on_a_shifted_box():
    spacing = (0.5, 0.8, 2.0)  # x, y, z
    ref = _label_map(boxes=[(1, 2, 8, 2, 10, 2, 10)], spacing=spacing)
    pred = _label_map(boxes=[(1, 3, 9, 2, 10, 2, 10)], spacing=spacing)  # shifted by one voxel along z
    row = evaluate(pred, ref).to_rows()[0]
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(
        sitk.GetImageFromArray(ref.array.astype(np.uint8)), sitk.GetImageFromArray(pred.array.astype(np.uint8))
    )
    assert row["dice"] == pytest.approx(overlap.GetDiceCoefficient(1))
    assert row["iou"] == pytest.approx(overlap.GetJaccardCoefficient(1))
    assert row["volume_ref_ml"] == pytest.approx(6 * 8 * 8 * 0.5 * 0.8 * 2.0 / 1000)
    assert row["hd"] == pytest.approx(2.0)  # one voxel along z, whose spacing is 2 mm


def test_names_come_from_argument_then_reference_then_prediction():
    pred = _label_map(boxes=[(1, 2, 4, 2, 4, 2, 4), (2, 5, 7, 5, 7, 5, 7), (3, 8, 9, 8, 9, 8, 9)])
    pred = pred.with_labels([LabelInfo(1, "pred one"), LabelInfo(2, "pred two")])
    ref = pred.with_labels([LabelInfo(1, "ref one")])
    rows = evaluate(pred, ref, label_names={3: "given three"}).to_rows()
    assert [row["name"] for row in rows] == ["ref one", "pred two", "given three"]


def test_reference_on_another_grid_is_resampled_and_flagged(caplog):
    pred = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    # The same box on a grid that starts two voxels earlier along x and is larger: an exact superset.
    ref = _label_map(shape=(10, 12, 18), boxes=[(1, 2, 6, 2, 6, 4, 8)], origin=(-2.0, 0.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        row = evaluate(pred, ref).to_rows()[0]
    assert row["reference_resampled"] is True
    assert row["dice"] == 1.0 and row["hd"] == 0.0
    assert "resampling the reference" in caplog.text


def test_non_overlapping_images_are_refused():
    pred = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    ref = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)], origin=(500.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match="do not overlap"):
        evaluate(pred, ref)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((2, 4, 4, 4), 1, dtype=np.uint8), "channels"),
        (np.full((4, 4, 4), 0.5, dtype=np.float32), "non-integer"),
        (np.full((4, 4, 4), -1, dtype=np.int16), "negative"),
    ],
)
def test_bad_label_maps_are_refused(array, message):
    bad = Image.from_array(array, spatial_dims=3)
    good = _label_map(shape=(4, 4, 4))
    with pytest.raises(InputError, match=message):
        evaluate(bad, good)


def test_float_label_maps_with_integer_values_are_accepted():
    ref = _label_map(boxes=[(2, 2, 6, 2, 6, 2, 6)])
    pred = ref.with_array(ref.array.astype(np.float32))  # as in some MSD label files
    assert evaluate(pred, ref).to_rows()[0]["dice"] == 1.0


def test_bad_parameters_are_refused():
    image = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    with pytest.raises(InputError, match="non-negative integers"):
        evaluate(image, image, labels=[1.5])
    with pytest.raises(InputError, match="empty"):
        evaluate(image, image, labels=[])
    with pytest.raises(InputError, match="tolerance"):
        evaluate(image, image, nsd_tolerance_mm=-1)
    with pytest.raises(InputError, match="same length"):
        evaluate([image, image], [image])


def test_folders_are_paired_by_case_name(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir(), ref_dir.mkdir()
    for name, shift in (("a", 0), ("b", 1)):
        write_image(_label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)]), ref_dir / f"{name}.nii.gz")
        write_image(_label_map(boxes=[(1, 2 + shift, 6 + shift, 2, 6, 2, 6)]), pred_dir / f"{name}.nrrd")
    (pred_dir / "notes.txt").write_text("ignored")
    result = evaluate(pred_dir, ref_dir)
    assert [case.case for case in result.cases] == ["a", "b"]
    assert [row["dice"] for row in result.to_rows()] == [1.0, pytest.approx(0.75)]


def test_unmatched_folders_name_the_cases_without_partner(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir(), ref_dir.mkdir()
    image = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    write_image(image, pred_dir / "a.nii.gz")
    write_image(image, pred_dir / "extra.nii.gz")
    write_image(image, ref_dir / "a.nii.gz")
    write_image(image, ref_dir / "lonely.nii.gz")
    with pytest.raises(InputError, match=r"no reference for extra.*no prediction for lonely"):
        evaluate(pred_dir, ref_dir)


def test_a_folder_against_a_file_is_refused(tmp_path):
    image = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    write_image(image, tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match="two files or two folders"):
        evaluate(tmp_path, tmp_path / "a.nii.gz")


def test_summary_keeps_infinities_and_counts_missed_cases():
    ref = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    missed = _label_map()
    result = evaluate([ref, missed], [ref, ref])
    stats = result.summary()[1]
    assert stats["n_cases"] == 2 and stats["n_pred_empty"] == 1 and stats["n_ref_empty"] == 0
    assert stats["dice"] == {"mean": 0.5, "std": 0.5, "median": 0.5, "min": 0.0, "max": 1.0}
    assert math.isinf(stats["hd95"]["mean"]) and math.isinf(stats["hd95"]["max"]) and stats["hd95"]["min"] == 0.0
    payload = json.loads(result.to_json())
    assert payload["summary"]["1"]["hd95"]["mean"] == "inf"
    assert payload["rows"][1]["hd95"] == "inf"


def test_describe_statistics():
    assert describe([1.0, 2.0, 3.0]) == {
        "mean": 2.0,
        "std": pytest.approx(math.sqrt(2 / 3)),
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
    }
    assert math.isnan(describe([])["mean"])
    assert math.isnan(describe([1.0, math.nan])["median"])  # metric not computed


def test_csv_is_written_atomically_and_not_overwritten(tmp_path):
    image = _label_map(boxes=[(1, 2, 6, 2, 6, 2, 6)])
    result = evaluate(image, image)
    target = tmp_path / "metrics.csv"
    text = result.to_csv(target)
    assert target.read_text() == text and text.splitlines()[0] == ",".join(ROW_KEYS)
    target.write_text("precious")
    with pytest.raises(FileExistsError):
        result.to_csv(target)
    assert target.read_text() == "precious"
    result.to_csv(target, overwrite=True)
    assert target.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_bundled_sample_predictions_against_references():
    result = evaluate(SAMPLE / "predictionsTr", SAMPLE / "labelsTr")
    assert len(result.cases) == 12
    summary = result.summary()
    assert sorted(summary) == [1, 2]
    # The last case has its posterior label deleted on purpose: one missed case, reported as such.
    assert summary[2]["n_pred_empty"] == 1 and math.isinf(summary[2]["hd"]["max"])
    # Independent check of Dice on one case with SimpleITK.
    case = result.cases[0]
    pred = sitk.ReadImage(str(SAMPLE / "predictionsTr" / f"{case.case}.nii.gz"))
    ref = sitk.ReadImage(str(SAMPLE / "labelsTr" / f"{case.case}.nii.gz"))
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(ref, pred)
    for label in (1, 2):
        assert case.metrics[label].dice == pytest.approx(overlap.GetDiceCoefficient(label))


@pytest.mark.shared_data
def test_many_label_ct_against_itself_on_another_grid():
    seg = SHARED / "ct_multilabel" / "example_seg_fast_force_split.nii.gz"
    if not seg.exists():
        pytest.skip("../shared/data is not available")
    image = read_image(seg)
    labels = sorted(set(np.unique(image.array)) - {0})
    assert len(labels) > 50
    result = evaluate(image, image, surface=False)
    assert all(row["dice"] == 1.0 for row in result.to_rows())
    assert [row["label"] for row in result.to_rows()] == labels
