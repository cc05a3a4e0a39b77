"""The annotation loop on 2D pictures: PNG cases, a 2D model's predictions written as PNG label maps, a 0/255
mask accepted as labels 0/1, and colour pictures as three channels."""

from __future__ import annotations

import numpy as np
import pytest
from model_support import save_tiny_model
from PIL import Image as PILImage

from MedSegCNNLib import read_image
from MedSegCNNLib.annotation import AnnotationProject, CaseState
from MedSegCNNLib.errors import InputError


def pictures(folder, count: int, *, colour: bool = False):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        shape = (48, 64, 3) if colour else (48, 64)
        PILImage.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"photo_{index:02d}.png")
    return folder


def test_png_cases_with_a_2d_model(tmp_path):
    images = pictures(tmp_path / "images", 4)
    model = save_tiny_model(tmp_path / "model", ("background", "lesion"), channels=("grey",), spatial_dims=2, seed=0)
    with AnnotationProject.create(tmp_path / "project", images, model=model, learning=False) as project:
        state = project.project_file
        assert state.dims == 2 and state.channels == ("grey",) and state.labels == {0: "background", 1: "lesion"}
        case = project.next_case()
        assert case.prediction.suffix == ".png" and case.model_version == 0
        prediction = read_image(case.prediction)
        assert prediction.size == read_image(case.images[0]).size == (64, 48)
        mask = np.zeros((48, 64), dtype=np.uint8)
        mask[10:20, 15:40] = 255  # a mask painted as 0/255, as picture masks usually are
        PILImage.fromarray(mask).save(tmp_path / "mask.png")
        result = project.accept(case.case, tmp_path / "mask.png")
        stored = read_image(result.file)
        assert np.array_equal(stored.array, (mask // 255).astype(stored.array.dtype))
        assert result.round.voxels_to_paint == 250 and result.round.model_version == 0
        assert project.project_file.case(case.case).state is CaseState.ACCEPTED


def test_colour_pictures_are_three_channel_cases_and_a_grey_model_is_refused(tmp_path):
    images = pictures(tmp_path / "images", 3, colour=True)
    with AnnotationProject.create(tmp_path / "project", images, label_names={1: "vessel"}, learning=False) as project:
        assert project.project_file.channels == ("red", "green", "blue") and project.project_file.dims == 2
        assert project.next_case().prediction is None
    grey = save_tiny_model(tmp_path / "grey", ("background", "vessel"), channels=("grey",), spatial_dims=2)
    with pytest.raises(InputError, match=r"The model takes 1 channel\(s\) \(grey\) but the cases have 3"):
        AnnotationProject.create(tmp_path / "other", images, model=grey)
    assert not (tmp_path / "other").exists()
