"""Fault class "foreign files": files that other tools (or MedSegCNN's own ``quantize``) wrote, damaged or not what
they claim, are refused by what they are, naming the file and what to do.

- A model's int8 version (``<model>/int8/``, written by ``medsegcnn quantize``) whose ``network.xml`` or
  ``network.bin`` is truncated, missing or changed since it was made: ``predict --precision int8`` refuses it naming
  the folder or file and the ``quantize ... --overwrite`` that remakes it (int8 is only ever asked for explicitly).
- ``dataset.json`` entries whose path is absolute or climbs out of the dataset folder are refused by their location
  (as written; symlinks inside the folder may point anywhere), before any file is opened.
- Checkpoints of another format: torch's legacy (non-zip) ``torch.save`` format is read (by the same restricted
  unpickler); a plain pickle, a zip that is not a torch file and a safetensors file are refused by their kind.
- An nnU-Net ``dataset.json`` whose labels or channels do not fit the network's outputs or inputs (as its weights
  show them) is named, with both numbers, instead of a shape mismatch blamed on the plans.

Every refusal: exit 1, one exact line, every pre-existing file unchanged, no output, nothing temporary left.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from cli_support import SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, leftovers, snapshot
from model_support import save_tiny_model
from nnunet_support import NnunetResults
from safetensors.torch import save_file

from MedSegCNNLib.checkpoint import import_state_dict
from MedSegCNNLib.data.dataset import load_msd_dataset
from MedSegCNNLib.runtime import openvino_version

IMAGE = SAMPLE / "imagesTr" / "hippocampus_004.nii.gz"
LABELS, CHANNELS = "labels (background included)", "input channel(s) (channel_names)"
REMAKE = "make it with: medsegcnn quantize --model {model} --calibration DATASET --overwrite."

# ----- a model's int8 version, damaged ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model folder with an int8 version (its record keeps the SHA-256 of the two IR files)."""
    if openvino_version() is None or importlib.util.find_spec("nncf") is None:
        pytest.skip('OpenVINO and NNCF are not installed (pip install ".[int8]")')
    from MedSegCNNLib.inference.quantization import quantize_model

    folder = save_tiny_model(tmp_path_factory.mktemp("int8") / "tiny")
    quantize_model(folder, SAMPLE / "imagesTr", cases=1, cache_folder=folder.parent / "cache")
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _without_digests(int8: Path) -> None:
    """The record as int8 versions made before it kept the files' SHA-256 have it."""
    record = json.loads((int8 / "int8.json").read_text())
    del record["files"]
    (int8 / "int8.json").write_text(json.dumps(record))


def _predict_int8(model: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(tmp_path)
    result = medsegcnn("predict", "--model", model, "--input", IMAGE, "--output", out / "seg.nii.gz", "--device", "cpu",
                       "--backend", "openvino", "--precision", "int8", "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert_unchanged(before)
    assert list(out.iterdir()) == [] and leftovers(tmp_path) == []
    return line


def _damaged_copy(quantized: Path, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(quantized, model)
    return model


def test_a_truncated_int8_network_xml_is_refused_naming_it(quantized, tmp_path):
    """An int8 version made before its record kept digests: OpenVINO's parse error, named and explained."""
    model = _damaged_copy(quantized, tmp_path)
    _without_digests(model / "int8")
    _truncate(model / "int8" / "network.xml")
    line = _predict_int8(model, tmp_path)
    prefix, suffix = f"The int8 version in {model / 'int8'} cannot be read (", REMAKE.format(model=model)
    pattern = re.escape(prefix) + r"[^()]+ at offset \d+" + re.escape("): it is truncated or damaged; " + suffix)
    assert re.fullmatch(pattern, line), line


def test_a_missing_int8_network_bin_is_refused_naming_it(quantized, tmp_path):
    model = _damaged_copy(quantized, tmp_path)
    (model / "int8" / "network.bin").unlink()
    line = _predict_int8(model, tmp_path)
    assert line == f"The int8 version in {model / 'int8'} lacks network.bin; " + REMAKE.format(model=model)


@pytest.mark.parametrize("damage", [_truncate, _flip_last_byte], ids=["truncated", "one byte flipped"])
def test_a_changed_int8_network_bin_is_refused_by_its_digest(quantized, tmp_path, damage):
    """Sibling: one flipped byte still parses (and would compute other numbers); the record's SHA-256 catches it."""
    model = _damaged_copy(quantized, tmp_path)
    damage(model / "int8" / "network.bin")
    line = _predict_int8(model, tmp_path)
    weights = model / "int8" / "network.bin"
    assert line == f"{weights} changed since it was quantised (damaged or replaced?); " + REMAKE.format(model=model)


# ----- dataset.json paths outside the dataset ---------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """An MSD dataset folder of two Hippocampus cases, and a real image outside it (``tmp_path/outside.nii.gz``)."""
    folder = tmp_path / "data"
    description = json.loads((SAMPLE / "dataset.json").read_text())
    description["training"] = description["training"][:2]
    for entry in description["training"]:
        for key in ("image", "label"):
            (folder / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SAMPLE / entry[key], folder / entry[key])
    (folder / "dataset.json").write_text(json.dumps(description))
    shutil.copy(IMAGE, tmp_path / "outside.nii.gz")
    return folder


def _with_path(folder: Path, key: str, path: str) -> None:
    description = json.loads((folder / "dataset.json").read_text())
    description["training"][1][key] = path
    (folder / "dataset.json").write_text(json.dumps(description))


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("image", "../../../../etc/passwd"),
        ("image", "./imagesTr/../../outside.nii.gz"),  # a real image: refused by where it is, not by what it is
        ("label", "/etc/passwd"),  # sibling: an absolute label path
    ],
)
def test_a_dataset_json_path_outside_the_dataset_is_refused(dataset, tmp_path, key, path):
    _with_path(dataset, key, path)
    before = snapshot(tmp_path)
    result = medsegcnn("plan", "--data", dataset, "--device", "cpu")
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f'{dataset / "dataset.json"}: the {key} path "{path}" points outside the dataset folder {dataset}; list '
        "files inside it by paths relative to it (a symlink inside it may point elsewhere)."
    )
    assert_unchanged(before)
    assert leftovers(tmp_path) == []


def test_a_symlink_inside_the_dataset_may_point_outside(dataset, tmp_path):
    """Datasets are often linked in: a path inside the folder is followed wherever its symlinks lead."""
    (dataset / "linked.nii.gz").symlink_to(tmp_path / "outside.nii.gz")
    _with_path(dataset, "image", "./imagesTr/../linked.nii.gz")
    loaded = load_msd_dataset(dataset)
    assert loaded.cases[1].images == (dataset / "imagesTr" / ".." / "linked.nii.gz",)


# ----- checkpoints of another format ----------------------------------------------------------------------------


class Marker:
    """Unpickling this object creates the file ``path``: proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_a_legacy_torch_save_state_dict_is_read(tmp_path):
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert torch.equal(import_state_dict(path)["weight"], state["weight"])


def test_a_safetensors_file_named_pth_is_read_as_safetensors(tmp_path):
    path = tmp_path / "weights.pth"
    save_file({"weight": torch.ones(2)}, str(path))
    assert torch.equal(import_state_dict(path)["weight"], torch.ones(2))


# ----- nnU-Net results folders whose dataset.json or checkpoint is foreign ---------------------------------------


@pytest.fixture
def results(nnunet_results: NnunetResults, tmp_path: Path) -> Path:
    """A copy of the session's nnU-Net results folder (1 channel, 3 labels; its JSON files and fold 0's final
    checkpoint), to damage."""
    model = nnunet_results.model_folder
    folder = tmp_path / "results" / model.name
    (folder / "fold_0").mkdir(parents=True)
    for name in ("dataset.json", "plans.json", "fold_0/checkpoint_final.pth"):
        shutil.copy(model / name, folder / name)
    return folder


def _import_refused(results: Path, tmp_path: Path) -> str:
    before = snapshot(tmp_path)
    result = medsegcnn("import", "nnunet", results, "--output", tmp_path / "model")
    assert result.returncode == 1, result.stderr
    assert_unchanged(before)
    assert not (tmp_path / "model").exists() and leftovers(tmp_path) == []
    return error_line(result)


def _edit_dataset(results: Path, change) -> Path:
    path = results / "dataset.json"
    description = json.loads(path.read_text())
    change(description)
    path.write_text(json.dumps(description))
    return path


@pytest.mark.parametrize(
    ("change", "described"),
    [
        (lambda d: d["labels"].update(extra=3), f"lists 4 {LABELS} but the network in {{ckpt}} has 3 outputs"),
        (lambda d: d["labels"].pop("posterior"), f"lists 2 {LABELS} but the network in {{ckpt}} has 3 outputs"),
        (lambda d: d["channel_names"].update({"1": "T2"}), f"names 2 {CHANNELS} but the network in {{ckpt}} takes 1"),
    ],
    ids=["one label more", "one label fewer", "one channel more"],
)  # fmt: skip
def test_an_nnunet_dataset_json_that_does_not_fit_the_weights_is_named(results, tmp_path, change, described):
    path = _edit_dataset(results, change)
    checkpoint = results / "fold_0" / "checkpoint_final.pth"
    assert _import_refused(results, tmp_path) == (
        f"{path} {described.format(ckpt=checkpoint)}: they do not belong together; restore the dataset.json "
        "the model was trained with (from its nnU-Net results folder)."
    )


def test_a_legacy_format_nnunet_checkpoint_is_imported(results, tmp_path):
    """``torch.save(..., _use_new_zipfile_serialization=False)``: read by the same restricted unpickler (not
    memory-mapped)."""
    checkpoint = results / "fold_0" / "checkpoint_final.pth"
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own fixture: trusted
    torch.save(content, checkpoint, _use_new_zipfile_serialization=False)
    result = medsegcnn("import", "nnunet", results, "--output", tmp_path / "model")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / "model.safetensors").is_file()


def _plain_pickle(checkpoint: Path, marker: Path) -> str:
    checkpoint.write_bytes(pickle.dumps({"network_weights": {}, "trainer_name": Marker(marker)}, protocol=4))
    return (
        f"{checkpoint} is a plain pickle file, not an nnU-Net checkpoint saved with torch.save; it is not read, since "
        "unpickling it could run code. Only if you trust it: load it with pickle in a trusted environment and save "
        "the weights again with torch.save (or as safetensors)."
    )


def _other_zip(checkpoint: Path, marker: Path) -> str:
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("readme.txt", "not weights")
    return (
        f"{checkpoint} is a zip archive but not a PyTorch file (it holds no data.pkl); give an nnU-Net checkpoint "
        "instead."
    )


def _safetensors(checkpoint: Path, marker: Path) -> str:
    save_file({"weight": torch.ones(2)}, str(checkpoint))
    return (
        f"{checkpoint} is a safetensors file, not an nnU-Net checkpoint (a torch.save file); give an nnU-Net "
        "checkpoint instead."
    )


@pytest.mark.parametrize(
    "make", [_plain_pickle, _other_zip, _safetensors], ids=["plain pickle", "other zip", "safetensors"]
)
def test_a_checkpoint_of_another_format_is_refused_by_its_kind(results, tmp_path, make):
    checkpoint, marker = results / "fold_0" / "checkpoint_final.pth", tmp_path / "UNPICKLED"
    message = make(checkpoint, marker)
    assert _import_refused(results, tmp_path) == message
    assert not marker.exists()
