"""TrainingConfig validation/serialisation and cross-validation splits."""

from __future__ import annotations

import json

import pytest

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.training.config import TrainingConfig
from MedSegCNNLib.training.splits import load_or_create_splits, make_splits


def test_config_round_trip_through_json():
    config = TrainingConfig(epochs=3, patch_size=(16, 32, 32), network={"name": "unet", "features": [4, 8]})
    data = json.loads(json.dumps(config.to_dict()))
    assert TrainingConfig.from_dict(data) == config
    assert data["patch_size"] == [16, 32, 32] and data["spatial_dims"] is None  # planned from the data
    masks = TrainingConfig(patch_size=(64, 64), mask_values=(0, 128, 255))
    data = json.loads(json.dumps(masks.to_dict()))
    assert data["mask_values"] == [0, 128, 255] and TrainingConfig.from_dict(data) == masks


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"spatial_dims": 3, "patch_size": (16, 16)}, r"patch_size \(--patch-size\) must be 3 whole numbers >= 1"),
        ({"patch_size": (16,)}, "must be 2 or 3 whole numbers >= 1"),
        ({"patch_size": (16.5, 16, 16)}, "must be 3 whole numbers >= 1"),
        ({"patch_size": 16}, "must be 2 or 3 whole numbers"),
        ({"batch_size": "x"}, r"batch_size \(--batch-size\) must be a whole number >= 1, got 'x'"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"mask_values": (255,)}, "mask_values must list at least two distinct"),
        ({"mask_values": (0, 255, 255)}, "mask_values"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"fold": 5}, "fold"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"precision": "fp8"}, "precision"),
        ({"network": {"features": [4]}}, "name"),
    ],
)
def test_bad_config_values(changes, message):
    with pytest.raises(InputError, match=message):
        TrainingConfig(**changes)


def test_unknown_config_keys_are_refused():
    with pytest.raises(InputError, match=r"Unknown field\(s\) in the training configuration: epoch"):
        TrainingConfig.from_dict({"epoch": 3})


def test_splits_partition_the_cases():
    names = [f"case_{i}" for i in range(11)]
    splits = make_splits(names, 5, seed=1)
    validation = [name for split in splits for name in split["val"]]
    assert sorted(validation) == sorted(names)  # each case validated exactly once
    assert {len(split["val"]) for split in splits} <= {2, 3}
    for split in splits:
        assert set(split["train"]) | set(split["val"]) == set(names) and not set(split["train"]) & set(split["val"])
    assert make_splits(names, 5, seed=1) == splits and make_splits(names, 5, seed=2) != splits


def test_splits_are_saved_and_reused(tmp_path):
    path = tmp_path / "splits.json"
    names = [f"c{i}" for i in range(6)]
    first = load_or_create_splits(path, names, 3, seed=0)
    custom = [{"train": names[2:], "val": names[:2]}, {"train": names[:4], "val": names[4:]}, first[2]]
    path.write_text(json.dumps(custom))
    assert load_or_create_splits(path, names, 3, seed=0) == custom  # an existing file wins
    with pytest.raises(InputError, match="does not match the dataset"):
        load_or_create_splits(path, [*names, "new_case"], 3)
    with pytest.raises(InputError, match="folds"):
        load_or_create_splits(path, names, 4)
    with pytest.raises(InputError, match="at least 5 cases"):
        make_splits(names[:3], 5)


def test_mask_values_and_dims_on_the_command_line(capsys):
    from MedSegCNNLib.cli.main import build_parser
    from MedSegCNNLib.training.arguments import build_config, config_arguments

    parser = build_parser()
    parsed = parser.parse_args(["train", "--data", "d", "--output", "o", "--mask-values", "0,128,255"])
    config = build_config(parsed)
    assert config.mask_values == (0, 128, 255) and config.spatial_dims is None  # planned from the data
    assert config_arguments(config) == ["--mask-values", "0,128,255"]
    assert build_config(parser.parse_args(["plan", "--data", "d", "--dims", "2"])).spatial_dims == 2
    for bad in ("255", "0,x", "0,255,0"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--data", "d", "--output", "o", "--mask-values", bad])
    assert "expected" in capsys.readouterr().err


def test_command_line_choices_are_the_registered_networks_and_losses():
    from MedSegCNNLib.losses import LOSS_NAMES
    from MedSegCNNLib.networks import NETWORK_NAMES
    from MedSegCNNLib.training.arguments import LOSS_CHOICES, NETWORK_CHOICES

    assert sorted(NETWORK_CHOICES) == sorted(NETWORK_NAMES)
    assert sorted(LOSS_CHOICES) == sorted(LOSS_NAMES)


def test_the_licence_option_is_kept_in_the_config_and_checked():
    from MedSegCNNLib.cli.main import build_parser
    from MedSegCNNLib.training.arguments import build_config, config_arguments

    parsed = build_parser().parse_args(["train", "--data", "d", "--output", "o", "--licence", "CC-BY-4.0"])
    config = build_config(parsed)
    assert config.licence == "CC-BY-4.0" and config_arguments(config) == ["--licence", "CC-BY-4.0"]
    with pytest.raises(InputError, match=r"^--licence must be an SPDX identifier"):
        TrainingConfig(licence="terms\x07")
