"""Data augmentation: configuration, exact geometry, image/label alignment, reproducibility, intensity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from MedSegCNNLib.data.augmentation import AugmentationConfig, Augmenter
from MedSegCNNLib.data.augmentation_intensity import (
    add_gaussian_noise,
    adjust_contrast,
    adjust_gamma,
    gaussian_blur,
    scale_brightness,
)
from MedSegCNNLib.data.augmentation_spatial import (
    elastic_displacement,
    resample,
    rotation_matrices,
    sampling_grid,
)
from MedSegCNNLib.errors import InputError

NONE = AugmentationConfig.none()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no MPS device")),
]
# Each spatial transform alone (strong settings), and all of them together.
SPATIAL = {
    "rotation": {"rotation_p": 1.0, "rotation_max_degrees": (40.0, 40.0, 40.0)},
    "scale": {"scale_p": 1.0, "scale_range": (0.6, 1.6)},
    "translation": {"translation_p": 1.0, "translation_max_fraction": 0.3},
    "shear": {"shear_p": 1.0, "shear_max": 0.3},
    "mirror": {"mirror_p": 0.5},
    "elastic": {"elastic_p": 1.0, "elastic_alpha": (2.0, 4.0), "elastic_sigma": (3.0, 5.0)},
}
SPATIAL["all"] = {key: value for options in SPATIAL.values() for key, value in options.items()}


def config(**options) -> AugmentationConfig:
    return NONE.__class__(**{**NONE.to_dict(), **options})


def blobs(shape: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    """A label map (batch, 1, *shape) of nested, off-centre balls with labels 0, 1, 2 (smooth boundaries)."""
    axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    labels = torch.zeros((batch, 1, *shape), dtype=torch.int64)
    for b in range(batch):
        centre = [s * (0.4 + 0.1 * b) for s in shape]
        distance = sum((axis - c) ** 2 for axis, c in zip(axes, centre, strict=True)).sqrt()
        radius = min(shape) * 0.3
        labels[b, 0][distance < radius] = 1
        labels[b, 0][distance < radius / 2] = 2
    return labels


# ---------------------------------------------------------------------------------------------- configuration


def test_config_defaults_round_trip_through_json():
    default = AugmentationConfig()
    data = json.loads(json.dumps(default.to_dict()))
    assert data["scale_range"] == [0.7, 1.4] and data["mirror_axes"] is None
    assert AugmentationConfig.from_dict(data) == default
    custom = AugmentationConfig(mirror_axes=(1, 2), rotation_max_degrees=[10, 0, 0], blur_p=1)
    assert AugmentationConfig.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom
    assert custom.rotation_max_degrees == (10.0, 0.0, 0.0) and custom.blur_p == 1.0


def test_none_turns_everything_off():
    probabilities = {key: value for key, value in NONE.to_dict().items() if key.endswith("_p")}
    assert len(probabilities) == 12 and set(probabilities.values()) == {0.0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rotation_p": 1.5}, "rotation_p must be a probability"),
        ({"mirror_p": -0.1}, "mirror_p must be a probability"),
        ({"scale_range": (1.4, 0.7)}, "low <= high"),
        ({"scale_range": (0.0, 1.4)}, "scale_range must be > 0"),
        ({"noise_std": (-0.1, 0.1)}, "noise_std must be >= 0"),
        ({"gamma_range": (0.7,)}, "gamma_range must be 2 numbers"),
        ({"blur_sigma": ("a", 1.0)}, "finite number"),
        ({"brightness_p": True}, "finite number"),
        ({"contrast_range": (0.5, math.inf)}, "finite number"),
        ({"rotation_max_degrees": (30.0, 200.0, 0.0)}, r"\[0, 180\]"),
        ({"translation_max_fraction": 2.0}, r"\[0, 1\]"),
        ({"mirror_axes": (0, 0)}, "distinct"),
        ({"mirror_axes": (3,)}, "mirror_axes"),
        ({"image_interpolation": "cubic"}, "image_interpolation must be one of"),
        ({"image_padding": "wrap"}, "image_padding must be one of"),
    ],
)
def test_config_validation(options, message):
    with pytest.raises(InputError, match=message):
        AugmentationConfig(**options)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(InputError, match=r"Unknown field\(s\) in the augmentation configuration: rotaton_p"):
        AugmentationConfig.from_dict({"rotaton_p": 0.2})


def test_augmenter_argument_checks():
    with pytest.raises(InputError, match="spatial_dims"):
        Augmenter(AugmentationConfig(), 4)
    with pytest.raises(InputError, match="mirror_axes"):
        Augmenter(AugmentationConfig(mirror_axes=(0, 2)), 2)
    augmenter = Augmenter(AugmentationConfig(), 2)
    images, labels = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.int64)
    with pytest.raises(InputError, match="int64"):
        augmenter(images, labels.int())
    with pytest.raises(InputError, match="int64 tensor of shape"):
        augmenter(images, labels[:1])
    with pytest.raises(InputError, match="floating-point"):
        augmenter(images.long(), labels)
    with pytest.raises(InputError, match="2 spatial axes"):
        augmenter(images[..., None], labels[..., None])
    for state in ({"seed": 0, "generator": "not base64!"}, {"seed": 0, "generator": "AAAA"}, {"seed": 0}, [1]):
        with pytest.raises(InputError, match="augmenter state"):
            augmenter.load_state_dict(state)


# ------------------------------------------------------------------------------------------- known geometry


@pytest.mark.parametrize("dims", [2, 3])
def test_all_probabilities_zero_returns_inputs_exactly(dims):
    images = torch.randn(3, 2, *(6,) * dims)
    labels = blobs((6,) * dims, 3)
    images_copy, labels_copy = images.clone(), labels.clone()
    out_images, out_labels = Augmenter(NONE, dims, seed=3)(images, labels)
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)
    assert out_images.data_ptr() != images.data_ptr()
    assert torch.equal(images, images_copy) and torch.equal(labels, labels_copy)


@pytest.mark.parametrize(("dims", "axes"), [(2, None), (3, None), (3, (1,)), (2, (0,))])
def test_mirroring_equals_flip(dims, axes):
    images = torch.randn(2, 2, *(5, 6, 7)[:dims])
    labels = torch.randint(0, 4, (2, 1, *(5, 6, 7)[:dims]))
    out_images, out_labels = Augmenter(config(mirror_p=1.0, mirror_axes=axes), dims)(images, labels)
    flipped = [a + 2 for a in (axes or range(dims))]
    assert torch.equal(out_images, torch.flip(images, flipped))
    assert torch.equal(out_labels, torch.flip(labels, flipped))


@pytest.mark.parametrize(
    ("angles", "rot90_dims"),
    [
        ((1.0,), (-1, -2)),  # 2D, about z: +x turns towards +y
        ((1.0, 0.0, 0.0), (-1, -2)),  # about z
        ((0.0, 1.0, 0.0), (-3, -1)),  # about y: +z turns towards +x
        ((0.0, 0.0, 1.0), (-2, -3)),  # about x: +y turns towards +z
        ((-1.0, 0.0, 0.0), (-2, -1)),  # negative angle: the other way
    ],
)
def test_quarter_turn_equals_rot90(angles, rot90_dims):
    shape = (5,) * len(angles) if len(angles) == 3 else (6, 6)
    images = torch.randn(1, 2, *shape)
    labels = torch.randint(0, 9, (1, 1, *shape))
    matrix = rotation_matrices(torch.tensor([angles], dtype=torch.float64) * math.pi / 2)
    grid = sampling_grid(matrix, torch.zeros(1, len(shape)), shape)
    out_images, out_labels = resample(images, labels, grid)
    assert torch.equal(out_labels, torch.rot90(labels, 1, rot90_dims))
    torch.testing.assert_close(out_images, torch.rot90(images, 1, rot90_dims), atol=1e-5, rtol=0)


def test_rotation_is_isotropic_on_a_non_square_patch():
    """A quarter turn of an 8 x 12 patch turns its central 8 x 8 square like rot90; the rest comes from
    outside the input (zeros). Without the aspect correction of normalised coordinates this fails."""
    images = torch.randn(1, 1, 8, 12)
    labels = torch.randint(1, 5, (1, 1, 8, 12))
    grid = sampling_grid(
        rotation_matrices(torch.tensor([[math.pi / 2]], dtype=torch.float64)), torch.zeros(1, 2), (8, 12)
    )
    out_images, out_labels = resample(images, labels, grid)
    expected = torch.zeros_like(labels)
    expected[..., 2:10] = torch.rot90(labels[..., 2:10], 1, (-1, -2))
    assert torch.equal(out_labels, expected)
    torch.testing.assert_close(out_images[..., 2:10], torch.rot90(images[..., 2:10], 1, (-1, -2)), atol=1e-5, rtol=0)
    assert out_images[..., :2].abs().max() < 1e-5 and out_images[..., 10:].abs().max() < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_integer_translation_shifts_exactly(dims):
    shape = (6, 7, 8)[:dims]
    shift = (2, -3, 1)[:dims]
    images = torch.randn(1, 1, *shape)
    labels = torch.randint(1, 5, (1, 1, *shape))
    grid = sampling_grid(torch.eye(dims, dtype=torch.float64)[None], torch.tensor([shift], dtype=torch.float64), shape)
    out_images, out_labels = resample(images, labels, grid)
    expected_labels, expected_images = torch.zeros_like(labels), torch.zeros_like(images)
    target = tuple(slice(max(s, 0), n + min(s, 0)) for s, n in zip(shift, shape, strict=True))
    source = tuple(slice(max(-s, 0), n + min(-s, 0)) for s, n in zip(shift, shape, strict=True))
    expected_labels[(..., *target)] = labels[(..., *source)]
    expected_images[(..., *target)] = images[(..., *source)]
    assert torch.equal(out_labels, expected_labels)
    torch.testing.assert_close(out_images, expected_images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_constant_displacement_equals_the_opposite_translation(dims):
    """A displacement field u reads the input at p + u: a constant integer u is a translation by -u."""
    shape, shift = (6, 7, 8)[:dims], (1, -2, 3)[:dims]
    labels = torch.randint(1, 5, (1, 1, *shape))
    identity = torch.eye(dims, dtype=torch.float64)[None]
    displacement = torch.tensor(shift, dtype=torch.float64).reshape(1, dims, *([1] * dims)).expand(1, dims, *shape)
    displaced = resample(labels.float(), labels, sampling_grid(identity, torch.zeros(1, dims), shape, displacement))
    negative = torch.tensor([[-s for s in shift]], dtype=torch.float64)
    translated = resample(labels.float(), labels, sampling_grid(identity, negative, shape))
    assert torch.equal(displaced[1], translated[1]) and not torch.equal(displaced[1], labels)


@pytest.mark.parametrize("dims", [2, 3])
def test_zoom_two_doubles_a_centred_box(dims):
    """A box of 4 voxels along each axis, centred in a non-cubic patch, becomes 8 voxels along each axis."""
    shape = (16, 20, 12)[:dims]
    labels = torch.zeros((1, 1, *shape), dtype=torch.int64)
    labels[(..., *(slice(n // 2 - 2, n // 2 + 2) for n in shape))] = 1
    _, out_labels = Augmenter(config(scale_p=1.0, scale_range=(2.0, 2.0)), dims)(labels.double(), labels)
    expected = torch.zeros_like(labels)
    expected[(..., *(slice(n // 2 - 4, n // 2 + 4) for n in shape))] = 1
    assert torch.equal(out_labels, expected)


@pytest.mark.parametrize("dims", [2, 3])
def test_resampling_without_motion_is_the_identity(dims):
    """Rotation fires with a zero angle: the image is resampled on the unmoved grid, so no half-voxel shift."""
    images, labels = torch.randn(2, 2, *(5, 6, 7)[:dims]), blobs((5, 6, 7)[:dims])
    augmenter = Augmenter(config(rotation_p=1.0, rotation_max_degrees=(0.0, 0.0, 0.0)), dims)
    out_images, out_labels = augmenter(images, labels)
    assert torch.equal(out_labels, labels)
    torch.testing.assert_close(out_images, images, atol=1e-5, rtol=0)
    assert not torch.equal(out_images, images)  # it did go through grid_sample


def test_elastic_displacement_peak_is_alpha():
    field = elastic_displacement((12, 14, 10), 3.5, 4.0, torch.Generator().manual_seed(0), dtype=torch.float32)
    assert field.shape == (3, 12, 14, 10)
    peaks = field.flatten(1).abs().amax(1)
    assert torch.all(peaks <= 3.5 + 1e-5) and torch.all(peaks > 3.0)  # interpolation can only lower the peak
    assert field.diff(dim=1).abs().max() < 1.5  # smooth: neighbours move alike


# ------------------------------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("transform", list(SPATIAL))
def test_images_and_labels_stay_aligned(dims, transform):
    """The label map, given as an image channel too, must come out equal to the augmented label map."""
    shape = (14, 16, 12)[:dims]
    labels = blobs(shape, 3)
    images = torch.cat([labels.float(), torch.randn(labels.shape)], dim=1)
    options = SPATIAL[transform]
    nearest = Augmenter(config(**options, image_interpolation="nearest"), dims, seed=5)
    out_images, out_labels = nearest(images, labels)
    assert torch.equal(out_images[:, :1], out_labels.float())
    assert not torch.equal(out_labels, labels)
    # The same transforms with linear interpolation: rounding the interpolated channel gives the label wherever
    # the label does not change within one voxel.
    out_images, out_labels = Augmenter(config(**options), dims, seed=5)(images, labels)
    pool = torch.nn.functional.max_pool3d if dims == 3 else torch.nn.functional.max_pool2d
    values = out_labels.float()
    interior = (pool(values, 3, 1, 1) == values) & (-pool(-values, 3, 1, 1) == values)
    agree = out_images[:, :1].round() == values
    assert agree[interior].float().mean() >= 0.99
    assert interior.float().mean() > 0.5


@pytest.mark.parametrize("dims", [2, 3])
def test_labels_keep_their_values_and_types(dims):
    shape = (9, 10, 11)[:dims]
    values = torch.tensor([0, 3, 7, 250, 100_000])
    labels = values[torch.randint(0, 5, (4, 1, *shape))]
    images = torch.randn(4, 3, *shape, dtype=torch.float64)
    out_images, out_labels = Augmenter(config(**SPATIAL["all"]), dims, seed=1)(images, labels)
    assert out_labels.dtype == torch.int64 and out_labels.shape == labels.shape
    assert out_images.dtype == torch.float64 and out_images.shape == images.shape
    assert set(out_labels.unique().tolist()) <= set(values.tolist())


@pytest.mark.parametrize("device", DEVICES)
def test_tensors_stay_on_their_device(device):
    images = torch.randn(2, 2, 8, 9, 10, device=device)
    labels = blobs((8, 9, 10)).to(device)
    full = AugmentationConfig(**{**SPATIAL["all"], "noise_p": 1, "blur_p": 1, "gamma_p": 1, "contrast_p": 1})
    out_images, out_labels = Augmenter(full, 3)(images, labels)
    assert out_images.device == images.device and out_labels.device == labels.device
    assert out_images.dtype == torch.float32 and out_labels.dtype == torch.int64
    assert torch.isfinite(out_images).all()


# ---------------------------------------------------------------------------------------------- reproducibility


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randn(3, 2, 8, 9, 10), blobs((8, 9, 10), 3)


def test_same_seed_same_results_different_seed_different_results():
    images, labels = _batch()
    every = AugmentationConfig(**{**SPATIAL["all"], "noise_p": 1.0, "blur_p": 0.5, "gamma_p": 0.5})
    first, second, other = Augmenter(every, 3, seed=7), Augmenter(every, 3, seed=7), Augmenter(every, 3, seed=8)
    for _ in range(2):
        a, b, c = first(images, labels), second(images, labels), other(images, labels)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])


def test_state_dict_resumes_the_stream():
    images, labels = _batch()
    augmenter = Augmenter(AugmentationConfig(noise_p=0.5, elastic_p=0.5), 3, seed=11)
    augmenter(images, labels)
    state = json.loads(json.dumps(augmenter.state_dict()))
    expected = [augmenter(images, labels) for _ in range(2)]
    resumed = Augmenter(AugmentationConfig(noise_p=0.5, elastic_p=0.5), 3, seed=0)
    resumed.load_state_dict(state)
    assert resumed.seed == 11
    for want in expected:
        got = resumed(images, labels)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_mirror_probability_per_sample():
    """mirror_p 0.5: about half of the samples are flipped (exactly), the others are copied exactly."""
    images, labels = torch.randn(200, 1, 4, 4), torch.randint(0, 3, (200, 1, 4, 4))
    out_images, out_labels = Augmenter(config(mirror_p=0.5, mirror_axes=(1,)), 2, seed=2)(images, labels)
    flipped = torch.tensor([torch.equal(o, torch.flip(i, [-1])) for o, i in zip(out_images, images, strict=True)])
    unchanged = torch.tensor([torch.equal(o, i) for o, i in zip(out_images, images, strict=True)])
    assert bool((flipped ^ unchanged).all()) and 70 <= int(flipped.sum()) <= 130
    assert torch.equal(out_labels[flipped], torch.flip(labels[flipped], [-1]))
    assert torch.equal(out_labels[unchanged], labels[unchanged])


# ---------------------------------------------------------------------------------------------------- intensity


def test_gamma_keeps_each_channel_range_and_order():
    images = torch.randn(2, 3, 6, 7, 8, dtype=torch.float64) * 5 + 2
    gamma = torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.7, 3.0]])
    for inverted in (False, True):
        result = adjust_gamma(images, gamma, inverted=inverted)
        torch.testing.assert_close(result.flatten(2).amin(-1), images.flatten(2).amin(-1))
        torch.testing.assert_close(result.flatten(2).amax(-1), images.flatten(2).amax(-1))
        order = images.flatten(2).argsort(-1)
        assert torch.all(result.flatten(2).gather(-1, order).diff(dim=-1) >= 0)  # monotonic
        torch.testing.assert_close(result[0, 1], images[0, 1])  # gamma 1 is the identity
    ramp = torch.linspace(0, 1, 5, dtype=torch.float64).reshape(1, 1, 1, 5)
    torch.testing.assert_close(adjust_gamma(ramp, torch.tensor([[2.0]]))[0, 0, 0], ramp[0, 0, 0] ** 2)
    torch.testing.assert_close(
        adjust_gamma(ramp, torch.tensor([[2.0]]), inverted=True)[0, 0, 0], 1 - (1 - ramp[0, 0, 0]) ** 2
    )
    constant = torch.full((1, 1, 3, 3), 4.0)
    assert torch.equal(adjust_gamma(constant, torch.tensor([[2.0]])), constant)


def test_gamma_draws_fall_on_both_sides_of_one():
    augmenter = Augmenter(config(gamma_p=1.0, gamma_range=(0.5, 2.0)), 2)
    params = augmenter._draw(400, 1, torch.Size([4, 4]))
    values = params["gamma_value"]
    assert values.min() >= 0.5 and values.max() <= 2.0
    assert 150 <= int((values < 1).sum()) <= 250


def test_noise_has_the_configured_std():
    images = torch.zeros(2, 2, 32, 32, 32)
    noisy = add_gaussian_noise(images, torch.tensor([0.5, 2.0]), torch.Generator().manual_seed(0))
    std = noisy.flatten(1).std(-1)
    torch.testing.assert_close(std, torch.tensor([0.5, 2.0]), rtol=0.03, atol=0)
    assert abs(float(noisy.mean())) < 0.02


def test_blur_matches_scipy_and_reduces_variance():
    torch.manual_seed(0)
    images = torch.randn(2, 2, 10, 11, 12, dtype=torch.float64)
    sigma = torch.tensor([[0.5, 1.0], [1.5, 0.8]])
    blurred = gaussian_blur(images, sigma)
    radius = math.ceil(3 * 1.5)
    for b in range(2):
        for c in range(2):
            s = float(sigma[b, c])
            expected = ndimage.gaussian_filter(images[b, c].numpy(), s, mode="nearest", truncate=radius / s)
            np.testing.assert_allclose(blurred[b, c].numpy(), expected, atol=1e-10)
    assert torch.all(blurred.flatten(2).var(-1) < 0.6 * images.flatten(2).var(-1))
    constant = torch.full((1, 1, 5, 5), 3.0)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([[1.0]])), constant)


def test_brightness_and_contrast():
    images = torch.randn(2, 2, 6, 6)
    factor = torch.tensor([[0.5, 2.0], [1.0, 1.25]])
    assert torch.equal(scale_brightness(images, factor), images * factor[..., None, None])
    mean = images.mean((-1, -2), keepdim=True)
    lowered = adjust_contrast(images, torch.full((2, 2), 0.5))
    torch.testing.assert_close(lowered - mean, (images - mean) * 0.5)
    raised = adjust_contrast(images, torch.full((2, 2), 3.0))
    assert torch.all(raised.amax((-1, -2)) <= images.amax((-1, -2)))
    assert torch.all(raised.amin((-1, -2)) >= images.amin((-1, -2)))


def test_intensity_only_touches_images():
    images, labels = _batch()
    augmenter = Augmenter(config(brightness_p=1.0, brightness_range=(2.0, 2.0)), 3)
    out_images, out_labels = augmenter(images, labels)
    assert torch.equal(out_images, images * 2) and torch.equal(out_labels, labels)
