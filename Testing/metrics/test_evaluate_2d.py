"""evaluate() on 2D pictures: masks by the mask rule, pixel units without spacing, mm with it, and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image as Picture

from MedSegCNNLib import Image, evaluate, write_image
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.metrics.report import format_report

SHAPE = (30, 40)


def squares(shift: int = 0) -> np.ndarray:
    """Label 1: a 10x10 square at rows 10-19, columns 10+shift-19+shift."""
    array = np.zeros(SHAPE, np.uint8)
    array[10:20, 10 + shift : 20 + shift] = 1
    return array


def save_png(array: np.ndarray, path, **options) -> None:
    Picture.fromarray(array).save(path, **options)


def test_png_pairs_without_spacing_are_in_pixels_and_have_no_volumes(tmp_path):
    save_png(squares(2), tmp_path / "pred.png")  # label map 0/1
    save_png(squares() * 255, tmp_path / "ref.png")  # binary mask saved white on black
    row = evaluate(tmp_path / "pred.png", tmp_path / "ref.png").to_rows()[0]
    assert row["label"] == 1 and row["distance_unit"] == "pixel"
    assert row["dice"] == pytest.approx(0.8) and row["hd"] == 2.0
    assert math.isnan(row["volume_pred_ml"]) and math.isnan(row["volume_ref_ml"]) and row["tp"] + row["fp"] == 100
    text = format_report(evaluate(tmp_path / "pred.png", tmp_path / "ref.png"), per_case=True)
    assert "Distances in pixels (the files have no pixel spacing; volumes not computed)" in text
    assert "NSD tolerance 1 pixel)" in text


def test_a_file_with_spacing_gives_its_geometry_to_a_picture_without_it(tmp_path):
    spaced = Image.from_array(squares(), spacing=(0.5, 0.25))  # x, y in mm
    write_image(spaced, tmp_path / "ref.tif")  # TIFF keeps the resolution
    save_png(squares(2), tmp_path / "pred.png")
    row = evaluate(tmp_path / "pred.png", tmp_path / "ref.tif").to_rows()[0]
    assert row["distance_unit"] == "mm" and row["hd"] == pytest.approx(2 * 0.5)
    assert row["volume_ref_ml"] == pytest.approx(100 * 0.5 * 0.25 / 1000)
    save_png(np.zeros((30, 41), np.uint8), tmp_path / "small.png")
    with pytest.raises(InputError, match=r"the prediction \(size \(41, 30\)\) has no physical spacing and differs"):
        evaluate(tmp_path / "small.png", tmp_path / "ref.tif")
    save_png(np.zeros((31, 40), np.uint8), tmp_path / "other.png")
    with pytest.raises(InputError, match="cannot be aligned; give them the same size"):
        evaluate(tmp_path / "other.png", tmp_path / "pred.png")


def test_a_report_with_cases_in_both_units_says_which(tmp_path):
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
    save_png(squares(1), tmp_path / "pred" / "a.png")
    save_png(squares() * 255, tmp_path / "ref" / "a.png")
    write_image(Image.from_array(squares(1), spacing=(2.0, 2.0)), tmp_path / "pred" / "b.nrrd")
    write_image(Image.from_array(squares(), spacing=(2.0, 2.0)), tmp_path / "ref" / "b.nrrd")
    result = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert [(row["case"], row["distance_unit"], row["hd"]) for row in result.to_rows()] == [
        ("a", "pixel", 1.0),
        ("b", "mm", 2.0),
    ]
    assert result.distance_unit == "mixed" and result.to_json_dict()["distance_unit"] == "mixed"
    assert "except in pixels for 1 case(s) without pixel spacing (e.g. a)" in format_report(result, per_case=True)


def test_reference_masks_with_other_values_need_mask_values(tmp_path):
    reference = squares() * 128
    reference[0:3, 0:3] = 255  # a second structure
    save_png(reference, tmp_path / "ref.png")
    prediction = squares()
    prediction[0:3, 0:3] = 2
    save_png(prediction, tmp_path / "pred.png")
    with pytest.raises(InputError, match=r"not a known label set.*mask_values=\(0, 128, 255\)"):
        evaluate(tmp_path / "pred.png", tmp_path / "ref.png")
    rows = evaluate(tmp_path / "pred.png", tmp_path / "ref.png", mask_values=(0, 128, 255)).to_rows()
    assert [(row["label"], row["dice"]) for row in rows] == [(1, 1.0), (2, 1.0)]


def test_palette_masks_are_read_as_their_indices_and_jpeg_masks_are_refused(tmp_path):
    palette = Picture.fromarray(squares() * 2, mode="L").convert("P")  # indices 0 and 2
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    palette.save(tmp_path / "ref.png")
    assert Picture.open(tmp_path / "ref.png").mode == "P"
    save_png(squares() * 2, tmp_path / "pred.png")
    assert [(row["label"], row["dice"]) for row in evaluate(tmp_path / "pred.png", tmp_path / "ref.png").to_rows()] == [
        (2, 1.0)
    ]
    save_png(squares() * 255, tmp_path / "ref.jpg", quality=95)
    with pytest.raises(InputError, match="is a JPEG file"):
        evaluate(tmp_path / "pred.png", tmp_path / "ref.jpg")
