"""The typed model card: exact round trip of the bundled card, one exact refusal per malformed field, unknown
top-level keys (warned about and kept), read-only values, size bounds (and their override) and streamed ``.zip``
reading that keeps nothing after a refusal."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from model_support import declare_member_size
from torch import nn

from MedSegCNNLib.checkpoint import ModelCard, load_model, model_archive, read_model_card, save_model, zip_model
from MedSegCNNLib.checkpoint import model_card as model_card_module
from MedSegCNNLib.checkpoint.model_card import Licence, TrainingRecord
from MedSegCNNLib.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "Resources" / "Models" / "hippocampus-tiny"
RAW = json.loads((BUNDLED / "model.json").read_text())
FIX = "; fix the card or use another model."


def edited(edit: Callable[[dict], object]) -> dict:
    card = copy.deepcopy(RAW)
    edit(card)
    return card


def top(key: str, value: object) -> Callable[[dict], object]:
    return lambda card: card.__setitem__(key, value)


def inside(section: str, key: str, value: object) -> Callable[[dict], object]:
    return lambda card: card[section].__setitem__(key, value)


def model_copy(folder: Path, edit: Callable[[dict], object] | None = None) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(BUNDLED / "model.safetensors", folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps(edited(edit or (lambda card: None))))
    return folder


def temporary_model_folders() -> set[str]:
    return {entry.name for entry in Path(tempfile.gettempdir()).glob("medsegcnn-model-*")}


def test_the_bundled_card_round_trips_byte_for_byte():
    card = ModelCard.from_dict(RAW, BUNDLED / "model.json")
    assert card.to_dict() == RAW
    assert json.dumps(card.to_dict(), indent=2) + "\n" == (BUNDLED / "model.json").read_text()
    assert read_model_card(BUNDLED) == card and read_model_card(BUNDLED / "model.json") == card
    assert card.patch_size == (40, 56, 40) and card.channels == ("MRI",) and card.spatial_dims == 3
    assert [label.name for label in card.labels] == ["background", "Anterior", "Posterior"]
    assert [label.value for label in card.foreground_labels] == [1, 2]
    assert card.preprocessing.target_spacing == (1.0, 1.0, 1.0) and card.weights.file == "model.safetensors"
    assert card.extra == {}


def test_the_card_is_read_only_and_gives_plain_copies():
    card = read_model_card(BUNDLED)
    with pytest.raises(TypeError):
        card.network["features"] = [1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.patch_size = (8, 8, 8)
    config = card.network_config()
    config["features"].append(128)
    assert card.network["features"] == (8, 16, 32, 64) and config["features"] == [8, 16, 32, 64, 128]
    assert card.to_dict()["network"]["features"] == [8, 16, 32, 64]


MALFORMED = {
    "string patch_size": (
        top("patch_size", "40,56,40"),
        'patch_size must be a list of 3 integers in 1..65536 (spatial_dims is 3), not "40,56,40"',
    ),
    "patch_size of 2 axes": (
        top("patch_size", [40, 56]),
        "patch_size must be a list of 3 integers in 1..65536 (spatial_dims is 3), not [40, 56]",
    ),
    "boolean patch size": (top("patch_size", [40, 56, True]), "patch_size must be an integer in 1..65536, not true"),
    "patch side beyond range": (
        top("patch_size", [10**6, 56, 40]),
        "patch_size must be an integer in 1..65536, not 1000000",
    ),
    "window of 2**48 voxels": (
        top("patch_size", [65536] * 3),
        "patch_size must be at most 1,099,511,627,776 voxels in all, not [65536, 65536, 65536]",
    ),
    "missing preprocessing": (lambda card: card.pop("preprocessing"), "the required field preprocessing is missing"),
    "missing network and labels": (
        lambda card: [card.pop("network"), card.pop("labels")],
        "the required fields network, labels are missing",
    ),
    "missing library_version": (
        lambda card: card.pop("library_version"),
        "the required field library_version is missing",
    ),
    "labels as a list": (
        lambda card: card.__setitem__("labels", list(card["labels"].values())),
        'labels must be an object mapping "0", "1", ... (2 to 32768 consecutive label values) to labels, not '
        '[{"name": "background", "color": [0.0, 0.0, 0.0]}, {"name...',
    ),
    "label values with a gap": (
        lambda card: card["labels"].__setitem__("3", card["labels"].pop("2")),
        'labels must be an object mapping "0", "1", ... (2 to 32768 consecutive label values) to labels (keys 0 .. '
        'K-1), not ["0", "1", "3"]',
    ),
    "empty label name": (
        lambda card: card["labels"]["1"].__setitem__("name", ""),
        'labels["1"].name must be a non-empty string, not ""',
    ),
    "colour in 0..255": (
        lambda card: card["labels"]["1"].__setitem__("color", [255, 0, 0]),
        'labels["1"].color must be null or three numbers in [0, 1], not [255, 0, 0]',
    ),
    "unknown label key": (
        lambda card: card["labels"]["2"].__setitem__("value", 2),
        'labels["2"] must be an object with "name" and "color", not {"name": "Posterior", "color": '
        "[1.0, 0.4980392156862745, ...",
    ),
    "network as a list": (
        top("network", ["unet"]),
        'network must be an object (the network configuration), not ["unet"]',
    ),
    "network without in_channels": (
        lambda card: card["network"].pop("in_channels"),
        "the required field network.in_channels is missing",
    ),
    "negative features": (
        inside("network", "features", [-8, 16, 32, 64]),
        "network.features must be an integer in 1..65536, not -8",
    ),
    "features beyond range": (
        inside("network", "features", [8, 16, 32, 10**9]),
        "network.features must be an integer in 1..65536, not 1000000000",
    ),
    "features as a string": (
        inside("network", "features", "8,16,32,64"),
        'network.features must be a list of 1 to 16 integers, not "8,16,32,64"',
    ),
    "absurd blocks_per_level": (
        inside("network", "blocks_per_level", 10**8),
        "network.blocks_per_level must be an integer in 1..64, not 100000000",
    ),
    "absurd out_channels": (
        inside("network", "out_channels", 10**6),
        "network.out_channels must be 3 (one per label), not 1000000",
    ),
    "in_channels not matching channels": (
        inside("network", "in_channels", 2),
        "network.in_channels must be 1 (one per entry of channels), not 2",
    ),
    "spatial_dims 4": (top("spatial_dims", 4), "spatial_dims must be 2 or 3, not 4"),
    "no channels": (top("channels", []), "channels must be a list of 1 to 256 non-empty strings, not []"),
    "a number as a channel": (
        top("channels", ["MRI", 3]),
        'channels must be a list of 1 to 256 non-empty strings, not ["MRI", 3]',
    ),
    "normalisation per channel": (
        inside("preprocessing", "normalization", []),
        "preprocessing.normalization must be a list with one entry per channel (1), not []",
    ),
    "negative spacing": (
        inside("preprocessing", "target_spacing", [1.0, -1.0, 1.0]),
        "preprocessing.target_spacing must be null or 2 or 3 positive numbers (or nulls), not [1.0, -1.0, 1.0]",
    ),
    "crop_to_nonzero as a string": (
        inside("preprocessing", "crop_to_nonzero", "no"),
        'preprocessing.crop_to_nonzero must be true or false, not "no"',
    ),
    "preprocessing for 2D": (inside("preprocessing", "spatial_dims", 2), "preprocessing.spatial_dims must be 3, not 2"),
    "unknown normalisation": (
        inside("preprocessing", "normalization", [{"scheme": "minmax"}]),
        "preprocessing: Unknown normalisation 'minmax'; use one of ct, zscore, none",
    ),
    "training as a list": (top("training", []), "training must be an object, not []"),
    "val_cases as a string": (
        inside("training", "val_cases", "a,b"),
        'training.val_cases must be a list of non-empty strings, not "a,b"',
    ),
    "mean Dice as text": (
        lambda card: card["training"]["validation"].__setitem__("mean_dice", "high"),
        'training.validation.mean_dice must be a number, not "high"',
    ),
    "epochs done as text": (
        inside("training", "epochs_done", "14"),
        'training.epochs_done must be an integer >= 0, not "14"',
    ),
    "folds as a float": (inside("training", "folds", 5.0), "training.folds must be an integer >= 2, not 5.0"),
    "plan as a list": (inside("training", "plan", [1]), "training.plan must be an object, not [1]"),
    "Dice of a label name": (
        lambda card: card["training"]["validation"].__setitem__("dice", {"Anterior": 0.8}),
        'training.validation.dice must be an object mapping label values to numbers, not {"Anterior": 0.8}',
    ),
    "licence as a string": (top("licence", "MIT"), 'licence must be an object, not "MIT"'),
    "SPDX identifier with a semicolon": (
        top("licence", {"spdx": "MIT; rm -rf"}),
        'licence.spdx must be an SPDX licence identifier or expression (up to 200 characters), not "MIT; rm -rf"',
    ),
    "licence text with a control character": (
        top("licence", {"text": "free\x1b[2J"}),
        'licence.text must be text of up to 4,000 characters without control characters, not "free\\u001b[2J"',
    ),
    "licence text too long": (
        top("licence", {"text": "x" * 4001}),
        'licence.text must be text of up to 4,000 characters without control characters, not "' + "x" * 56 + "...",
    ),
    "title as a number": (top("title", 5), "title must be a string, not 5"),
    "created as prose": (top("created", "yesterday"), 'created must be an ISO 8601 date and time, not "yesterday"'),
    "extra weights entry": (
        inside("weights", "size", 3),
        'weights must be an object with only "file" and "sha256", not {"file": "model.safetensors", "sha256": '
        '"5b66f1d8e969e84d...',
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_each_malformed_field_is_refused_with_one_line_naming_it(tmp_path, case):
    edit, problem = MALFORMED[case]
    with pytest.raises(InputError) as refused:
        ModelCard.from_dict(edited(edit), "models/x/model.json")
    assert str(refused.value) == f"Invalid model card models/x/model.json: {problem}{FIX}"
    folder = model_copy(tmp_path / "model", edit)  # the same through the file reader, naming the file
    with pytest.raises(InputError) as refused:
        read_model_card(folder)
    assert str(refused.value) == f"Invalid model card {folder / 'model.json'}: {problem}{FIX}"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda card: [card], 'x.json is not a MedSegCNN model card (no "format": "medsegcnn-model").'),
        (top("format", "other"), 'x.json is not a MedSegCNN model card (no "format": "medsegcnn-model").'),
        (top("format_version", "1"), "x.json has an invalid format_version '1' (corrupted?)."),
        (
            top("format_version", 2),
            "x.json was written by a newer MedSegCNN (model format 2; this is 0.1.0, which reads format 1); upgrade "
            "MedSegCNN.",
        ),
        (
            inside("weights", "file", "../x.safetensors"),
            "x.json names no valid weights file (a .safetensors file beside the card); corrupted?",
        ),
        (inside("weights", "sha256", "abc"), "x.json has no valid SHA-256 for its weights (corrupted?)."),
    ],
)
def test_format_and_weights_problems(edit, message):
    card = copy.deepcopy(RAW)
    data = edit(card) or card  # an edit may give other data instead of changing the card
    with pytest.raises(InputError) as refused:
        ModelCard.from_dict(data, "x.json")
    assert str(refused.value) == message


def test_unknown_top_level_keys_are_reported_kept_and_saved_again(tmp_path, caplog):
    folder = model_copy(tmp_path / "model", lambda card: card.update(licence_url="https://example.org", zz=[1]))
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        card = read_model_card(folder)
    assert caplog.messages == [
        f"The model card {folder / 'model.json'} has unknown field(s) licence_url, zz (written by a newer "
        "MedSegCNN?); they are kept but not used."
    ]
    assert card.extra == {"licence_url": "https://example.org", "zz": (1,)}
    assert card.to_dict()["licence_url"] == "https://example.org" and card.to_dict()["zz"] == [1]
    network, _ = load_model(folder)
    saved = save_model(tmp_path / "again", network, card)
    assert json.loads((saved / "model.json").read_text())["zz"] == [1]


def test_unknown_training_keys_are_reported_and_not_used(tmp_path, caplog):
    """A newer MedSegCNN may record more about training: such a card still loads, with one warning per section."""

    def add_keys(card: dict) -> None:
        card["training"]["notes"] = "x"
        card["training"]["validation"]["hd95"] = 3.0

    folder = model_copy(tmp_path / "model", add_keys)
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        card = read_model_card(folder)
    where = folder / "model.json"
    assert caplog.messages == [
        f"The model card {where} has unknown field(s) notes in its training section (written by a newer "
        "MedSegCNN?); they are not used.",
        f"The model card {where} has unknown field(s) hd95 in its training.validation section (written by a newer "
        "MedSegCNN?); they are not used.",
    ]
    assert "notes" not in card.to_dict()["training"] and card.training.validation.mean_dice == RAW["training"][
        "validation"]["mean_dice"]  # fmt: skip


def test_new_cards_take_python_values_and_drop_the_saved_fields():
    card = ModelCard.new(
        {
            **RAW,
            "patch_size": (np.int64(40), 56, 40),
            "labels": {int(value): label for value, label in RAW["labels"].items()},
            "training": {"validation": {"mean_dice": np.float32(0.5), "best_mean_dice": float("inf")}},
        }
    )
    assert card.patch_size == (40, 56, 40) and card.training.validation.mean_dice == 0.5
    assert card.to_dict()["training"]["validation"]["best_mean_dice"] == "inf"
    assert card.weights is None and card.library_version is None and card.created is None
    assert "weights" not in card.to_dict() and "created" not in card.to_dict()
    with pytest.raises(InputError, match=r"^Invalid model card being saved: the required field labels is missing"):
        ModelCard.new({key: value for key, value in RAW.items() if key != "labels"})


def test_save_model_refuses_an_invalid_card_and_writes_nothing(tmp_path):
    card = edited(top("patch_size", "40,56,40"))
    with pytest.raises(InputError, match=r"^Invalid model card being saved: patch_size must be a list"):
        save_model(tmp_path / "model", nn.Conv3d(1, 3, 1), card)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            top("patch_size", [41, 56, 40]),
            "patch_size [41, 56, 40] does not fit its network: The unet's input spatial size must be a multiple of "
            "(8, 8, 8) per axis; got (41, 56, 40). Pad to a multiple of (8, 8, 8) (e.g. (48, 56, 40))",
        ),
        (inside("network", "kernel_sizes", 4), "network: unet option 'kernel_sizes' must be odd (3, 5, 1, ...); got 4"),
        (inside("network", "name", "transformer"), "network: Unknown network name 'transformer'; choose one of "
         "['unet', 'resunet', 'fcn', 'segnet', 'deeplab']"),
    ],
)  # fmt: skip
def test_networks_the_card_cannot_describe_are_refused_before_any_weights_are_read(tmp_path, edit, problem):
    folder = model_copy(tmp_path / "model", edit)
    (folder / "model.safetensors").write_bytes(b"never read")
    with pytest.raises(InputError) as refused:
        load_model(folder)
    assert str(refused.value) == f"Invalid model card {folder / 'model.json'}: {problem}{FIX}"


@pytest.mark.parametrize(
    ("edit", "need"),
    [
        (
            inside("network", "features", [65536] * 4),
            "its network has 1,958,508,888,067 parameters (limit 268,435,456)",
        ),
        (
            top("patch_size", [4096, 4096, 4096]),
            "one 4096 x 4096 x 4096 window needs 25,088.0 GiB of feature maps (limit 16.0 GiB)",
        ),
    ],
)
def test_absurd_networks_are_refused_quickly_without_allocating(tmp_path, edit, need):
    folder = model_copy(tmp_path / "model", edit)
    started = time.monotonic()
    with pytest.raises(InputError) as refused:
        load_model(folder)
    assert time.monotonic() - started < 5
    assert str(refused.value) == (
        f"The model {folder} is too large to load safely: {need}; if you trust it and have the memory, pass "
        "--allow-large-model (allow_large=True in Python)."
    )


def test_allow_large_lifts_the_bounds(monkeypatch):
    monkeypatch.setattr(model_card_module, "MAX_PARAMETERS", 1000)
    with pytest.raises(InputError, match=r"its network has 3\d\d,\d\d\d parameters \(limit 1,000\)"):
        load_model(BUNDLED)
    monkeypatch.setattr(model_card_module, "MAX_PARAMETERS", 10**9)
    monkeypatch.setattr(model_card_module, "MAX_WINDOW_FEATURE_BYTES", 2**20)
    with pytest.raises(InputError, match=r"one 40 x 56 x 40 window needs 0\.0 GiB of feature maps \(limit 0\.0 GiB\)"):
        load_model(BUNDLED)
    network, card = load_model(BUNDLED, allow_large=True)
    assert card == read_model_card(BUNDLED) and not network.training


def test_a_zip_model_is_inflated_streaming_and_its_temporary_copy_removed(tmp_path):
    archive = zip_model(BUNDLED, tmp_path / "model.zip")
    before = temporary_model_folders()
    _network, card = load_model(archive)
    assert card == read_model_card(BUNDLED)
    assert temporary_model_folders() == before


@pytest.mark.parametrize(
    ("member", "size", "message"),
    [
        (
            "hippocampus-tiny/model.safetensors",
            1000,
            "{zip} is damaged; cannot extract hippocampus-tiny/model.safetensors: Bad CRC-32 for file "
            "'hippocampus-tiny/model.safetensors'",
        ),
        (
            "hippocampus-tiny/model.json",
            2**31,
            "The model card in {zip} is implausibly large (2,147,483,648 bytes); not read.",
        ),
    ],
)
def test_zip_members_whose_declared_size_lies_are_refused(tmp_path, member, size, message):
    archive = declare_member_size(zip_model(BUNDLED, tmp_path / "model.zip"), member, size)
    before = temporary_model_folders()
    with pytest.raises(InputError) as refused:
        load_model(archive)
    assert str(refused.value) == message.replace("{zip}", str(archive))
    assert temporary_model_folders() == before


def test_a_zip_bomb_never_reaches_the_disk(tmp_path, monkeypatch):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        opened.write(BUNDLED / "model.json", "model/model.json")
        opened.writestr("model/model.safetensors", b"\0" * 2_000_000, compress_type=zipfile.ZIP_DEFLATED)

    def no_scratch(*args, **kwargs):
        raise AssertionError("a temporary folder was made for a refused member")

    monkeypatch.setattr(model_archive.tempfile, "TemporaryDirectory", no_scratch)
    with pytest.raises(InputError, match=r"compressed [\d,]+ to 1 \(a zip bomb\?\); it is not opened"):
        load_model(archive)


def test_an_updated_card_is_validated_and_saved_again(tmp_path):
    """As the trainer does for an early-stopped run: the best model saved again with another epoch count."""
    network, card = load_model(BUNDLED)
    updated = card.updated(training={**card.to_dict()["training"], "epochs_done": 99})
    assert updated.training.epochs_done == 99 and card.training.epochs_done == 14
    saved = read_model_card(save_model(tmp_path / "model", network, updated))
    assert saved.training.epochs_done == 99 and saved.weights.sha256 == card.weights.sha256
    assert dataclasses.replace(saved, training=card.training, created=card.created, library_version="0.1.0") == card
    with pytest.raises(InputError, match=r"training\.val_cases must be a list of non-empty strings"):
        card.updated(training={"val_cases": [1]})


def test_a_licence_and_an_imported_models_training_record_survive_saving(tmp_path):
    network, card = load_model(BUNDLED)
    imported = {
        "dataset": "Liver",
        "source": "nnU-Net v2",
        "trainer": "nnUNetTrainer",
        "plans": None,
        "configuration": "3d_fullres",
        "folds": ["0", "1"],
        "checkpoint": "final",
    }
    updated = card.updated(training=imported, licence={"spdx": "CC-BY-NC-SA-4.0", "text": "Non-commercial use."})
    saved = read_model_card(save_model(tmp_path / "model", network, updated))
    assert saved.licence == Licence("CC-BY-NC-SA-4.0", "Non-commercial use.")
    assert saved.licence.describe() == "CC-BY-NC-SA-4.0 (Non-commercial use.)"
    assert saved.training == TrainingRecord(
        dataset="Liver",
        source="nnU-Net v2",
        trainer="nnUNetTrainer",
        configuration="3d_fullres",
        folds=("0", "1"),
        checkpoint="final",
    )
    assert card.licence is None and card.updated(licence={"spdx": None, "text": ""}).licence.describe() == "unknown"


@pytest.mark.parametrize(
    ("given", "licence"),
    [
        ("CC-BY-NC-SA-4.0", Licence(spdx="CC-BY-NC-SA-4.0")),
        (" Apache-2.0 ", Licence(spdx="Apache-2.0")),
        ("free for research; ask the authors", Licence(text="free for research; ask the authors")),
        ("", None),
    ],
)
def test_a_licence_given_as_one_string_is_an_spdx_identifier_or_text(given, licence):
    assert Licence.parse(given) == licence


def test_a_licence_string_with_control_characters_is_refused():
    with pytest.raises(InputError, match=r"^--licence must be an SPDX identifier .* without control characters"):
        Licence.parse("terms\x00")
