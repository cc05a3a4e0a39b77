"""Overlay montages: valid PNGs for 3D (with and without reference), 2D and empty label maps; slices are
chosen where there is foreground; existing files are kept unless overwriting is asked for."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image as PillowImage

from MedSegCNNLib.errors import InputError, OutputExistsError
from MedSegCNNLib.image.core import Image, LabelInfo
from MedSegCNNLib.image.io import read_image
from MedSegCNNLib.visualization import save_overlay, select_slices

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPACING = (0.8, 0.8, 3.0)  # x, y, z in mm


@pytest.fixture
def volume() -> tuple[Image, Image, Image]:
    """A noisy image with a prediction (labels 1, 2) and a reference (labels 1, 3) in slices z = 4..11."""
    rng = np.random.default_rng(0)
    image = Image.from_array(rng.normal(100.0, 20.0, size=(16, 24, 28)).astype(np.float32), spacing=SPACING)
    prediction = np.zeros(image.shape, dtype=np.uint8)
    prediction[4:12, 5:15, 5:12] = 1
    prediction[6:9, 8:12, 16:24] = 2
    reference = np.zeros(image.shape, dtype=np.int16)
    reference[5:12, 6:15, 5:13] = 1
    reference[6:9, 8:12, 16:24] = 3
    labels = (LabelInfo(1, "liver", (1.0, 0.0, 0.0)), LabelInfo(2, "tumour"))
    return image, image.with_array(prediction, labels=labels), image.with_array(reference, labels=())


def read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return imread(path)


def test_3d_overlay_with_and_without_reference(tmp_path, volume):
    image, prediction, reference = volume
    alone = save_overlay(tmp_path / "alone.png", image, prediction, slices=4, title="case 1")
    paired = save_overlay(tmp_path / "paired.png", image, prediction, reference=reference, slices=4)
    assert alone == tmp_path / "alone.png"
    single, double = read_png(alone), read_png(paired)
    assert single.ndim == 3 and single.shape[2] in (3, 4) and min(single.shape[:2]) > 100
    assert double.shape[1] > 1.8 * single.shape[1]  # each slice gets a prediction/reference pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.png", "paired.png"]


def test_labels_are_drawn_in_their_colour(tmp_path, volume):
    image, prediction, _ = volume
    flat = image.with_array(np.zeros(image.shape, dtype=np.float32))  # uniform grey: only labels add colour
    only_liver = prediction.with_array(np.where(prediction.array == 1, 1, 0).astype(np.uint8))
    pixels = read_png(save_overlay(tmp_path / "red.png", flat, only_liver, slices=1))[..., :3]
    reddish = (pixels[..., 0] > pixels[..., 1] + 0.2) & (np.abs(pixels[..., 1] - pixels[..., 2]) < 0.05)
    assert reddish.mean() > 0.05  # the liver covers about 10% of the slice
    empty = read_png(save_overlay(tmp_path / "none.png", flat, only_liver.with_array(np.zeros_like(only_liver.array))))
    colour_spread = empty[..., :3].max(axis=-1) - empty[..., :3].min(axis=-1)
    assert colour_spread.max() < 0.05  # grey only: nothing coloured without labels


@pytest.mark.parametrize("axis", [1, 2])
def test_other_axes_and_multichannel_image(tmp_path, volume, axis):
    image, prediction, _ = volume
    two_channels = image.with_array(np.stack([image.array, -image.array]))
    path = save_overlay(tmp_path / "side.png", two_channels, prediction, axis=axis, slices=3, window=(50, 150))
    assert read_png(path).shape[0] > 50


def test_2d_overlay(tmp_path):
    rng = np.random.default_rng(1)
    image = Image.from_array(rng.normal(size=(20, 30)), spacing=(1.0, 2.0))
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[5:12, 4:20] = 3
    path = save_overlay(tmp_path / "flat.png", image, image.with_array(labels), reference=image.with_array(labels))
    pixels = read_png(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_2d_pictures_read_from_png_files(tmp_path):
    """A colour photograph is drawn in its colours, a grayscale one in grey, each with its labels on top."""
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30, 2] = 255  # left half pure blue, right half black
    PillowImage.fromarray(rgb).save(tmp_path / "photo.png")
    PillowImage.fromarray(np.full((40, 60), 200, np.uint8)).save(tmp_path / "gray.png")
    labels = np.zeros((40, 60), np.uint8)
    labels[10:30, 40:55] = 1
    for name in ("photo", "gray"):
        image = read_image(tmp_path / f"{name}.png")
        mask = image.with_array(labels, labels=[LabelInfo(1, "lesion", (1.0, 0.0, 0.0))])
        pixels = read_png(save_overlay(tmp_path / f"{name}_overlay.png", image, mask))[..., :3]
        red = (pixels[..., 0] > 0.5) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
        blue = (pixels[..., 2] > 0.9) & (pixels[..., 0] < 0.1) & (pixels[..., 1] < 0.1)
        assert red.sum() > 100  # the label, filled and outlined in its colour
        assert (blue.sum() > 1000) == (name == "photo")  # the picture's own colours, not its first channel in grey


def test_float_label_map_with_whole_values_is_accepted(tmp_path, volume):
    image, prediction, reference = volume
    as_float = reference.with_array(reference.array.astype(np.float32))
    assert read_png(save_overlay(tmp_path / "float.png", image, prediction, reference=as_float, slices=2)).size > 0


def test_empty_labels_give_a_png(tmp_path, volume):
    image, prediction, _ = volume
    empty = prediction.with_array(np.zeros(image.shape, dtype=np.uint8))
    assert read_png(save_overlay(tmp_path / "empty.png", image, empty, reference=empty)).size > 0


def test_existing_file_is_kept_without_overwrite(tmp_path, volume):
    image, prediction, _ = volume
    path = tmp_path / "overlay.png"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        save_overlay(path, image, prediction, slices=1)
    assert path.read_bytes() == b"keep me"
    save_overlay(path, image, prediction, slices=1, overwrite=True)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png"]  # no temporary file left


def test_bad_arguments_are_refused(tmp_path, volume):
    image, prediction, reference = volume
    with pytest.raises(InputError, match="png"):
        save_overlay(tmp_path / "overlay.jpg", image, prediction)
    with pytest.raises(InputError, match="grid"):
        save_overlay(tmp_path / "a.png", image, prediction.with_array(prediction.array[:-1]))
    with pytest.raises(InputError, match="axis"):
        save_overlay(tmp_path / "b.png", image, prediction, axis=3)
    with pytest.raises(InputError, match="slices"):
        save_overlay(tmp_path / "c.png", image, prediction, slices=0)
    with pytest.raises(InputError, match="window"):
        save_overlay(tmp_path / "d.png", image, prediction, window=(10, 10))
    with pytest.raises(InputError, match="integer"):
        save_overlay(tmp_path / "e.png", image, reference.with_array(reference.array + np.float32(0.5)))
    assert not list(tmp_path.iterdir())


def test_select_slices_have_foreground_and_spread():
    foreground = np.zeros((40, 5, 5), dtype=bool)
    foreground[10:30, 2, 2] = True
    foreground[18:22] = False  # a gap inside the extent
    chosen = select_slices(foreground, 5)
    assert len(chosen) == 5 and chosen == sorted(set(chosen))
    assert all(foreground[index].any() for index in chosen)
    assert chosen[0] <= 13 and chosen[-1] >= 26  # spread over the extent 10..29
    # along another axis
    chosen_y = select_slices(np.moveaxis(foreground, 0, 1), 5, axis=1)
    assert chosen_y == chosen


def test_select_slices_few_or_no_foreground_slices():
    foreground = np.zeros((9, 4, 4), dtype=bool)
    foreground[[2, 7], 1, 1] = True
    assert select_slices(foreground, 5) == [2, 7]
    assert select_slices(foreground, 1) in ([2], [7])
    assert select_slices(np.zeros((9, 4, 4), dtype=bool), 5) == [4]
    with pytest.raises(InputError):
        select_slices(foreground, 0)


def test_text_without_glyphs_and_matplotlib_warnings_stay_off_stderr(caplog):
    """A character the default font lacks is drawn as ``?``; matplotlib's warnings become DEBUG log records."""
    import warnings

    from MedSegCNNLib.visualization.figures import drawable_text, quiet_matplotlib

    with caplog.at_level(logging.DEBUG, logger="MedSegCNNLib"), quiet_matplotlib():
        assert drawable_text("Fall_Ω_中文 case") == "Fall_Ω_?? case"
        warnings.warn("Glyph 20013 missing from font(s) DejaVu Sans.", UserWarning, stacklevel=1)
        logging.getLogger("matplotlib.font_manager").warning("Matplotlib is building the font cache")
    assert [record.getMessage() for record in caplog.records] == [
        "matplotlib.font_manager: Matplotlib is building the font cache",
        "matplotlib: Glyph 20013 missing from font(s) DejaVu Sans.",
    ]
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
