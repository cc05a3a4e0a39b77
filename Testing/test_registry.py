"""The model registry: the bundled model's card, user folders (model folders, run folders, zips), name and path
resolution, corrupted models, no torch import, and a real segmentation of a sample case by the bundled model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import MedSegCNNLib as msc
from MedSegCNNLib.checkpoint import save_model, zip_model
from MedSegCNNLib.checkpoint.model_card import Licence
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import LabelInfo
from MedSegCNNLib.registry import (
    ModelEntry,
    bundled_models_folder,
    describe_model,
    find_model,
    list_models,
    resolve_model,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "Resources" / "Models" / "hippocampus-tiny"
SAMPLE = ROOT / "Resources" / "SampleData" / "Hippocampus"

CARD = {
    "title": "Liver test model",
    "description": "Two labels, 2D.",
    "network": {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3},
    "spatial_dims": 2,
    "patch_size": [16, 16],
    "channels": ["CT"],
    "labels": {
        0: {"name": "background", "color": [0, 0, 0]},
        1: {"name": "liver", "color": [1, 0, 0]},
        2: {"name": "tumour", "color": [0, 1, 0]},
    },
    "preprocessing": {
        "target_spacing": [0.8, 0.8, None],
        "crop_to_nonzero": False,
        "normalization": [{"scheme": "ct", "clip_low": -100, "clip_high": 200, "mean": 80, "std": 40}],
        "spatial_dims": 2,
    },
    "training": {
        "dataset": "Liver",
        "train_cases": ["a", "b"],
        "val_cases": ["c"],
        "validation": {"best_epoch": 3, "mean_dice": 0.75, "dice": {"1": 0.9, "2": 0.6}},
    },
}


def save_test_model(folder: Path, card: dict = CARD) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    return save_model(folder, nn.Conv2d(1, 3, 1), card)


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A user's models folder: a model folder, a training run folder, a zip, and things that are not models."""
    models = tmp_path / "my models"
    save_test_model(models / "liver")
    save_test_model(models / "run" / "model", {**CARD, "training": {"validation": None}})
    zip_model(models / "liver", models / "liver-zipped.zip")
    (models / "notes.txt").write_text("not a model")
    (models / "empty-folder").mkdir()
    return models


def test_bundled_model_card():
    entry = describe_model(BUNDLED)
    assert entry.name == "hippocampus-tiny" and entry.source == "bundled" and entry.path == BUNDLED
    assert [(label.value, label.name) for label in entry.labels] == [(1, "Anterior"), (2, "Posterior")]
    assert all(label.color is not None for label in entry.labels)
    assert entry.channels == ("MRI",) and entry.dims == 3 and entry.network == "unet"
    assert entry.spacing == (1.0, 1.0, 1.0) and len(entry.patch_size) == 3
    assert entry.dataset == "Hippocampus" and len(entry.validation_cases) == 40 and len(entry.training_cases) == 160
    assert not set(entry.validation_cases) & set(entry.training_cases)
    assert entry.mean_dice is not None and 0.8 < entry.mean_dice <= 1  # 0.869 on the 40 held-out cases
    assert set(entry.label_dice) == {1, 2}
    assert entry.mean_dice == pytest.approx(sum(entry.label_dice.values()) / 2)
    assert "tiny" in entry.title.lower() and entry.description
    weights = BUNDLED / "model.safetensors"
    assert weights.stat().st_size < 3 * 2**20
    assert sorted(p.name for p in BUNDLED.iterdir()) == ["README.md", "model.json", "model.safetensors"]


def test_bundled_model_segments_a_sample_case():
    case = "hippocampus_020"  # one of its 160 training cases: the held-out 40 are not bundled
    assert case in describe_model(BUNDLED).training_cases
    image = msc.read_image(SAMPLE / "imagesTr" / f"{case}.nii.gz")
    torch.manual_seed(0)
    result = msc.segment(image, resolve_model("hippocampus-tiny"), msc.PredictOptions(device="cpu"))
    assert result.labels.array.shape == image.array.shape and result.labels.spacing == image.spacing
    assert [label.name for label in result.labels.labels if label.value] == ["Anterior", "Posterior"]
    evaluation = msc.evaluate(result.labels, SAMPLE / "labelsTr" / f"{case}.nii.gz", surface=False, case=case)
    dice = {row["label"]: row["dice"] for row in evaluation.to_rows()}
    assert set(dice) == {1, 2}
    assert dice[1] >= 0.8 and dice[2] >= 0.8, dice


def test_list_models_finds_bundled_and_user_models(user_folder, caplog):
    (user_folder / "broken").mkdir()
    (user_folder / "broken" / "model.json").write_text("{not json")
    save_test_model(user_folder / "no-weights")
    (user_folder / "no-weights" / "model.safetensors").unlink()
    (user_folder / "junk.zip").write_bytes(b"not a zip")
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        entries = list_models([user_folder])
    names = [(entry.name, entry.source) for entry in entries]
    assert names[0] == ("hippocampus-tiny", "bundled")
    assert names[1:] == [("liver", "user"), ("liver-zipped", "user"), ("run", "user")]
    assert {"broken", "no-weights", "junk.zip"} == {
        name for name in ("broken", "no-weights", "junk.zip") if f"{user_folder / name}" in caplog.text
    }
    run = next(entry for entry in entries if entry.name == "run")
    assert run.path == user_folder / "run" / "model" and run.mean_dice is None and run.label_dice == {}
    assert [entry.name for entry in list_models()] == ["hippocampus-tiny"]


def test_describe_reads_folders_cards_and_zips_alike(user_folder):
    folder = describe_model(user_folder / "liver")
    assert folder.source == "folder" and folder.title == "Liver test model" and folder.description == "Two labels, 2D."
    assert [(label.value, label.name, label.color) for label in folder.labels] == [
        (1, "liver", (1.0, 0.0, 0.0)),
        (2, "tumour", (0.0, 1.0, 0.0)),
    ]
    assert folder.spacing == (0.8, 0.8, None) and folder.patch_size == (16, 16) and folder.dims == 2
    assert folder.mean_dice == 0.75 and folder.label_dice == {1: 0.9, 2: 0.6}
    assert folder.channels == ("CT",) and folder.training_cases == ("a", "b") and folder.validation_cases == ("c",)
    assert folder.library_version == msc.__version__
    card = describe_model(user_folder / "liver" / "model.json")
    archive = describe_model(user_folder / "liver-zipped.zip")
    assert archive.name == "liver-zipped" and archive.path == user_folder / "liver-zipped.zip"
    for other in (card, archive):
        assert other.to_dict() | {"name": "", "path": ""} == folder.to_dict() | {"name": "", "path": ""}
    data = json.loads(json.dumps(folder.to_dict()))
    assert data["labels"][1] == {"value": 2, "name": "tumour", "color": [0.0, 1.0, 0.0]}
    assert data["spacing"] == [0.8, 0.8, None] and data["label_dice"] == {"1": 0.9, "2": 0.6}
    text = folder.summary()
    for fragment in ("Liver test model", "1 liver, 2 tumour", "Modality: CT", "0.8 x 0.8 x native mm", "0.750"):
        assert fragment in text
    assert "tumour 0.600" in text and "1 case(s) held out" in text


def test_resolve_by_name_or_path(user_folder, monkeypatch):
    assert resolve_model("hippocampus-tiny") == BUNDLED
    assert resolve_model("liver", [user_folder]) == user_folder / "liver"
    assert resolve_model("run", [user_folder]) == user_folder / "run" / "model"
    assert resolve_model(user_folder / "liver-zipped.zip") == user_folder / "liver-zipped.zip"
    assert resolve_model(str(user_folder / "run")) == user_folder / "run" / "model"
    monkeypatch.chdir(user_folder)
    assert resolve_model("liver") == Path("liver")  # an existing path wins over the registry
    assert find_model("liver").source == "folder"


def test_resolve_refuses_unknown_ambiguous_and_missing(user_folder, tmp_path):
    with pytest.raises(InputError, match=r"No model named 'hipocampus'.*hippocampus-tiny, liver, liver-zipped, run"):
        resolve_model("hipocampus", [user_folder])
    second = tmp_path / "more"
    save_test_model(second / "liver")
    with pytest.raises(InputError, match="Several models are named 'liver'"):
        resolve_model("liver", [user_folder, second])
    with pytest.raises(InputError, match="does not exist"):
        resolve_model("models/missing")
    with pytest.raises(InputError, match="No model given"):
        resolve_model("  ")
    with pytest.raises(InputError, match="is not a folder"):
        list_models([tmp_path / "nowhere"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda card: card.pop("labels"), "the required field labels is missing"),
        (lambda card: card.update(spatial_dims=3), "network.spatial_dims must be 3, not 2"),
        (lambda card: card["training"].update(val_cases="c"), 'training.val_cases must be a list .* not "c"'),
        (lambda card: card.update(format_version=99), "upgrade MedSegCNN"),
        (lambda card: card.update(format="other"), "is not a MedSegCNN model card"),
        (lambda card: card["weights"].update(file="../x.safetensors"), "no valid weights file"),
    ],
)
def test_describe_refuses_corrupted_cards(tmp_path, change, message):
    folder = save_test_model(tmp_path / "model")
    card = json.loads((folder / "model.json").read_text())
    change(card)
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match=message):
        describe_model(folder)
    assert list_models([tmp_path]) == [describe_model(BUNDLED)]  # skipped in listings


def test_describe_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match=r"is a PyTorch/pickle file.*never unpickles"):
        describe_model(tmp_path / "weights.pt")
    with pytest.raises(InputError, match=r"holds no model\.json"):
        describe_model(tmp_path)
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"not a readable model \.zip"):
        describe_model(tmp_path / "bad.zip")


def test_entries_compare_by_value():
    assert describe_model(BUNDLED) == describe_model(BUNDLED)
    assert isinstance(describe_model(BUNDLED), ModelEntry)
    assert bundled_models_folder() == BUNDLED.parent


def test_importing_the_registry_does_not_import_torch():
    code = (
        "import sys; from MedSegCNNLib.registry import list_models; list_models(); "
        "print(sorted(m for m in ('torch', 'slicer') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_describe_refuses_models_without_their_weights(tmp_path):
    folder = save_test_model(tmp_path / "model")
    zip_model(folder, tmp_path / "model.zip")
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match=r"weights file model\.safetensors .* is missing"):
        describe_model(folder)
    with zipfile.ZipFile(tmp_path / "model.zip") as archive, zipfile.ZipFile(tmp_path / "card-only.zip", "w") as copy:
        copy.writestr("model/model.json", archive.read("model/model.json"))
    assert describe_model(tmp_path / "model.zip").name == "model"
    with pytest.raises(InputError, match=r"weights file model\.safetensors .* is missing"):
        describe_model(tmp_path / "card-only.zip")


def test_model_card_html_shows_labels_channels_spacing_and_accuracy():
    entry = ModelEntry(
        name="tiny",
        path=Path("/models/tiny"),
        source="bundled",
        title="Tiny <hippocampus>",
        description="",
        network="unet",
        dims=3,
        channels=("MRI", "T2"),
        labels=(LabelInfo(1, "Anterior", (1.0, 0.0, 0.5)), LabelInfo(2, "Posterior")),
        spacing=(1.0, 1.0, 1.5),
        patch_size=(32, 48, 32),
        mean_dice=0.81234,
        label_dice={1: 0.8, 2: 0.82468},
        validation_cases=("a", "b"),
    )
    card = entry.summary_html()
    assert "Tiny &lt;hippocampus&gt;" in card and "<hippocampus>" not in card  # escaped
    assert "#ff0080" in card and "Anterior (1)" in card and "#808080" in card and "Posterior (2)" in card
    assert "MRI, T2" in card and "About" not in card
    assert "1 x 1 x 1.5 mm (x, y, z)" in card
    assert "unet 3D, patch 32 x 48 x 32" in card
    assert "validation mean Dice 0.812 (Anterior 0.800, Posterior 0.825) on 2 held-out case(s)" in card
    assert "bundled: /models/tiny" in card or "bundled: \\models\\tiny" in card
    assert "<b>Licence</b>&nbsp;</td><td>unknown (the card names none;" in card
    licensed = replace(entry, licence=Licence("CC-BY-NC-SA-4.0", "Non-commercial <only>"))
    assert "CC-BY-NC-SA-4.0 (Non-commercial &lt;only&gt;)" in licensed.summary_html()
    untrained = replace(entry, mean_dice=None, label_dice={}, spacing=(None, 0.8, 0.8), description="A & B")
    html = untrained.summary_html()
    assert "none reported" in html and "native x 0.8 x 0.8 mm" in html and "A &amp; B" in html
