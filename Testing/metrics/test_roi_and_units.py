"""Metrics restricted to a region of interest (``roi_mask``), distance units, and 2D maps meeting single slices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MedSegCNNLib import Image, evaluate, write_image
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.metrics.label_metrics import compute_label_metrics


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, columns = np.indices(shape)
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


def fundus_case() -> tuple[Image, Image, Image]:
    """(prediction, reference, field of view) of a 40x40 picture: the field of view is a disc of radius 15; the
    reference is a 6x6 square inside it; the prediction finds the square and adds a 4x4 blob in the dark corner
    outside the field of view (a typical artefact at the rim of a fundus photograph)."""
    field = _disc((40, 40), (20, 20), 15).astype(np.uint8)
    ref = np.zeros((40, 40), np.uint8)
    ref[17:23, 17:23] = 1
    pred = ref.copy()
    pred[0:4, 0:4] = 1
    assert not field[0:4, 0:4].any()
    return Image.from_array(pred), Image.from_array(ref), Image.from_array(field)


def test_a_false_positive_outside_the_roi_counts_without_it_and_not_with_it():
    pred, ref, field = fundus_case()
    plain = evaluate(pred, ref).to_rows()[0]
    inside = evaluate(pred, ref, roi_mask=field).to_rows()[0]
    assert plain["fp"] == 16 and plain["dice"] == pytest.approx(72 / 88) and plain["hd"] > 20
    assert not plain["roi_mask"] and inside["roi_mask"]
    assert (inside["tp"], inside["fp"], inside["fn"]) == (36, 0, 0)
    assert inside["tn"] == int(field.array.sum()) - 36  # N = |ROI|: the dark corners are not true negatives
    assert plain["tn"] == 40 * 40 - 36 - 16
    assert inside["dice"] == 1.0 and inside["hd"] == 0.0 and inside["hd95"] == 0.0 and inside["nsd"] == 1.0
    assert inside["specificity"] == 1.0 and plain["specificity"] < 1.0


def test_surfaces_are_those_of_the_maps_inside_the_roi():
    """A 3 pixel wide bar crosses the ROI (columns 10-29); the prediction's bar is one row lower, and it goes on
    far beyond the ROI while the reference stops at its edge. Inside the ROI: the bars are shifted by one row, so
    HD = 1; the cut ends of both bars at the ROI's edges are surface of both (distance 0 to each other)."""
    roi = np.zeros((20, 60), np.uint8)
    roi[:, 10:30] = 1
    ref = np.zeros((20, 60), np.uint8)
    ref[8:11, 5:30] = 1
    pred = np.zeros_like(ref)
    pred[9:12, 0:60] = 1
    restricted = compute_label_metrics(pred, ref, [1], (1.0, 1.0), roi=roi.astype(bool))[1]
    expected = compute_label_metrics(pred[:, 10:30], ref[:, 10:30], [1], (1.0, 1.0))[1]
    assert restricted.hd == expected.hd == 1.0
    assert restricted.assd == pytest.approx(expected.assd) and restricted.nsd == pytest.approx(expected.nsd)
    assert (restricted.tp, restricted.fp, restricted.fn) == (40, 20, 20)
    assert restricted.tn == expected.tn == 20 * 20 - 80
    assert compute_label_metrics(pred, ref, [1], (1.0, 1.0))[1].hd == pytest.approx(math.hypot(1, 30))  # column 59


def test_background_label_is_restricted_too():
    pred, ref, field = fundus_case()
    zero = compute_label_metrics(pred.array, ref.array, [0], (1.0, 1.0), roi=field.array)[0]
    inside = int(field.array.sum())
    assert (zero.tp, zero.fp, zero.fn, zero.tn) == (inside - 36, 0, 0, 36)
    assert zero.dice == 1.0 and zero.hd == 0.0


def test_labels_found_only_outside_the_roi_are_not_reported():
    pred, ref, field = fundus_case()
    array = pred.array.copy()
    array[36:40, 0:4] = 2  # a second label, outside the field of view only
    rows = evaluate(pred.with_array(array), ref, roi_mask=field).to_rows()
    assert [row["label"] for row in rows] == [1]
    assert len(evaluate(pred.with_array(array), ref).to_rows()) == 2


def test_roi_masks_from_a_folder_are_matched_by_case_and_a_file_serves_every_case(tmp_path):
    pred, ref, field = fundus_case()
    for folder in ("pred", "ref", "roi"):
        (tmp_path / folder).mkdir()
    for case in ("a", "b"):
        write_image(pred, tmp_path / "pred" / f"{case}.nrrd")
        write_image(ref, tmp_path / "ref" / f"{case}.nrrd")
    write_image(field, tmp_path / "roi" / "a.nrrd")
    write_image(field.with_array(np.ones((40, 40), np.uint8)), tmp_path / "roi" / "b.nrrd")  # all inside
    rows = evaluate(tmp_path / "pred", tmp_path / "ref", roi_mask=tmp_path / "roi").to_rows()
    assert [(row["case"], row["dice"]) for row in rows] == [("a", 1.0), ("b", pytest.approx(72 / 88))]
    one = evaluate(tmp_path / "pred", tmp_path / "ref", roi_mask=tmp_path / "roi" / "a.nrrd").to_rows()
    assert [row["dice"] for row in one] == [1.0, 1.0]
    (tmp_path / "roi" / "b.nrrd").unlink()
    with pytest.raises(InputError, match=r"No ROI mask in .* for b; ROI masks are matched"):
        evaluate(tmp_path / "pred", tmp_path / "ref", roi_mask=tmp_path / "roi")


def test_bad_roi_masks_are_refused():
    pred, ref, field = fundus_case()
    with pytest.raises(InputError, match="ROI mask is empty"):
        evaluate(pred, ref, roi_mask=field.with_array(np.zeros((40, 40), np.uint8)))
    with pytest.raises(InputError, match="one ROI mask per case: 1 masks for 2 cases"):
        evaluate([pred, pred], [ref, ref], roi_mask=[field])
    with pytest.raises(InputError, match="ROI mask must have the label maps' shape"):
        compute_label_metrics(pred.array, ref.array, [1], (1.0, 1.0), roi=np.ones((4, 4), bool))


def test_a_roi_on_another_physical_grid_is_resampled_onto_the_prediction():
    pred, ref, field = fundus_case()
    coarse = Image.from_array(field.array[::2, ::2].copy(), spacing=(2.0, 2.0), origin=(0.5, 0.5))
    row = evaluate(pred, ref, roi_mask=coarse).to_rows()[0]
    assert row["roi_mask"] and row["fp"] == 0 and row["dice"] == 1.0


def test_a_single_slice_volume_meets_a_2d_map_as_that_slice(tmp_path):
    pred, ref, _ = fundus_case()
    volume = Image.from_array(ref.array[None], spacing=(1.0, 1.0, 3.0))
    write_image(volume, tmp_path / "ref.nrrd")
    write_image(pred, tmp_path / "pred.nrrd")
    row = evaluate(tmp_path / "pred.nrrd", tmp_path / "ref.nrrd").to_rows()[0]
    assert row["fp"] == 16 and row["distance_unit"] == "mm"
    deep = Image.from_array(np.repeat(ref.array[None], 2, axis=0))
    with pytest.raises(InputError, match="the prediction is 2D, the reference is 3D"):
        evaluate(pred, deep)


def test_json_and_report_name_the_distance_unit_and_the_roi():
    from MedSegCNNLib.metrics.report import format_report

    pred, ref, field = fundus_case()
    result = evaluate(pred, ref, roi_mask=field)
    payload = result.to_json_dict()
    assert payload["distance_unit"] == "mm" and payload["rows"][0]["distance_unit"] == "mm"
    text = format_report(result, per_case=True)
    assert "Distances in mm" in text and "inside the ROI mask only" in text
    assert "ROI" not in format_report(evaluate(pred, ref), per_case=True)
