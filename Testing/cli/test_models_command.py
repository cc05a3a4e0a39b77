"""``medsegcnn models``: the table, --json, --folder and one model's card, through a minimal argparse harness
(the command is called as ``cli/main.py`` calls every command: ``add_parser`` then ``args.run(args)``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from MedSegCNNLib.checkpoint import save_model
from MedSegCNNLib.cli import models_command
from MedSegCNNLib.errors import InputError

BUNDLED = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "hippocampus-tiny"
CARD = {
    "network": {"name": "fcn", "spatial_dims": 3, "in_channels": 2, "out_channels": 2},
    "spatial_dims": 3,
    "patch_size": [8, 8, 8],
    "channels": ["T1", "FLAIR"],
    "labels": {"0": {"name": "background"}, "1": {"name": "lesion", "color": [1, 1, 0]}},
    "preprocessing": {
        "target_spacing": None,
        "crop_to_nonzero": True,
        "normalization": [{"scheme": "zscore"}, {"scheme": "zscore"}],
        "spatial_dims": 3,
    },
    "licence": {"spdx": "CC-BY-NC-4.0", "text": "Non-commercial research only."},
}


def models(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="medsegcnn")
    models_command.add_parser(parser.add_subparsers(dest="command", required=True), [])
    args = parser.parse_args(["models", *map(str, argv)])
    return args.run(args)


@pytest.fixture
def user_folder(tmp_path) -> Path:
    torch.manual_seed(0)
    save_model(tmp_path / "lesions", nn.Conv3d(2, 2, 1), CARD)
    return tmp_path


def test_table_lists_the_bundled_model(capsys):
    assert models() == 0
    out = capsys.readouterr().out
    header, rule, row = out.splitlines()[:3]
    assert header.split()[:3] == ["Name", "Title", "Source"] and set(rule) == {"-", " "}
    assert row.startswith("hippocampus-tiny")
    for fragment in ("bundled", "3D", "MRI", "Anterior, Posterior", "1 x 1 x 1 mm"):
        assert fragment in row
    dice = describe_dice()
    assert f"{dice:.3f}" in row


def describe_dice() -> float:
    return json.loads((BUNDLED / "model.json").read_text())["training"]["validation"]["mean_dice"]


def test_json_with_user_folder(capsys, user_folder):
    assert models("--json", "--folder", user_folder) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [(m["name"], m["source"]) for m in listed] == [("hippocampus-tiny", "bundled"), ("lesions", "user")]
    lesions = listed[1]
    assert lesions["channels"] == ["T1", "FLAIR"] and lesions["spacing"] is None and lesions["mean_dice"] is None
    assert lesions["labels"] == [{"value": 1, "name": "lesion", "color": [1.0, 1.0, 0.0]}]
    assert listed[0]["mean_dice"] == pytest.approx(describe_dice())


def test_one_model_card_by_name_or_path(capsys, user_folder):
    assert models("hippocampus-tiny") == 0
    text = capsys.readouterr().out
    assert "Labels: 1 Anterior, 2 Posterior" in text and "Modality: MRI" in text and "validation mean Dice" in text
    assert models("lesions", "--folder", user_folder, "--json") == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(user_folder / "lesions")
    assert models(user_folder / "lesions") == 0
    text = capsys.readouterr().out
    assert "Spacing: native (x, y, z)" in text and "Reported accuracy: none" in text


def test_the_licence_is_shown_in_the_table_the_card_and_json(capsys, user_folder):
    assert models("--folder", user_folder) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:4]}
    assert rows["lesions"].rstrip().endswith("CC-BY-NC-4.0") and rows["hippocampus-tiny"].rstrip().endswith("unknown")
    assert models(user_folder / "lesions") == 0
    assert "Licence: CC-BY-NC-4.0 (Non-commercial research only.)" in capsys.readouterr().out
    assert models("hippocampus-tiny") == 0
    assert "Licence: unknown (the card names none; check the terms of the model's source" in capsys.readouterr().out
    assert models(user_folder / "lesions", "--json") == 0
    licence = json.loads(capsys.readouterr().out)["licence"]
    assert licence == {"spdx": "CC-BY-NC-4.0", "text": "Non-commercial research only."}


def test_bad_names_and_folders_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"No model named 'nope'.*hippocampus-tiny"):
        models("nope")
    with pytest.raises(InputError, match="is not a folder"):
        models("--folder", tmp_path / "missing")
