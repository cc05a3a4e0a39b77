"""Fault class 6 (untrusted models): malicious, oversized and malformed model cards and zips are refused cheaply.

Every case edits a copy of the bundled model (its card, its weights, or a ``.zip`` of it) and runs ``predict``
(a few also ``models``) on it: exit 1 with one exact line naming the file and the field or cause, every
pre-existing file unchanged, no output, nothing temporary left behind (here or as ``medsegcnn-model-*`` in the
system's temporary folder), and a child process that stayed small: absurd networks are sized on torch's "meta"
device, zip members are refused by their declared size and compression ratio before they are inflated.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import ROOT, SAMPLE
from fault_support import assert_unchanged, error_line, leftovers, snapshot
from model_support import declare_member_size

BUNDLED = ROOT / "Resources" / "Models" / "hippocampus-tiny"
IMAGE = SAMPLE / "imagesTr" / "hippocampus_004.nii.gz"
FIX = "fix the card or use another model."
TRUST = "if you trust it and have the memory, pass --allow-large-model (allow_large=True in Python)."
INTACT = "use an intact copy of the model."
PEAK_KIB = 1536 * 1024
"""Most memory (peak resident set, KiB) a refusing ``medsegcnn`` child may use: importing torch takes ~400 MiB;
building any of the refused networks for real would take from gigabytes to terabytes."""
WEIGHTS_MEMBER = "model/model.safetensors"


MEASURED_RUN = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as peak:
    peak.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs a command and writes its peak resident memory (KiB) to a file. Linux carries the parent's peak across
``exec`` into the child's ``ru_maxrss``, so the command is started from this small process, not from pytest's
(which other tests may have grown to gigabytes)."""


def run_cli(*args: str | os.PathLike[str], scratch: Path) -> tuple[subprocess.CompletedProcess[str], int | None]:
    """``medsegcnn args`` as a child process, and its peak resident memory (KiB; ``None`` where the system does not
    report it). Its output goes through files in ``scratch``, outside the folders the test checks."""
    stdout, stderr, peak_file = scratch / "stdout.txt", scratch / "stderr.txt", scratch / "peak.txt"
    command = [sys.executable, "-m", "MedSegCNNLib", *map(str, args)]
    measured = hasattr(os, "wait4") and hasattr(os, "posix_spawn")
    launcher = [sys.executable, "-c", MEASURED_RUN, str(peak_file)] if measured else []
    with stdout.open("w") as out, stderr.open("w") as err:
        returncode = subprocess.run([*launcher, *command], stdout=out, stderr=err, cwd=ROOT, timeout=120).returncode
    peak = int(peak_file.read_text()) if measured else None
    return subprocess.CompletedProcess(command, returncode, stdout.read_text(), stderr.read_text()), peak


def model_copy(folder: Path, edit: Callable[[dict], object] | None = None) -> Path:
    """A copy of the bundled model in ``folder`` (card and weights), its card changed by ``edit``."""
    folder.mkdir(parents=True)
    for name in ("model.json", "model.safetensors"):
        shutil.copy(BUNDLED / name, folder / name)
    if edit is not None:
        card = json.loads((folder / "model.json").read_text())
        edit(card)
        (folder / "model.json").write_text(json.dumps(card))
    return folder


def model_zip(path: Path, weights: bytes | None = None, *, compression: int = zipfile.ZIP_STORED) -> Path:
    """A ``.zip`` of the bundled model under ``model/``, with ``weights`` instead of its weights if given."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(BUNDLED / "model.json", "model/model.json", compress_type=zipfile.ZIP_DEFLATED)
        data = (BUNDLED / "model.safetensors").read_bytes() if weights is None else weights
        archive.writestr(WEIGHTS_MEMBER, data, compress_type=compression)
    return path


def weights_cap() -> int:
    """The most bytes weights of the bundled network may have: its tensors in float64 plus a 64 KiB header
    allowance and 1 KiB per tensor (worked out from the bundled weights file's own header)."""
    data = (BUNDLED / "model.safetensors").read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    tensors = [entry for name, entry in header.items() if name != "__metadata__"]
    elements = sum(math.prod(entry["shape"]) for entry in tensors)
    return 2**16 + 1024 * len(tensors) + 8 * elements


def set_network(key: str, value: object) -> Callable[[dict], object]:
    return lambda card: card["network"].__setitem__(key, value)


def set_field(key: str, value: object) -> Callable[[dict], object]:
    return lambda card: card.__setitem__(key, value)


def card_case(edit: Callable[[dict], object], message: str) -> Callable[[Path], tuple[Path, str]]:
    """A case: a model folder whose card ``edit`` changed, refused with ``message`` (``{card}``: its card file,
    ``{model}``: the folder)."""

    def make(tmp_path: Path) -> tuple[Path, str]:
        folder = model_copy(tmp_path / "model", edit)
        return folder, message.replace("{card}", str(folder / "model.json")).replace("{model}", str(folder))

    return make


def zip_case(make_zip: Callable[[Path], Path], message: Callable[[Path], str]) -> Callable[[Path], tuple[Path, str]]:
    def make(tmp_path: Path) -> tuple[Path, str]:
        path = make_zip(tmp_path / "model.zip")
        return path, message(path)

    return make


def _flipped_weights() -> bytes:
    data = bytearray((BUNDLED / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    return bytes(data)


def _oversized_weights(tmp_path: Path) -> tuple[Path, str]:
    folder = model_copy(tmp_path / "model")
    with (folder / "model.safetensors").open("ab") as weights:
        weights.write(b"\0" * 4 * 2**20)
    size = (folder / "model.safetensors").stat().st_size
    return folder, (
        f"The weights of {folder / 'model.safetensors'} are {size:,} bytes, more than the {weights_cap():,} that the "
        f"network of its model card can take; they do not belong to this card (corrupted or replaced?); {INTACT}"
    )


def _bomb_message(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(WEIGHTS_MEMBER)
    ratio = info.file_size / info.compress_size
    return f"{path} holds {WEIGHTS_MEMBER}, compressed {ratio:,.0f} to 1 (a zip bomb?); it is not opened; {INTACT}"


CASES = {
    # absurd sizes: refused from the card (range) or by sizing the network on the meta device
    "absurd features (2 trillion parameters)": card_case(
        set_network("features", [65536] * 4),
        "The model {model} is too large to load safely: its network has 1,958,508,888,067 parameters (limit "
        f"268,435,456); {TRUST}",
    ),
    "absurd out_channels": card_case(
        set_network("out_channels", 10**6),
        "Invalid model card {card}: network.out_channels must be 3 (one per label), not 1000000; " + FIX,
    ),
    "absurd patch_size (25 TiB of feature maps)": card_case(
        set_field("patch_size", [4096, 4096, 4096]),
        "The model {model} is too large to load safely: one 4096 x 4096 x 4096 window needs 25,088.0 GiB of feature "
        f"maps (limit 16.0 GiB); {TRUST}",
    ),
    # malformed fields
    "string patch_size": card_case(
        set_field("patch_size", "40,56,40"),
        "Invalid model card {card}: patch_size must be a list of 3 integers in 1..65536 (spatial_dims is 3), not "
        f'"40,56,40"; {FIX}',
    ),
    "missing preprocessing": card_case(
        lambda card: card.pop("preprocessing"),
        "Invalid model card {card}: the required field preprocessing is missing; " + FIX,
    ),
    "labels as a list": card_case(
        lambda card: card.__setitem__("labels", list(card["labels"].values())),
        'Invalid model card {card}: labels must be an object mapping "0", "1", ... (2 to 32768 consecutive label '
        'values) to labels, not [{"name": "background", "color": [0.0, 0.0, 0.0]}, {"name...; ' + FIX,
    ),
    "training field of the wrong type": card_case(
        lambda card: card["training"].__setitem__("epochs_done", "all"),
        'Invalid model card {card}: training.epochs_done must be an integer >= 0, not "all"; ' + FIX,
    ),
    # weights and zips
    "weights file far larger than the network": _oversized_weights,
    "zip weights declaring 2 GiB": zip_case(
        lambda path: declare_member_size(model_zip(path), WEIGHTS_MEMBER, 2**31),
        lambda path: (
            f"The weights of {path} declare 2,147,483,648 bytes, more than the {weights_cap():,} that the network of "
            f"its model card can take; they do not belong to this card (corrupted or replaced?); {INTACT}"
        ),
    ),
    "zip bomb (compression ratio)": zip_case(
        lambda path: model_zip(path, b"\0" * 2_000_000, compression=zipfile.ZIP_DEFLATED), _bomb_message
    ),
    "zip weights not matching the card's sha256": zip_case(
        lambda path: model_zip(path, _flipped_weights()),
        lambda path: f"The weights in {path} do not match its model card (corrupted or replaced?); {INTACT}",
    ),
}


def _temporary_model_folders() -> set[str]:
    return {entry.name for entry in Path(tempfile.gettempdir()).glob("medsegcnn-model-*")}


@pytest.fixture
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-output")


@pytest.mark.parametrize("case", list(CASES))
def test_predict_refuses_an_untrusted_model(tmp_path, scratch, case):
    model, message = CASES[case](tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    before, temporary = snapshot(tmp_path, IMAGE), _temporary_model_folders()
    args = ("predict", "--model", model, "--input", IMAGE, "--output", out / "seg.nii.gz", "--device", "cpu")
    result, peak = run_cli(*args, scratch=scratch)
    assert result.returncode == 1, result.stderr
    assert error_line(result) == message
    assert peak is None or peak < PEAK_KIB, f"the refusal took {peak} KiB"
    assert_unchanged(before)
    assert list(out.iterdir()) == [] and leftovers(tmp_path) == []
    assert _temporary_model_folders() <= temporary


@pytest.mark.parametrize("case", ["string patch_size", "missing preprocessing", "labels as a list"])
def test_models_refuses_a_malformed_card(tmp_path, scratch, case):
    model, message = CASES[case](tmp_path)
    before = snapshot(tmp_path)
    result, _ = run_cli("models", model, scratch=scratch)
    assert result.returncode == 1, result.stderr
    assert error_line(result) == message
    assert_unchanged(before)
    assert leftovers(tmp_path) == []


def test_unknown_card_fields_are_reported_and_the_model_still_works(tmp_path, scratch):
    model = model_copy(tmp_path / "model", set_field("licence_url", "https://example.org"))
    before = snapshot(tmp_path, IMAGE)
    output = tmp_path / "seg.nii.gz"
    args = ("predict", "--model", model, "--input", IMAGE, "--output", output, "--device", "cpu")
    result, _ = run_cli(*args, scratch=scratch)
    assert result.returncode == 0, result.stderr
    warning = (
        f"medsegcnn: WARNING: The model card {model / 'model.json'} has unknown field(s) licence_url (written by a "
        "newer MedSegCNN?); they are kept but not used."
    )
    assert result.stderr.splitlines().count(warning) == 1, result.stderr
    assert output.is_file()
    assert_unchanged(before)
    assert leftovers(tmp_path) == []


class Marker:
    """Unpickling this object creates the file ``path``: proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_init_from_a_pickle_is_refused_without_torchs_unsafe_hint(tmp_path, scratch):
    data = tmp_path / "data"
    dataset = json.loads((SAMPLE / "dataset.json").read_text())
    dataset["training"] = dataset["training"][:2]
    dataset["numTraining"] = 2
    for folder in ("imagesTr", "labelsTr"):
        (data / folder).mkdir(parents=True)
    for entry in dataset["training"]:
        for key in ("image", "label"):
            shutil.copy(SAMPLE / entry[key], data / entry[key])
    (data / "dataset.json").write_text(json.dumps(dataset))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"network": {"name": "unet", "features": [4, 8, 16]}, "batch_size": 1}))
    marker = tmp_path / "UNPICKLED"
    evil = tmp_path / "pretrained.pt"
    evil.write_bytes(pickle.dumps({"encoder.weight": Marker(marker)}, protocol=4))
    before = snapshot(tmp_path)
    result, _ = run_cli(
        "train", "--data", data, "--output", tmp_path / "run", "--config", config, "--init-from", evil,
        "--patch-size", "16,16,16", "--device", "cpu", "--fold", "all", "--epochs", "1", "--steps-per-epoch", "1",
        "--progress", "none", "--quiet", scratch=scratch,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f"{evil} is a plain pickle file, not a PyTorch state dict saved with torch.save; it is not read, since "
        "unpickling it could run code. Only if you trust it: load it with pickle in a trusted environment and save "
        "the weights again with torch.save (or as safetensors)."
    )
    assert "weights_only" not in result.stderr
    assert not marker.exists()
    assert_unchanged(before)
    assert leftovers(tmp_path) == []
