"""The training planner: deterministic plans from a fingerprint, a device and (fake) step-time measurements;
precision choice; step-time cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessingPlan
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.networks import build_network
from MedSegCNNLib.runtime import CpuInfo
from MedSegCNNLib.training import planner, speed
from MedSegCNNLib.training.config import TrainingConfig
from MedSegCNNLib.training.planner import plan_training, unet_topology
from MedSegCNNLib.training.speed import Mode, StepTimer, fastest_mode

CPU = torch.device("cpu")


def fingerprint(size_xyz=(35, 50, 36), spacing_xyz=(1.0, 1.0, 1.0), cases=160) -> dict:
    """A fingerprint of ``cases`` identical cases (the planner reads sizes, spacings and the case count)."""
    return {
        "num_cases": cases,
        "channel_names": ["MRI"],
        "spacings": [list(spacing_xyz)] * cases,
        "sizes": [list(size_xyz)] * cases,
        "nonzero_sizes": [list(size_xyz)] * cases,
        "median_spacing": list(spacing_xyz),
        "median_size": list(size_xyz),
        "crop_volume_ratio": 1.0,
        "intensity": [{"mean": 0.0, "std": 1.0}],
    }


def preprocessing(spacing_xyz=(1.0, 1.0, 1.0), dims=3) -> PreprocessingPlan:
    return PreprocessingPlan(
        target_spacing=spacing_xyz,
        crop_to_nonzero=False,
        normalization=(NormalizationSpec("zscore"),),
        spatial_dims=dims,
    )


class FakeSpeed:
    """Step seconds ∝ the first level's width (``per_width`` s per channel); bf16 takes ``bf16_factor`` of fp32,
    contiguous memory ``layout_factor`` of channels-last. Counts the measurements."""

    def __init__(self, per_width=0.02, bf16_factor=0.5, layout_factor=1.0):
        self.per_width, self.bf16_factor, self.layout_factor = per_width, bf16_factor, layout_factor
        self.calls: list[tuple] = []

    def __call__(self, network, patch, batch, mode: Mode) -> float:
        self.calls.append((network["features"][0], tuple(patch), batch, mode))
        seconds = self.per_width * network["features"][0]
        seconds *= self.bf16_factor if mode.precision == "bf16" else 1.0
        return seconds * (1.0 if mode.channels_last else self.layout_factor)


def plan(config: TrainingConfig, tmp_path, fake=None, *, available=None, fp=None, prep=None, **kwargs):
    timer = StepTimer(CPU, cache=tmp_path / "times.json", measure=fake or FakeSpeed())
    budget = config.time_budget_minutes
    return plan_training(
        config,
        fingerprint=fp or fingerprint(),
        preprocessing=prep or preprocessing(),
        in_channels=1,
        out_channels=3,
        device=kwargs.pop("device", CPU),
        timer=timer,
        available_seconds=available if available is not None else (None if budget is None else budget * 60),
        device_name="test CPU",
        **kwargs,
    )


@pytest.fixture
def with_bf16(monkeypatch):
    monkeypatch.setattr(speed, "cpu_has_bf16", lambda: True)


@pytest.fixture
def without_bf16(monkeypatch):
    monkeypatch.setattr(speed, "cpu_has_bf16", lambda: False)


def test_the_same_inputs_give_the_same_plan(tmp_path, with_bf16):
    config = TrainingConfig(time_budget_minutes=15, fold=None)
    first = plan(config, tmp_path / "a")
    second = plan(config, tmp_path / "b")
    assert first.to_dict() == second.to_dict()
    assert planner.TrainingPlan.from_dict(json.loads(json.dumps(first.to_dict()))) == first


def test_a_hippocampus_sized_dataset_gets_a_whole_case_patch_and_a_matching_unet(tmp_path, with_bf16):
    result = plan(TrainingConfig(time_budget_minutes=15), tmp_path)
    assert result.patch_size == (40, 56, 40)  # the median case (36, 50, 35) rounded up to the divisor 8
    assert result.network["strides"] == [[2, 2, 2]] * 3 and len(result.network["features"]) == 4
    assert build_network(result.network).divisor == (8, 8, 8)
    assert result.batch_size == 4  # 2^19 voxels / 89,600 per patch, at most 4 in 3D on a CPU


@pytest.mark.parametrize(
    ("minutes", "width"),
    # a step takes 0.01 s per channel of the first level (bf16); a width needs 4000 steps in the budget
    [(2, 8), (12, 16), (17, 24), (25, 32)],
)
def test_the_width_is_the_widest_the_budget_can_train(tmp_path, with_bf16, minutes, width):
    result = plan(TrainingConfig(time_budget_minutes=minutes), tmp_path)
    assert result.network["features"][0] == width
    budget = minutes * 60
    expected_steps = math.floor((budget - max(10.0, 0.03 * budget)) / result.step_seconds)
    assert result.total_steps == expected_steps
    assert result.expected_seconds == pytest.approx(expected_steps * result.step_seconds)
    assert (result.optimizer, result.lr_schedule) == ("adamw", "cosine")
    assert result.warmup_steps == max(5, min(250, round(0.03 * expected_steps)))
    assert result.steps_per_epoch == max(25, min(250, expected_steps // 10))


def test_without_a_budget_the_plan_keeps_epochs_times_steps_and_estimates_the_time(tmp_path, with_bf16):
    result = plan(TrainingConfig(), tmp_path)
    assert result.total_steps == 100 * 250 and result.network["features"][0] == 32
    assert (result.optimizer, result.learning_rate, result.lr_schedule, result.warmup_steps) == ("sgd", 0.01, "poly", 0)
    assert result.expected_seconds == pytest.approx(25_000 * 0.32)
    assert "about 2.2 h on this device; add --time-budget" in result.describe()
    assert plan(TrainingConfig(epochs=3, steps_per_epoch=7), tmp_path).total_steps == 21


def test_values_the_user_gave_are_kept(tmp_path, with_bf16):
    config = TrainingConfig(
        network={"name": "unet", "features": [4, 8, 16]},
        patch_size=(16, 16, 16),
        batch_size=3,
        optimizer="sgd",
        learning_rate=0.05,
        weight_decay=0.0,
        precision="fp32",
        channels_last=False,
        time_budget_minutes=5,
        steps_per_epoch=11,
        warmup_steps=0,
    )
    result = plan(config, tmp_path)
    assert result.network["features"] == [4, 8, 16] and len(result.network["strides"]) == 2
    assert (result.patch_size, result.batch_size) == ((16, 16, 16), 3)
    assert (result.optimizer, result.learning_rate, result.weight_decay) == ("sgd", 0.05, 0.0)
    assert (result.precision, result.channels_last, result.steps_per_epoch, result.warmup_steps) == (
        "fp32", False, 11, 0
    )  # fmt: skip
    applied = result.apply(config)
    assert applied.epochs == math.ceil(result.total_steps / 11) and applied.batch_size == 3


def test_a_budget_with_epochs_says_that_the_budget_wins(tmp_path, with_bf16):
    result = plan(TrainingConfig(time_budget_minutes=5, epochs=7), tmp_path)
    assert any("epochs=7 is ignored" in note for note in result.notes)
    assert result.total_steps > 7 * 250 or result.total_steps == math.floor(290 / result.step_seconds)


def test_a_budget_too_short_for_the_warmup_says_what_it_needs(tmp_path, with_bf16):
    with pytest.raises(InputError, match=r"too short.*give --time-budget \d+ or more"):
        plan(TrainingConfig(time_budget_minutes=1), tmp_path, FakeSpeed(per_width=1.0), available=30)


@pytest.mark.parametrize(
    ("factor", "has_bf16", "expected"),
    [(0.5, True, "bf16"), (1.5, True, "fp32"), (math.inf, True, "fp32"), (0.5, False, "fp32")],
)
def test_bf16_is_chosen_only_where_supported_faster_and_finite(tmp_path, monkeypatch, factor, has_bf16, expected):
    monkeypatch.setattr(speed, "cpu_has_bf16", lambda: has_bf16)
    fake = FakeSpeed(bf16_factor=factor)
    result = plan(TrainingConfig(time_budget_minutes=15), tmp_path, fake)
    assert result.precision == expected
    measured_precisions = {call[3].precision for call in fake.calls}
    assert measured_precisions == ({"fp32", "bf16"} if has_bf16 else {"fp32"})


def test_the_faster_memory_layout_is_chosen(tmp_path, without_bf16):
    config = TrainingConfig(time_budget_minutes=15)
    assert plan(config, tmp_path / "a", FakeSpeed(layout_factor=0.7)).channels_last is False
    assert plan(config, tmp_path / "b", FakeSpeed(layout_factor=1.3)).channels_last is True


def test_anisotropic_data_gets_in_plane_kernels_and_strides_first(tmp_path, with_bf16):
    fp = fingerprint(size_xyz=(320, 320, 20), spacing_xyz=(0.8, 0.8, 5.0), cases=30)
    result = plan(TrainingConfig(time_budget_minutes=30), tmp_path, fp=fp, prep=preprocessing((0.8, 0.8, 5.0)))
    network = result.network
    assert network["kernel_sizes"][0] == [1, 3, 3]  # z (5 mm) is coarser than twice the in-plane 0.8 mm
    assert network["strides"][0] == [1, 2, 2]
    assert math.prod(result.patch_size) <= 96**3 and result.patch_size[0] <= 24
    assert build_network(network).divisor[0] < build_network(network).divisor[1]


def test_unet_topology_follows_the_minimum_size_rule():
    strides, kernels = unet_topology((40, 56, 40), (1.0, 1.0, 1.0))
    assert strides == [[2, 2, 2]] * 3 and kernels == [[3, 3, 3]] * 4  # 40 → 20 → 10 → 5 (< 8 stops)
    strides, _ = unet_topology((256, 256), (1.0, 1.0))
    assert len(strides) == 6  # 7 levels at most in 2D
    assert unet_topology((4, 4, 4), (1.0, 1.0, 1.0))[0] == [[2, 2, 2]]  # a tiny patch still gets one level


def test_a_gpu_batch_fills_its_memory_within_the_dataset_cap(tmp_path):
    config = TrainingConfig(time_budget_minutes=30, precision="bf16", channels_last=True)
    small = plan(config, tmp_path, device=torch.device("cuda"), device_memory_bytes=512 * 1024**2)
    large = plan(config, tmp_path, device=torch.device("cuda"), device_memory_bytes=80 * 1024**3)
    assert small.batch_size == 2 < large.batch_size
    cap = math.floor(0.05 * 160 * 36 * 50 * 35 / (40 * 56 * 40))
    assert large.batch_size == cap


def test_step_times_are_measured_once_and_cached_per_configuration(tmp_path):
    fake = FakeSpeed()
    cache = tmp_path / "times.json"
    network = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "features": [8, 16]}
    timer = StepTimer(CPU, cache=cache, measure=fake)
    first = timer.seconds(network, (16, 16, 16), 2, Mode("fp32", True))
    again = StepTimer(CPU, cache=cache, measure=fake).seconds(network, (16, 16, 16), 2, Mode("fp32", True))
    assert (first.cached, again.cached, again.seconds) == (False, True, first.seconds) and len(fake.calls) == 1
    timer.seconds(network, (16, 16, 16), 2, Mode("bf16", True))
    timer.seconds(network, (16, 16, 32), 2, Mode("fp32", True))
    assert len(fake.calls) == 3
    cache.write_text("{not json")
    assert timer.seconds(network, (16, 16, 16), 2, Mode("fp32", True)).cached is False  # rebuilt, no crash
    assert json.loads(cache.read_text())


def test_fastest_mode_falls_back_to_fp32_when_no_mode_is_finite(tmp_path):
    timer = StepTimer(CPU, cache=False, measure=lambda network, patch, batch, mode: math.inf)
    mode, _seconds, times = fastest_mode(timer, {"features": [8]}, (8, 8, 8), 2, [Mode("bf16", True)])
    assert mode == Mode("fp32", True) and times == {}


def test_the_real_probe_measures_a_finite_step(tmp_path):
    network = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "features": [4, 8]}
    probe = StepTimer(CPU, cache=False).seconds(network, (8, 8, 8), 2, Mode("fp32", False))
    assert 0 < probe.seconds < math.inf and not probe.cached


def test_cpu_flags_decide_whether_bf16_is_worth_measuring():
    assert CpuInfo("x", frozenset({"avx512f", "avx512_bf16"})).bf16_units == ("avx512_bf16",)
    assert CpuInfo("x", frozenset({"amx_bf16", "amx_tile"})).bf16_units == ("amx_bf16",)
    assert CpuInfo("x", frozenset({"avx2", "avx512f"})).bf16_units == ()
    assert "avx512f" in CpuInfo("x", frozenset({"avx512f", "sse2"})).describe()


def flat_fingerprint(size_xy=(64, 48), spacing_xy=(1.0, 1.0), cases=200) -> dict:
    """A fingerprint of ``cases`` identical 2D images."""
    flat = {"spacings": [list(spacing_xy)] * cases, "sizes": [list(size_xy)] * cases, "median_size": list(size_xy)}
    return {**fingerprint(cases=cases), **flat, "nonzero_sizes": flat["sizes"], "median_spacing": list(spacing_xy)}


def test_2d_images_plan_a_2d_model_on_whole_images(tmp_path, with_bf16):
    result = plan(
        TrainingConfig(time_budget_minutes=15), tmp_path, fp=flat_fingerprint(), prep=preprocessing((1.0, 1.0), 2)
    )
    assert result.network["spatial_dims"] == 2 and result.patch_size == (48, 64)  # the whole (48, 64) image
    assert result.apply(TrainingConfig()).spatial_dims == 2
    # 2^19 voxels / 3072 per image is above 32; 5 % of 200 images is 10 images
    assert result.batch_size == 10
    large = plan(TrainingConfig(time_budget_minutes=15), tmp_path, fp=flat_fingerprint((1024, 768)),
                 prep=preprocessing((1.0, 1.0), 2))  # fmt: skip
    assert math.prod(large.patch_size) <= 256**2 and large.patch_size[1] <= 256  # a 2D patch of the picture


def test_2d_images_cannot_train_a_3d_model_and_single_slice_volumes_default_to_2d(tmp_path, with_bf16):
    with pytest.raises(InputError, match=r"These are 2D images; a 3D model needs 3D volumes\. Train a 2D model"):
        plan(TrainingConfig(spatial_dims=3, time_budget_minutes=15), tmp_path, fp=flat_fingerprint(),
             prep=preprocessing((1.0, 1.0), 2))  # fmt: skip
    slices = plan(TrainingConfig(time_budget_minutes=15), tmp_path, fp=fingerprint((64, 48, 1)),
                  prep=preprocessing((1.0, 1.0, None), 2))  # fmt: skip
    assert slices.network["spatial_dims"] == 2 and slices.patch_size == (48, 64)


def test_the_training_memory_estimate_is_measured_once_per_machine(tmp_path, monkeypatch) -> None:
    """The planner's count of feature maps comes from the user's cache after its first measurement (the model
    loader's cache: one entry per configuration and window), and equals the measured count."""
    from MedSegCNNLib.networks import base

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    measured: list[int] = []
    count = base.feature_map_bytes

    def counting(network: torch.nn.Module, window) -> int:
        measured.append(count(network, window))
        return measured[-1]

    monkeypatch.setattr(base, "feature_map_bytes", counting)
    network = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "features": [4, 8, 16]}
    first = planner.training_memory_bytes(network, (16, 16, 16), 2)
    again = planner.training_memory_bytes(network, (16, 16, 16), 2)
    assert first == again and len(measured) == 1
    planner.training_memory_bytes(network, (32, 16, 16), 2)  # another window: measured
    assert len(measured) == 2
    assert len(list((tmp_path / "cache" / "medsegcnn" / "feature-map-bytes").iterdir())) == 2
