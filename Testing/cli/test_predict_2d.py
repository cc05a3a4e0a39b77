"""``medsegcnn predict`` on 2D pictures: RGB folders, nnU-Net channel PNGs, output formats, ``--grayscale``, pages,
and ``medsegcnn evaluate`` on the PNG label maps it writes (pixel units, ``--roi-mask``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_support import assert_clean_failure, medsegcnn
from model_support import save_tiny_model
from PIL import Image as Picture

from MedSegCNNLib import read_image, segment
from MedSegCNNLib.image.raster import LUMA_WEIGHTS

SHAPE = (40, 52)  # rows, columns


def save_2d_model(folder: Path, channels: tuple[str, ...]) -> Path:
    """An untrained 2D U-Net [4, 8] (patch 32², 1 mm, z-score per channel; weights seeded) with labels background
    and lesion."""
    return save_tiny_model(folder, ("background", "lesion"), channels=channels, spatial_dims=2, features=(4, 8), seed=0)


def picture(seed: int) -> np.ndarray:
    """An RGB picture (rows, columns, 3) of uint8: a bright disc on a smooth background, plus noise."""
    rng = np.random.default_rng(seed)
    rows, columns = np.indices(SHAPE)
    disc = (rows - 20) ** 2 + (columns - 24 - seed) ** 2 < 81
    base = np.stack([rows * 2 + 40, columns * 3 + 20, np.full(SHAPE, 90)], axis=-1) + disc[..., None] * [120, 30, 60]
    return np.clip(base + rng.integers(0, 20, (*SHAPE, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models2d")
    return {"rgb": save_2d_model(root / "rgb", ("red", "green", "blue")), "gray": save_2d_model(root / "gray", ("L",))}


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    """``a.png``, ``b.png`` (RGB) and ``c.jpg`` (an RGB JPEG)."""
    folder = tmp_path_factory.mktemp("colour") / "images"
    folder.mkdir()
    Picture.fromarray(picture(0)).save(folder / "a.png")
    Picture.fromarray(picture(1)).save(folder / "b.png")
    Picture.fromarray(picture(2)).save(folder / "c.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory, models, colour_folder) -> Path:
    output = tmp_path_factory.mktemp("colour_run") / "out"
    result = medsegcnn("predict", "--model", models["rgb"], "--input", colour_folder, "--output", output,
                       "--progress", "none", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return output


def test_a_folder_of_rgb_pictures_gives_label_maps_in_the_input_format(colour_run, colour_folder, models):
    assert sorted(path.name for path in colour_run.iterdir()) == ["a.png", "b.png", "c.png"]  # JPEG -> PNG
    for name in ("a", "b", "c"):
        labels = read_image(colour_run / f"{name}.png")
        assert labels.spatial_dims == 2 and labels.shape == SHAPE and labels.array.dtype == np.uint8
        assert set(np.unique(labels.array)) <= {0, 1}
    expected = segment(read_image(colour_folder / "a.png"), models["rgb"]).labels.array
    assert np.array_equal(read_image(colour_run / "a.png").array, expected)


def test_nnunet_channel_pngs_are_grouped_and_give_the_same_labels_as_the_rgb_file(tmp_path, models, colour_run):
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    for name, seed in (("a", 0), ("b", 1)):
        for channel in range(3):
            Picture.fromarray(picture(seed)[..., channel]).save(folder / f"{name}_{channel:04d}.png")
    references = tmp_path / "masks"  # 0/255 masks named by case: paired with the grouped cases
    references.mkdir()
    square = np.zeros(SHAPE, np.uint8)
    square[10:30, 10:30] = 255
    for name in ("a", "b"):
        Picture.fromarray(square).save(references / f"{name}.png")
    output = tmp_path / "out"
    result = medsegcnn("predict", "--model", models["rgb"], "--input", folder, "--output", output,
                       "--ref", references, "--progress", "json", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in output.iterdir()) == ["a.png", "b.png"]
    for name in ("a", "b"):
        assert np.array_equal(read_image(output / f"{name}.png").array, read_image(colour_run / f"{name}.png").array)
    metrics = [json.loads(line) for line in result.stdout.splitlines() if '"metrics"' in line][-1]
    assert [(row["case"], row["distance_unit"]) for row in metrics["rows"]] == [("a", "pixel"), ("b", "pixel")]
    assert all(row["label"] == 1 and row["tp"] + row["fn"] == 400 for row in metrics["rows"])  # the 0/255 square


def test_rgb_for_a_one_channel_model_is_refused_unless_grayscale(tmp_path, models, colour_folder):
    source = colour_folder / "a.png"
    refused = medsegcnn("predict", "--model", models["gray"], "--input", source, "--output", tmp_path / "a.png")
    assert_clean_failure(
        refused, "is a colour (RGB) picture, but the model expects 1 input channel (L); pass --grayscale"
    )
    assert not (tmp_path / "a.png").exists()
    result = medsegcnn("predict", "--model", models["gray"], "--input", source, "--output", tmp_path / "a.tif",
                       "--grayscale", "--progress", "none", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rgb = read_image(source)
    luminance = rgb.with_array(np.tensordot(np.asarray(LUMA_WEIGHTS, np.float32), rgb.array.astype(np.float32), 1))
    expected = segment(luminance, models["gray"]).labels.array
    assert np.array_equal(read_image(tmp_path / "a.tif").array, expected)
    refused = medsegcnn("predict", "--model", models["rgb"], "--input", source, "--output", tmp_path / "b.png",
                        "--grayscale")  # fmt: skip
    assert_clean_failure(refused, "--grayscale makes one channel of a colour picture, but the model expects 3")


def test_a_multipage_tiff_is_refused_and_read_as_a_stack_with_pages_stack(tmp_path, models):
    pages = np.stack([picture(seed)[..., 0] for seed in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")  # 3 pages
    refused = medsegcnn("predict", "--model", models["gray"], "--input", tmp_path / "stack.tif",
                        "--output", f"{tmp_path / 'out'}/")  # fmt: skip
    assert_clean_failure(refused, "holds 3 pages, where one 2D image is expected")
    assert "medsegcnn predict --pages stack" in refused.stderr and not (tmp_path / "out").exists()
    result = medsegcnn("predict", "--model", models["gray"], "--input", tmp_path / "stack.tif", "--pages", "stack",
                       "--output", f"{tmp_path / 'out'}/", "--progress", "none", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    labels = read_image(tmp_path / "out" / "stack.nii.gz")  # a 3D label map: NIfTI, not TIFF
    assert labels.spatial_dims == 3 and labels.shape == (3, *SHAPE)
    expected = segment(read_image(tmp_path / "stack.tif", pages="stack"), models["gray"]).labels.array
    assert np.array_equal(labels.array, expected)


def test_evaluate_png_label_maps_against_255_masks_in_pixels_with_a_field_of_view(tmp_path, colour_run):
    predicted = read_image(colour_run / "a.png").array
    reference = predicted.copy()
    reference[:, :4] = 1 - reference[:, :4]  # disagree in the first 4 columns
    Picture.fromarray(reference * 255).save(tmp_path / "a.png")  # a 0/255 mask
    field = np.zeros(SHAPE, np.uint8)
    field[:, 4:] = 255
    Picture.fromarray(field).save(tmp_path / "fov.png")
    args = ("evaluate", "--pred", colour_run / "a.png", "--ref", tmp_path / "a.png", "--json", "--labels", "1")
    plain = json.loads(medsegcnn(*args).stdout)
    inside = json.loads(medsegcnn(*args, "--roi-mask", tmp_path / "fov.png", "--csv", tmp_path / "m.csv").stdout)
    assert plain["distance_unit"] == inside["distance_unit"] == "pixel"
    row, roi_row = plain["rows"][0], inside["rows"][0]
    assert row["fp"] + row["fn"] == 40 * 4 and row["dice"] < 1 and row["volume_ref_ml"] == "nan"
    assert roi_row["roi_mask"] and roi_row["fp"] == roi_row["fn"] == 0 and roi_row["dice"] == 1.0
    assert roi_row["tp"] + roi_row["tn"] == 40 * (52 - 4) and roi_row["hd"] == 0.0
    header, values = (tmp_path / "m.csv").read_text().splitlines()[:2]
    assert header.endswith("distance_unit,roi_mask") and values.endswith("pixel,True")
