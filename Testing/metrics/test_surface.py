"""Surface extraction and surface distances, against a brute-force reference, SimpleITK and MONAI."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from MedSegCNNLib.metrics.surface import (
    SurfaceMetrics,
    directed_surface_distances,
    empty_surface_metrics,
    surface_mask,
    surface_metrics,
)

# ----- brute-force reference: explicit neighbour checks and all pairwise distances ------------------------------


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside the mask or outside the array, one voxel at a time."""
    surface = np.zeros(mask.shape, dtype=bool)
    for index in itertools.product(*(range(n) for n in mask.shape)):
        if not mask[index]:
            continue
        for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
            neighbour = list(index)
            neighbour[axis] += step
            if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
                surface[index] = True
    return surface


def brute_metrics(pred: np.ndarray, ref: np.ndarray, spacing: list[float], tau: float) -> tuple[float, ...]:
    """(hd, hd95, assd, nsd) from all pairwise distances between surface voxel centres (mm)."""
    a = np.argwhere(brute_surface(pred)) * np.asarray(spacing)
    b = np.argwhere(brute_surface(ref)) * np.asarray(spacing)
    pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
    a_to_b, b_to_a = pairwise.min(axis=1), pairwise.min(axis=0)
    count = a_to_b.size + b_to_a.size
    return (
        max(a_to_b.max(), b_to_a.max()),
        max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)),
        (a_to_b.sum() + b_to_a.sum()) / count,
        (np.count_nonzero(a_to_b <= tau) + np.count_nonzero(b_to_a <= tau)) / count,
    )


def as_tuple(metrics: SurfaceMetrics) -> tuple[float, ...]:
    return (metrics.hd, metrics.hd95, metrics.assd, metrics.nsd)


@st.composite
def mask_pairs(draw: st.DrawFn, max_side: int = 7) -> tuple[np.ndarray, np.ndarray]:
    shape = draw(array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=max_side))
    return draw(arrays(bool, shape)), draw(arrays(bool, shape))


# Multiples of 1/8 mm: ITK's float32 squared distances are then exact, so the fast path must match to 1e-6.
dyadic_spacing = st.integers(1, 40).map(lambda n: n / 8)

# ----- surface extraction ----------------------------------------------------------------------------------------


@given(arrays(bool, array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=7)))
def test_surface_mask_matches_explicit_neighbour_checks(mask: np.ndarray) -> None:
    np.testing.assert_array_equal(surface_mask(mask), brute_surface(mask))


def test_surface_of_solid_cube_is_its_shell_and_border_counts_as_outside() -> None:
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    expected = mask.copy()
    expected[2:4, 2:4, 2:4] = False
    np.testing.assert_array_equal(surface_mask(mask), expected)
    full = np.ones((3, 4, 5), bool)
    inner = np.zeros_like(full)
    inner[1:-1, 1:-1, 1:-1] = True
    np.testing.assert_array_equal(surface_mask(full), full & ~inner)


def test_diagonal_neighbours_do_not_make_interior() -> None:
    """Face connectivity: a voxel whose face neighbours are all in the mask is interior, whatever its diagonals."""
    plus = np.zeros((3, 3), bool)
    plus[1, :] = plus[:, 1] = True
    expected = plus.copy()
    expected[1, 1] = False
    np.testing.assert_array_equal(surface_mask(plus), expected)


# ----- distances -------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(mask_pairs(), st.data(), st.floats(0, 5))
def test_metrics_match_brute_force(masks: tuple[np.ndarray, np.ndarray], data: st.DataObject, tau: float) -> None:
    pred, ref = masks
    spacing = data.draw(st.lists(dyadic_spacing, min_size=pred.ndim, max_size=pred.ndim))
    got = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=tau)
    if pred.any() and ref.any():
        assert as_tuple(got) == pytest.approx(brute_metrics(pred, ref, spacing, tau), rel=1e-6, abs=1e-6)
    else:
        assert got == empty_surface_metrics(not pred.any(), not ref.any())


def test_arbitrary_spacing_within_float32_precision() -> None:
    """ITK's distance map is float32: for spacings that are not short binary fractions expect ~1e-6 relative error."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        shape = tuple(rng.integers(2, 9, size=3))
        pred, ref = rng.random(shape) < 0.4, rng.random(shape) < 0.4
        if not (pred.any() and ref.any()):
            continue
        spacing = rng.uniform(0.3, 3.0, size=3).tolist()
        tau = float(rng.uniform(0, 4))
        got = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=tau)
        assert as_tuple(got) == pytest.approx(brute_metrics(pred, ref, spacing, tau), rel=1e-5)


def test_directed_distances_of_two_points() -> None:
    a = np.zeros((4, 5, 6), bool)
    b = np.zeros_like(a)
    a[0, 0, 0] = True
    b[3, 4, 5] = b[0, 0, 2] = True
    spacing = (3.0, 2.0, 0.5)
    np.testing.assert_allclose(directed_surface_distances(a, b, spacing), [1.0])
    np.testing.assert_allclose(directed_surface_distances(b, a, spacing), [1.0, np.sqrt(81 + 64 + 6.25)])
    assert directed_surface_distances(a, np.zeros_like(a), spacing).tolist() == [np.inf]


def test_empty_policy() -> None:
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert surface_metrics(empty, empty, (1.0, 1.0)) == SurfaceMetrics(hd=0.0, hd95=0.0, assd=0.0, nsd=1.0)
    one_empty = SurfaceMetrics(hd=np.inf, hd95=np.inf, assd=np.inf, nsd=0.0)
    assert surface_metrics(empty, full, (1.0, 1.0)) == one_empty
    assert surface_metrics(full, empty, (1.0, 1.0)) == one_empty


def random_box(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    starts = [int(rng.integers(0, n)) for n in shape]
    box = tuple(slice(s, int(rng.integers(s + 1, n + 1))) for s, n in zip(starts, shape, strict=True))
    mask[box] = True
    return mask


def test_hd_matches_simpleitk_for_boxes() -> None:
    """SimpleITK's HausdorffDistanceImageFilter uses all foreground voxels, ours only surface voxels.

    They agree for axis-aligned boxes A, B (spacing s): (1) for a voxel x outside B the nearest voxel of B is on S_B
    (a step from an interior voxel towards x gets closer and stays in B), so dist(x, B) = dist(x, S_B); (2) for a box,
    dist(x, B) is convex in x (the nearest voxel is x clamped onto the box), so its maximum over A is reached at a
    corner of A, a surface voxel; (3) a surface voxel a of A inside B lies on a face of A, say a_j = start of A along
    j; moving it along j to B's start gives a voxel b of S_B with dist(b, A) = (a_j - b_j) s_j >= dist(a, S_B), so
    such voxels never push our maximum above SimpleITK's. For non-convex shapes the definitions differ (e.g. a small
    blob deep inside a large one), hence the brute-force reference above for the general case.
    """
    rng = np.random.default_rng(11)
    for _ in range(60):
        shape = (9, 10, 11)
        pred, ref = random_box(rng, shape), random_box(rng, shape)
        spacing = rng.uniform(0.3, 3.0, size=3)
        images = []
        for mask in (pred, ref):
            image = sitk.GetImageFromArray(mask.astype(np.uint8))
            image.SetSpacing(spacing[::-1].tolist())
            images.append(image)
        hausdorff = sitk.HausdorffDistanceImageFilter()
        hausdorff.Execute(*images)
        ours = surface_metrics(pred, ref, spacing.tolist()).hd
        assert ours == pytest.approx(hausdorff.GetHausdorffDistance(), rel=1e-5)


def test_monai_agrees_on_non_empty_masks() -> None:
    """MONAI extracts edges as mask XOR face-connected erosion (border = outside) and takes scipy EDTs of them.

    Same definitions as ours (hd95 = max of the directed 95th percentiles, assd pooled over both surfaces,
    nsd with <= tolerance); MONAI returns float32, hence rel=1e-5. Empty masks differ on purpose: MONAI gives
    NaN for two empty masks and NaN hd95 when one is empty; we apply the documented policy instead.
    """
    pytest.importorskip("monai")
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(40):
        ndim = int(rng.integers(2, 4))
        shape = tuple(rng.integers(2, 10, size=ndim))
        pred, ref = rng.random(shape) < rng.uniform(0.05, 0.9), rng.random(shape) < rng.uniform(0.05, 0.9)
        if not (pred.any() and ref.any()):
            continue
        spacing = (rng.integers(1, 25, size=ndim) / 8).tolist()
        tau = float(rng.uniform(0, 3))
        one_hot = [torch.from_numpy(np.stack([~m, m])[None].astype(np.float32)) for m in (pred, ref)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # MONAI's own use of a deprecated argument
            expected = (
                compute_hausdorff_distance(*one_hot, spacing=spacing).item(),
                compute_hausdorff_distance(*one_hot, percentile=95, spacing=spacing).item(),
                compute_average_surface_distance(*one_hot, symmetric=True, spacing=spacing).item(),
                compute_surface_dice(*one_hot, class_thresholds=[tau], spacing=spacing).item(),
            )
        assert as_tuple(surface_metrics(pred, ref, spacing, nsd_tolerance_mm=tau)) == pytest.approx(expected, rel=1e-5)
        checked += 1
    assert checked > 30
