"""nnU-Net's resampling, reproduced without SciPy, against nnunetv2's own functions (and so SciPy's zoom and
scikit-image's resize): images (order 3, and order 0 across an anisotropic axis) and logits (order 1)."""

from __future__ import annotations

import numpy as np
import pytest

from MedSegCNNLib.data.nnunet.plan import Resampling, anisotropic_axis
from MedSegCNNLib.data.nnunet.resampling import new_shape, resample

default_resampling = pytest.importorskip(
    "nnunetv2.preprocessing.resampling.default_resampling", reason="nnunetv2 is not installed (test extra)"
)

CASES = {
    "isotropic up and down": ((2, 20, 31, 17), (29, 23, 40), (1.0, 1.0, 1.0), (0.7, 1.3, 0.43)),
    "anisotropic source": ((1, 12, 40, 44), (30, 33, 50), (4.0, 1.0, 1.0), (1.6, 1.2, 0.88)),
    "anisotropic, in-plane kept": ((1, 9, 30, 30), (17, 30, 30), (5.0, 1.0, 1.0), (2.6, 1.0, 1.0)),
    "halving": ((1, 40, 30, 20), (20, 15, 10), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),
    "one slice": ((1, 1, 30, 20), (1, 45, 13), (999.0, 1.0, 1.0), (999.0, 0.66, 1.5)),
}


@pytest.mark.parametrize(("order", "order_z"), [(3, 0), (1, 0), (0, 0), (3, 1)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_default_resampling_matches_nnunet(case: str, order: int, order_z: int) -> None:
    shape, target, current, new = CASES[case]
    data = (np.random.default_rng(0).normal(size=shape) * 100).astype(np.float32)
    expected = default_resampling.resample_data_or_seg_to_shape(
        data, target, current, new, is_seg=False, order=order, order_z=order_z, force_separate_z=None
    )
    ours = resample(data, target, current, new, Resampling(order=order, order_z=order_z))
    assert ours.dtype == expected.dtype == np.float32
    # float64 throughout, summed in another order: equal up to the last bits of float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(data).max())


@pytest.mark.parametrize(("order", "order_z"), [(3, 0), (1, 1), (0, 0)])
def test_resampling_in_slabs_matches_nnunet(monkeypatch: pytest.MonkeyPatch, order: int, order_z: int) -> None:
    """Slabs of a few dozen voxels (big images are resampled in slabs): the same result as nnU-Net's."""
    import MedSegCNNLib.data.nnunet.resampling as resampling

    monkeypatch.setattr(resampling, "SLAB_ELEMENTS", 64)
    for shape, target, current, new in (CASES["isotropic up and down"], CASES["anisotropic source"]):
        data = (np.random.default_rng(2).normal(size=shape) * 100).astype(np.float32)
        expected = default_resampling.resample_data_or_seg_to_shape(
            data, target, current, new, is_seg=False, order=order, order_z=order_z, force_separate_z=None
        )
        ours = resample(data, target, current, new, Resampling(order=order, order_z=order_z))
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(data).max())


def test_torch_resampling_matches_nnunet() -> None:
    resample_torch = pytest.importorskip("nnunetv2.preprocessing.resampling.resample_torch")
    for shape, target, current, new in CASES.values():
        data = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        expected = resample_torch.resample_torch_fornnunet(data, target, current, new, is_seg=False)
        ours = resample(data, target, current, new, Resampling(function="resample_torch_fornnunet", order=1))
        np.testing.assert_array_equal(ours, expected)


def test_the_anisotropic_axis_and_new_shape_match_nnunet() -> None:
    for _shape, _target, current, new in CASES.values():
        for force in (None, True, False):
            separate, axis = default_resampling.determine_do_sep_z_and_axis(force, current, new)
            assert anisotropic_axis(current, new, force) == (axis if separate else None)
    assert new_shape((40, 30, 20), (1, 1, 1), (2, 2, 2)) == tuple(
        default_resampling.compute_new_shape((40, 30, 20), (1, 1, 1), (2, 2, 2))
    )


def test_an_unchanged_shape_is_not_copied() -> None:
    data = np.ones((1, 4, 5, 6), np.float32)
    assert resample(data, (4, 5, 6), (1, 1, 1), (1, 1, 1), Resampling()) is data


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (0.3, -0.2, 0.7), (2.9, 0.4, -1.8), (0.1, 3.1, 1.6)])
@pytest.mark.parametrize("mirrored", [False, True])
def test_the_closest_ras_voxel_order_is_simpleitks(angles: tuple[float, ...], mirrored: bool) -> None:
    """VoxelOrder against SimpleITK's DICOMOrient(image, "RAS") (what nnU-Net's SimpleITKIOWithReorient does)."""
    import SimpleITK as sitk
    from conftest import rotation

    from MedSegCNNLib.data.nnunet.preprocessing import VoxelOrder
    from MedSegCNNLib.image import Image, to_sitk

    direction = rotation(angles) @ np.diag([1.0, 1.0, -1.0 if mirrored else 1.0])
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    image = Image(array, (0.7, 1.3, 2.9), (1.0, 2.0, 3.0), direction)
    order = VoxelOrder.closest_ras(image.direction)
    reoriented = sitk.DICOMOrient(to_sitk(image), "RAS")
    np.testing.assert_array_equal(order.forward(image.array), sitk.GetArrayFromImage(reoriented))
    np.testing.assert_allclose(order.spacing((2.9, 1.3, 0.7)), tuple(reversed(reoriented.GetSpacing())))
    np.testing.assert_array_equal(order.backward(order.forward(image.array)), image.array)
