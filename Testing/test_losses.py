"""Losses: agreement with torch's cross-entropy, Dice definitions (batch, background), focal, mixed precision,
deep supervision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.losses import (
    LOSS_NAMES,
    DeepSupervisionLoss,
    build_loss,
    deep_supervision_weights,
    downsample_target,
)


def _data(shape=(2, 3, 4, 5, 6), seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator)
    target = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator)
    return logits, target


def _one_hot_logits(target, classes, scale=50.0):
    """Logits whose softmax is (almost exactly) the one-hot encoding of ``target``."""
    return functional.one_hot(target[:, 0], classes).movedim(-1, 1).float() * scale


def _numpy_dice_loss(logits, target, *, batch_dice, include_background, smooth=1e-5):
    probs = torch.softmax(logits.double(), 1).numpy()
    one_hot = np.eye(logits.shape[1])[target[:, 0].numpy()].transpose(0, 4, 1, 2, 3)
    axes = (0, 2, 3, 4) if batch_dice else (2, 3, 4)
    dice = (2 * (probs * one_hot).sum(axes) + smooth) / (probs.sum(axes) + one_hot.sum(axes) + smooth)
    return 1 - dice[..., 0 if include_background else 1 :].mean()


def test_ce_equals_torch_cross_entropy():
    logits, target = _data()
    assert torch.allclose(build_loss("ce")(logits, target), functional.cross_entropy(logits, target[:, 0]))
    weights = [0.2, 1.0, 3.0]
    expected = functional.cross_entropy(logits, target[:, 0], weight=torch.tensor(weights))
    assert torch.allclose(build_loss("ce", class_weights=weights)(logits, target), expected)


def test_dice_of_perfect_and_opposite_predictions():
    _, target = _data()
    dice = build_loss("dice")
    assert dice(_one_hot_logits(target, 3), target).item() == pytest.approx(0, abs=1e-5)
    wrong = (target + 1) % 3  # every voxel predicted as another class
    assert dice(_one_hot_logits(wrong, 3), target).item() == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
def test_dice_matches_its_definition(batch_dice, include_background):
    logits, target = _data(seed=3)
    loss = build_loss("dice", batch_dice=batch_dice, include_background=include_background)(logits, target)
    expected = _numpy_dice_loss(logits, target, batch_dice=batch_dice, include_background=include_background)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_batch_dice_differs_from_per_sample_dice():
    # Sample 0 has a large foreground predicted perfectly, sample 1 a single voxel missed.
    target = torch.zeros(2, 1, 1, 4, 4, dtype=torch.long)
    target[0, 0, 0, :2] = 1
    target[1, 0, 0, 0, 0] = 1
    prediction = target.clone()
    prediction[1, 0, 0, 0, 0] = 0
    logits = _one_hot_logits(prediction, 2)
    per_sample = build_loss("dice")(logits, target).item()
    batch = build_loss("dice", batch_dice=True)(logits, target).item()
    assert per_sample == pytest.approx(0.5, abs=1e-4)  # mean of Dice 1 and Dice 0
    assert batch == pytest.approx(1 - 2 * 8 / (8 + 9), abs=1e-4)  # one Dice over both samples


def test_background_exclusion():
    target = torch.zeros(1, 1, 1, 4, 4, dtype=torch.long)
    target[..., 0, 0] = 1
    logits = _one_hot_logits(torch.zeros_like(target), 2)  # everything predicted background
    assert build_loss("dice")(logits, target).item() == pytest.approx(1, abs=1e-4)
    with_background = build_loss("dice", include_background=True)(logits, target).item()
    assert with_background == pytest.approx(1 - (2 * 15 / 31) / 2, abs=1e-4)


def test_dice_ce_is_the_sum():
    logits, target = _data(seed=5)
    total = build_loss("dice_ce")(logits, target)
    assert torch.allclose(total, build_loss("dice")(logits, target) + build_loss("ce")(logits, target))


def test_focal_loss():
    logits, target = _data(seed=7)
    weights = [1.0, 2.0, 0.5]
    assert torch.allclose(build_loss("focal", focal_gamma=0)(logits, target), build_loss("ce")(logits, target))
    weighted_ce = build_loss("ce", class_weights=weights)(logits, target)
    assert torch.allclose(build_loss("focal", focal_gamma=0, class_weights=weights)(logits, target), weighted_ce)
    p_t = torch.softmax(logits, 1).gather(1, target)
    expected = (-((1 - p_t) ** 2) * torch.log(p_t)).mean()
    assert torch.allclose(build_loss("focal")(logits, target), expected, rtol=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_are_finite_even_for_saturated_logits(name):
    _, target = _data()
    for logits in (_data()[0], _one_hot_logits(target, 3, scale=1e4), -_one_hot_logits(target, 3, scale=1e4)):
        logits = logits.clone().requires_grad_()
        loss = build_loss(name, focal_gamma=0.5, class_weights=[1, 2, 3])(logits, target)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_under_autocast(name, dtype):
    torch.manual_seed(0)
    network = torch.nn.Conv3d(2, 3, 3, padding=1)
    image = torch.randn(2, 2, 4, 6, 6)
    _, target = _data((2, 3, 4, 6, 6))
    loss = build_loss(name)
    reference = loss(network(image), target)
    with torch.autocast("cpu", dtype=dtype):
        logits = network(image)
        assert logits.dtype == dtype
        low = loss(logits, target)
    assert low.dtype == torch.float32
    assert torch.isfinite(low)
    assert low.item() == pytest.approx(reference.item(), rel=2e-2)
    # Logits near the float16 limit: softmax in float32 keeps the loss finite.
    huge = (_one_hot_logits(target, 3, scale=6e4) - 3e4).to(dtype)
    assert torch.isfinite(loss(huge, target))


def test_two_dimensional_inputs():
    logits, target = _data((3, 2, 7, 5))
    for name in LOSS_NAMES:
        assert torch.isfinite(build_loss(name)(logits, target))


def test_bad_arguments_and_inputs():
    with pytest.raises(InputError, match="ce, dice, dice_ce, focal"):
        build_loss("tversky")
    for kwargs in ({"smooth": -1}, {"smooth": float("nan")}, {"focal_gamma": -2}, {"class_weights": [0, 0]}):
        with pytest.raises(InputError):
            build_loss("focal" if "focal_gamma" in kwargs else "dice_ce", **kwargs)
    with pytest.raises(InputError, match="positive weight"):
        build_loss("dice", class_weights=[1, 0])
    logits, target = _data()
    loss = build_loss()
    with pytest.raises(InputError, match=r"labels 3\.\.3"):
        loss(logits, target.clone().fill_(3))
    with pytest.raises(InputError, match="integer"):
        loss(logits, target.float())
    with pytest.raises(InputError, match="unsqueeze"):
        loss(logits, target[:, 0])
    with pytest.raises(InputError, match="one per class"):
        build_loss(class_weights=[1, 2])(logits, target)
    with pytest.raises(InputError, match="two output channels"):
        loss(logits[:, :1], torch.zeros_like(target))


def test_deep_supervision_weights():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(2) == pytest.approx([2 / 3, 1 / 3])
    assert deep_supervision_weights(4) == pytest.approx(np.array([1, 0.5, 0.25, 0]) / 1.75)
    assert DeepSupervisionLoss(build_loss(), 2, weights=[3, 1]).weights == [0.75, 0.25]
    for bad in ({"num_outputs": 0}, {"num_outputs": 2, "weights": [1]}, {"num_outputs": 2, "weights": [0, 0]}):
        with pytest.raises(InputError):
            DeepSupervisionLoss(build_loss(), **bad)


def test_target_downsampling_is_nearest_exact():
    target = torch.randint(0, 5, (2, 1, 9, 8, 7))
    for shape in [(5, 4, 4), (3, 2, 2), (9, 8, 7), (4, 8, 3)]:
        reduced = downsample_target(target, shape)
        expected = functional.interpolate(target.float(), size=shape, mode="nearest-exact").long()
        assert reduced.shape == (2, 1, *shape)
        assert torch.equal(reduced, expected)


def test_deep_supervision_loss():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    outputs = [torch.randn(2, 3, 8 // 2**i, 8 // 2**i, 8 // 2**i, requires_grad=True) for i in range(4)]
    base = build_loss()
    loss = DeepSupervisionLoss(base, 4)
    expected = sum(
        w * base(o, downsample_target(target, o.shape[2:]))
        for w, o in zip(deep_supervision_weights(4), outputs, strict=True)
    )
    total = loss(outputs, target)
    assert torch.allclose(total, expected)
    total.backward()
    assert outputs[-1].grad is None  # weight 0: not evaluated
    assert torch.isfinite(outputs[0].grad).all()
    assert torch.equal(loss(outputs[0], target), base(outputs[0], target))  # a single tensor: plain loss
    with pytest.raises(InputError, match="returned 3 outputs"):
        loss(outputs[:3], target)
    with pytest.raises(InputError, match="does not fit"):
        loss([outputs[0], torch.randn(2, 3, 16, 16, 16), *outputs[2:]], target)
