"""End-to-end training on synthetic phantoms: learning, exact resume, output safety, fine-tuning, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from MedSegCNNLib import Image
from MedSegCNNLib.checkpoint import load_model
from MedSegCNNLib.checkpoint.model_card import Licence
from MedSegCNNLib.data.dataset import dataset_from_pairs, load_case
from MedSegCNNLib.data.preprocessing import preprocess_case
from MedSegCNNLib.errors import InputError, OutputExistsError
from MedSegCNNLib.progress import Event
from MedSegCNNLib.training.config import TrainingConfig
from MedSegCNNLib.training.speed import StepTimer
from MedSegCNNLib.training.trainer import train
from MedSegCNNLib.training.validation import validate

TINY_UNET = {"name": "unet", "features": [8, 16, 32]}


def phantom(seed: int, shape=(24, 24, 24)) -> tuple[Image, Image]:
    """A noisy image with a bright ball (label 1) in the low-z, low-x corner region and a darker box (label 2)
    in the high-z, high-x one, at random places: they never share an axial slice, so 2D and 3D models see
    the same kinds of slices in every case."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.uint8)
    grid = np.indices(shape)
    centre = np.array([rng.integers(5, 8), rng.integers(6, shape[1] - 6), rng.integers(5, 7)])
    label[((grid - centre[:, None, None, None]) ** 2).sum(0) <= 16] = 1
    corner = [rng.integers(13, shape[0] - 6), rng.integers(2, shape[1] - 8), rng.integers(13, shape[2] - 6)]
    label[tuple(slice(c, c + 6) for c in corner)] = 2
    image = np.where(label == 1, 2.0, np.where(label == 2, 1.0, 0.0)) + rng.normal(0, 0.3, shape)
    spacing = (1.0, 1.0, 1.5)
    return Image.from_array(image.astype(np.float32), spacing=spacing), Image.from_array(label, spacing=spacing)


def phantom_dataset(count: int = 4):
    return dataset_from_pairs([phantom(seed) for seed in range(count)], label_names={0: "bg", 1: "ball", 2: "box"})


def quick_config(**changes) -> TrainingConfig:
    values = {
        "network": TINY_UNET,
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 2,
        "patch_size": (16, 16, 16),
        "fold": None,
        "augmentation": {"rotation_p": 0.0, "scale_p": 0.0, "mirror_p": 0.0},
        "device": "cpu",
    }
    values.update(changes)
    return TrainingConfig(**values)


def _learning_config(dims: int, **changes) -> TrainingConfig:
    return quick_config(
        spatial_dims=dims,
        patch_size=(16, 16, 16) if dims == 3 else (24, 24),
        epochs=10,
        steps_per_epoch=20 if dims == 3 else 30,
        batch_size=2 if dims == 3 else 8,  # 2D slices are cheap but hold little foreground each
        optimizer="adam",
        learning_rate=1e-2,
        batch_dice=True,  # per-sample soft Dice learns slowly on small patches where a class is often absent
        augmentation={"rotation_p": 0.0, "scale_p": 0.0},
        **changes,
    )


def test_a_small_3d_network_learns_the_phantom_and_validates_on_held_out_cases(tmp_path):
    config = _learning_config(3, folds=2, fold=0, validate_every=5, licence="CC-BY-4.0")
    events: list[Event] = []
    result = train(phantom_dataset(6), tmp_path / "run", config, on_event=events.append)
    assert result.status == "completed" and result.epochs_done == config.epochs
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.3 * losses[0], losses
    assert result.best_mean_dice is not None and result.best_mean_dice > 0.9, result.history
    kinds = {event.kind for event in events}
    assert {"start", "step", "epoch", "validation", "checkpoint", "end"} <= kinds
    _network, card = load_model(result.model)
    assert card.training.validation.mean_dice == pytest.approx(result.best_mean_dice)
    assert card.labels[1].name == "ball" and card.spatial_dims == 3
    assert len(card.training.val_cases) == 3
    assert card.licence == Licence(spdx="CC-BY-4.0")
    assert (tmp_path / "run" / "training_log.csv").is_file() and (tmp_path / "run" / "training_curves.png").is_file()


def test_a_small_2d_network_overfits_the_phantom(tmp_path):
    """Trained on all cases (no held-out fold); Dice measured on those cases, slice by slice."""
    dataset = phantom_dataset(3)
    result = train(dataset, tmp_path / "run", _learning_config(2, fold=None))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.3 * losses[0], losses
    plan = load_model(result.model)[1].preprocessing
    cases = [preprocess_case(*load_case(case), plan, name=case.name) for case in dataset.cases]
    dice = validate(result.network, cases, [1, 2], (24, 24), torch.device("cpu"), "fp32")
    assert min(dice.values()) > 0.9, dice


PRECISION = "auto"


@pytest.mark.parametrize("cancel_at", [4, 3])  # mid-epoch, and the last step of an epoch
def test_resume_after_cancel_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, cancel_at):
    config = quick_config(epochs=2, steps_per_epoch=3, augmentation=None, precision=PRECISION)  # default augmentation
    straight = train(phantom_dataset(), tmp_path / "straight", config)

    def cancel(event: Event) -> None:
        if event.kind == "step" and event.data["step"] == cancel_at:
            os.kill(os.getpid(), signal.SIGINT)

    interrupted = train(phantom_dataset(), tmp_path / "resumed", config, on_event=cancel)
    assert interrupted.status == "cancelled" and interrupted.model is None
    resumed = train(phantom_dataset(), tmp_path / "resumed", config, resume=True)
    assert resumed.status == "completed" and resumed.epochs_done == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    expected = load_file(straight.model / "model.safetensors")
    actual = load_file(resumed.model / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_output_folder_is_never_overwritten_without_being_asked(tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"holds no training run \(only other files\).*--overwrite"):
        train(phantom_dataset(), output, quick_config(epochs=1))
    with pytest.raises(InputError, match="Nothing to resume"):
        train(phantom_dataset(), output, quick_config(epochs=1), resume=True)
    result = train(phantom_dataset(), output, quick_config(epochs=1), overwrite=True)
    assert result.status == "completed" and (output / "notes.txt").read_text() == "mine"


def test_an_interrupt_before_the_first_checkpoint_leaves_the_replaced_run_as_it_was(tmp_path):
    output = tmp_path / "run"
    train(phantom_dataset(), output, quick_config(epochs=1))
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}

    def interrupt(event: Event) -> None:
        if event.kind == "start":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(phantom_dataset(), output, quick_config(epochs=1, seed=5), overwrite=True, on_event=interrupt)
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == before


def test_bad_datasets_are_refused(tmp_path):
    image, label = phantom(0)
    undeclared = dataset_from_pairs([(image, label)] * 2, label_names={0: "bg", 1: "ball"})  # label 2 undeclared
    with pytest.raises(InputError, match="2"):
        train(undeclared, tmp_path / "a", quick_config())
    gaps = dataset_from_pairs([(image, label)] * 2, label_names={0: "bg", 1: "ball", 2: "box", 5: "x"})
    with pytest.raises(InputError, match="consecutive"):
        train(gaps, tmp_path / "b", quick_config())
    with pytest.raises(InputError, match="multiple of"):
        train(phantom_dataset(), tmp_path / "c", quick_config(patch_size=(15, 16, 16)))


def test_fine_tuning_with_a_frozen_encoder(tmp_path):
    base = train(phantom_dataset(), tmp_path / "base", quick_config(epochs=1))
    tuned = train(
        phantom_dataset(), tmp_path / "tuned", quick_config(epochs=1, init_from=str(base.model), freeze_encoder=True)
    )
    before = base.network.encoder.state_dict()
    after = tuned.network.encoder.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # the encoder did not move
    two_channels = dataset_from_pairs(
        [
            (Image.from_array(np.stack([image.array] * 2), spacing=image.spacing, spatial_dims=3), label)
            for image, label in (phantom(seed) for seed in range(2))
        ],
        label_names={0: "bg", 1: "ball", 2: "box"},
    )
    with pytest.raises(InputError, match="1 input channel"):
        train(two_channels, tmp_path / "other", quick_config(epochs=1, init_from=str(base.model)))
    decoder_changed = any(
        not torch.equal(value, tuned.network.state_dict()[name])
        for name, value in base.network.state_dict().items()
        if not name.startswith("encoder.")
    )
    assert decoder_changed


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    sys.path.insert(0, {testing!r})
    from training.test_train import phantom_dataset, quick_config
    from MedSegCNNLib.training.trainer import train

    result = train(phantom_dataset(), {output!r}, quick_config(epochs=1, steps_per_epoch=2))
    rank = int(__import__("os").environ["RANK"])
    weights = {{k: v.contiguous() for k, v in result.network.state_dict().items()}}
    save_file(weights, {output!r} + f"/rank{{rank}}.safetensors")
    """
)


def test_ddp_with_two_cpu_processes_keeps_ranks_identical(tmp_path):
    script = tmp_path / "ddp_train.py"
    output = tmp_path / "run"
    script.write_text(DDP_SCRIPT.format(testing=str(Path(__file__).resolve().parents[1]), output=str(output)))
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    rank1_lines = "\n".join(line for line in completed.stderr.splitlines() if line.startswith("[rank1]"))
    assert completed.returncode == 0, f"{rank1_lines[-3000:]}\n{completed.stderr[-3000:]}"
    rank0, rank1 = (load_file(output / f"rank{rank}.safetensors") for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    assert (output / "model" / "model.json").is_file()  # written once, by rank 0


@pytest.mark.parametrize("name", ["unet", "resunet", "fcn", "segnet", "deeplab"])
def test_every_architecture_trains_and_validates_in_2d(tmp_path, name):
    five_levels = name in ("fcn", "deeplab")  # these need 5 stages
    network = {"name": name, "features": [4, 8, 8, 16, 16] if five_levels else TINY_UNET["features"]}  # narrow
    if name == "unet":
        network.update(deep_supervision=True, attention=True)
    config = quick_config(
        network=network, spatial_dims=2, patch_size=(32, 32), epochs=1, steps_per_epoch=2, folds=2, fold=0
    )
    result = train(phantom_dataset(2), tmp_path / "run", config)
    assert result.status == "completed" and result.best_mean_dice is not None
    assert np.isfinite(result.history[0]["train_loss"])
    _network, card = load_model(result.model)
    assert card.network["name"] == name


class FakeClock:
    """Seconds that pass only when a test says so: each step event advances it by the step's planned time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budgeted_run(output, clock, step_seconds, *, slower_after=None, events=None, on_event=None, resume=False):
    """A 1-minute budgeted run on ``clock``: steps take ``step_seconds`` (twice that after step ``slower_after``)."""

    def advance(event: Event) -> None:
        if event.kind == "step":
            slow = slower_after is not None and event.data["step"] > slower_after
            clock.now += step_seconds * (2 if slow else 1)
        if events is not None:
            events.append(event)
        if on_event is not None:
            on_event(event)

    config = quick_config(epochs=None, steps_per_epoch=None, time_budget_minutes=1.0)
    timer = StepTimer(torch.device("cpu"), cache=False, measure=lambda *_: step_seconds)
    return train(phantom_dataset(2), output, config, on_event=advance, step_timer=timer, clock=clock, resume=resume)


def test_a_budgeted_run_fills_its_budget_and_ends_with_a_fully_decayed_schedule(tmp_path):
    clock, events = FakeClock(), []
    result = budgeted_run(tmp_path / "run", clock, 0.5, events=events)
    # 60 s budget - 10 s reserve = 50 s of 0.5 s steps
    assert result.status == "completed" and result.steps_done == 100
    steps = [event.data for event in events if event.kind == "step"]
    assert [step["total_steps"] for step in steps] == [100] * 100
    assert steps[-1]["lr"] == pytest.approx(0.0, abs=1e-12) and max(step["lr"] for step in steps) == pytest.approx(3e-3)
    assert clock.now == pytest.approx(50.0)
    start = next(event.data for event in events if event.kind == "start")
    assert start["total_steps"] == 100 and start["budget_s"] == 60.0
    training = load_model(result.model)[1].training
    assert training.plan["total_steps"] == 100 and training.plan["steps_done"] == 100
    assert training.weights == "final"


def test_a_machine_that_slows_down_is_replanned_and_the_run_still_ends_at_the_budget(tmp_path):
    clock, events = FakeClock(), []
    result = budgeted_run(tmp_path / "run", clock, 0.5, slower_after=30, events=events)
    assert result.status == "completed" and 60 < result.steps_done < 100
    assert clock.now <= 50.0 + 1.0  # the budget less its reserve, within one step
    steps = [event.data for event in events if event.kind == "step"]
    assert steps[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert steps[-1]["total_steps"] == result.steps_done < steps[0]["total_steps"]
    assert any(event.kind == "message" and "Re-planned" in event.data["text"] for event in events)


def test_a_cancelled_budgeted_run_resumes_with_its_plan_to_the_same_weights(tmp_path):
    straight = budgeted_run(tmp_path / "straight", FakeClock(), 0.5)

    def cancel_after_step_40(event: Event) -> None:
        if event.kind == "step" and event.data["step"] == 40:
            os.kill(os.getpid(), signal.SIGINT)

    interrupted = budgeted_run(tmp_path / "resumed", FakeClock(), 0.5, on_event=cancel_after_step_40)
    assert interrupted.status == "cancelled" and interrupted.steps_done == 40
    events = []
    resumed = budgeted_run(tmp_path / "resumed", FakeClock(), 0.5, events=events, resume=True)
    assert resumed.status == "completed" and resumed.steps_done == 100
    assert [event.data["step"] for event in events if event.kind == "step"] == list(range(41, 101))
    expected = load_file(straight.model / "model.safetensors")
    actual = load_file(resumed.model / "model.safetensors")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_a_budget_too_short_for_the_warmup_is_refused_with_the_minimum(tmp_path):
    config = quick_config(epochs=None, steps_per_epoch=None, time_budget_minutes=0.2)
    timer = StepTimer(torch.device("cpu"), cache=False, measure=lambda *_: 0.5)
    with pytest.raises(InputError, match=r"0.2 min is too short.*give --time-budget 1 or more"):
        train(phantom_dataset(2), tmp_path / "run", config, step_timer=timer, clock=FakeClock())


def test_checkpoints_are_written_by_time_as_well_as_by_epoch(tmp_path):
    clock, events = FakeClock(), []
    config = quick_config(epochs=1, steps_per_epoch=12, checkpoint_minutes=0.05)  # every 3 s; steps take 1 s
    timer = StepTimer(torch.device("cpu"), cache=False, measure=lambda *_: 1.0)

    def advance(event: Event) -> None:
        clock.now += 1.0 if event.kind == "step" else 0.0
        events.append(event)

    train(phantom_dataset(2), tmp_path / "run", config, on_event=advance, step_timer=timer, clock=clock)
    kinds = [event.kind for event in events if event.kind in ("step", "checkpoint")]
    # mid-epoch checkpoints after steps 3, 6, 9, then the end-of-epoch one after step 12
    assert kinds.count("checkpoint") == 4 and kinds[:8] == (["step"] * 3 + ["checkpoint"]) * 2
