"""A trained model on disk: a folder holding ``model.safetensors`` (the weights) and ``model.json`` (the model
card), or a ``.zip`` of that folder. Nothing here ever unpickles a file.

The model card is the JSON data the trainer gives (``network``: the network's configuration, required;
``labels``, ``channels``, ``preprocessing``, ``patch_size``, ``training``, ...) plus fields :func:`save_model`
fills itself, replacing any given values: ``format`` (``"medsegcnn-model"``), ``format_version`` (1),
``library_version``, ``created`` (UTC, ISO 8601) and ``weights`` (``{"file": "model.safetensors", "sha256":
...}``). Card values are stored as JSON: tuples become lists, integer keys become strings (label values come
back as ``"1"``), paths become strings and the non-finite floats inf, -inf and nan become the strings
``"inf"``, ``"-inf"`` and ``"nan"`` (as in ``medsegcnn evaluate --json``); tensors, arrays and other objects
are refused.

Loading checks that the weights' SHA-256 is the card's and that their names and shapes are exactly the
network's. Plain PyTorch files (``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, ...) are refused: they are pickles, which
can run code when loaded. :func:`import_state_dict` is the one explicit way to bring such weights in, through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..atomic import atomic_path
from ..errors import InputError
from .state_codec import (
    atomic_folder,
    read_json,
    read_tensors,
    sha256_file,
    storable_tensors,
    write_json,
    write_tensors,
)

logger = logging.getLogger(__name__)

MODEL_FORMAT = "medsegcnn-model"
MODEL_FORMAT_VERSION = 1
CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
"""File types refused by :func:`load_model` because they are (usually) pickles."""

_PICKLE_REFUSAL = (
    "MedSegCNN never unpickles files; export the state dict to safetensors or use import_state_dict(...) "
    "(see MedSegCNNLib.checkpoint)."
)
_MAX_CARD_BYTES = 16 * 2**20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def save_model(
    folder: str | os.PathLike[str], network: nn.Module, card: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Write ``network``'s weights and the model ``card`` (see the module docstring) to ``folder``; return it.

    The folder appears complete or not at all (written beside it, then renamed). A non-empty existing folder is
    refused (:class:`OutputExistsError`) unless ``overwrite``; overwriting replaces the model files and keeps the
    folder's other entries (e.g. ``checkpoints/``), and the old model stays intact until the new one is complete.
    """
    card = _json_card(card)
    if not isinstance(card.get("network"), dict):
        raise InputError('The model card needs a "network" entry: the network configuration (a dict) to rebuild it.')
    tensors = storable_tensors(network.state_dict(), what="network's state dict")
    with atomic_folder(folder, overwrite=overwrite, keep_other_entries=True) as partial:
        sha256 = write_tensors(partial / WEIGHTS_FILE, tensors)
        written = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "library_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        written |= {key: value for key, value in card.items() if key not in (*written, "weights")}
        written["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256}
        write_json(partial / CARD_FILE, written)
    logger.debug("Saved the model to %s", folder)
    return Path(folder)


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    network_builder: Callable[[dict], nn.Module] | None = None,
) -> tuple[nn.Module, dict]:
    """Load a model saved by :func:`save_model`: ``path`` is its folder, the ``model.json`` in it, or a ``.zip``.

    The network is built by ``network_builder(card["network"])`` (default
    :func:`MedSegCNNLib.networks.build_network`), gets the weights (names and shapes must match exactly), moves
    to ``device`` and is put in eval mode. Returns ``(network, card)``.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1', 'mps', ...") from None
    if network_builder is None:
        from ..networks import build_network  # imported here: the networks package imports torch models

        network_builder = build_network
    with _opened_model(path, need_weights=True) as (card, weights_path):
        if not isinstance(card.get("network"), dict):
            raise InputError(f'The model card of {path} has no "network" configuration; the model cannot be built.')
        tensors = read_tensors(weights_path, sha256=card["weights"]["sha256"], what="weights", record="the model card")
    network = network_builder(card["network"])
    if not isinstance(network, nn.Module):
        raise InputError(f"network_builder returned a {type(network).__name__}, not a torch.nn.Module.")
    mismatch = weights_mismatch(network, tensors)
    if mismatch:
        raise InputError(
            f"The weights of {path} do not fit the network built from its card ({mismatch}); the card's network "
            "configuration and the weights come from different models."
        )
    network.load_state_dict(tensors, strict=True)
    return network.to(device).eval(), card


def read_model_card(path: str | os.PathLike[str]) -> dict:
    """The model card of a model folder, its ``model.json`` or a ``.zip`` (no weights are read)."""
    with _opened_model(path, need_weights=False) as (card, _):
        return card


def zip_model(folder: str | os.PathLike[str], zip_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Pack the model in ``folder`` (its card and weights, checked first; other entries are left out) into
    ``zip_path`` (``.zip``), under a top-level folder named like ``folder``; atomic. Returns ``zip_path``."""
    folder, zip_path = Path(folder).resolve(), Path(zip_path)
    if zip_path.suffix.lower() != ".zip":
        raise InputError(f"The model archive must be a .zip file; got {zip_path}.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a model folder; give the folder that holds {CARD_FILE}.")
    with _opened_model(folder, need_weights=True) as (card, weights_path):
        if sha256_file(weights_path) != card["weights"]["sha256"]:
            raise InputError(f"The weights in {weights_path} do not match the model card (corrupted or replaced?).")
        with atomic_path(zip_path, overwrite=overwrite) as partial, zipfile.ZipFile(partial, "w") as archive:
            archive.write(folder / CARD_FILE, f"{folder.name}/{CARD_FILE}", compress_type=zipfile.ZIP_DEFLATED)
            archive.write(weights_path, f"{folder.name}/{weights_path.name}", compress_type=zipfile.ZIP_STORED)
    return zip_path


def import_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read plain PyTorch weights: a ``.safetensors`` file, or a file that ``torch.load(weights_only=True)``
    reads (PyTorch's restricted unpickler, which refuses arbitrary objects) holding a flat ``name -> tensor``
    mapping or a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper of one. Returns CPU tensors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Weights file {path} does not exist; check the path.")
    if path.suffix.lower() == ".safetensors":
        return read_tensors(path, sha256=None, what="weights", record="")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the restricted unpickler raises many kinds; all mean "not plain weights"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{path} is not a plain PyTorch state dict that can be read safely (torch.load with weights_only=True "
            f"failed: {first_line}); save model.state_dict() with torch.save, or as safetensors."
        ) from None
    if isinstance(data, Mapping) and not all(isinstance(value, torch.Tensor) for value in data.values()):
        data = next((data[key] for key in ("state_dict", "model") if isinstance(data.get(key), Mapping)), data)
    if not isinstance(data, Mapping) or not data:
        raise InputError(f"{path} holds a {type(data).__name__}, not a state dict (a mapping of names to tensors).")
    for name, value in data.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise InputError(
                f"{path} is not a flat state dict: entry {name!r} is a {type(value).__name__}, not a tensor; "
                "save model.state_dict() itself."
            )
    return {name: value.detach() for name, value in data.items()}


def load_matching_weights(network: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy into ``network`` the tensors of ``state_dict`` whose name and shape match (transfer learning).

    Returns ``(loaded, skipped)``: the names loaded, and ``"name: reason"`` for each entry not loaded. The
    network's other parameters keep their values.
    """
    own = network.state_dict()
    matching: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for name, tensor in state_dict.items():
        if name not in own:
            skipped.append(f"{name}: not in the network")
        elif not isinstance(tensor, torch.Tensor):
            skipped.append(f"{name}: a {type(tensor).__name__}, not a tensor")
        elif tensor.shape != own[name].shape:
            skipped.append(
                f"{name}: shape {tuple(tensor.shape)} in the weights, {tuple(own[name].shape)} in the network"
            )
        else:
            matching[name] = tensor
    network.load_state_dict(matching, strict=False)
    if not matching:
        logger.warning("No weights matched the network by name and shape; nothing was loaded.")
    return list(matching), skipped


def _json_card(card: Mapping[str, Any]) -> dict:
    """``card`` as plain JSON data (see the module docstring), or :class:`InputError` naming the bad entry."""
    if not isinstance(card, Mapping):
        raise InputError(f"The model card must be a mapping (dict); got a {type(card).__name__}.")

    def convert(value: Any, where: str) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, int | np.integer):
            return int(value)
        if isinstance(value, float | np.floating):
            value = float(value)
            return value if math.isfinite(value) else str(value)
        if isinstance(value, PurePath):
            return str(value)
        if isinstance(value, list | tuple):
            return [convert(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, Mapping):
            converted = {}
            for key, item in value.items():
                if isinstance(key, bool) or not isinstance(key, str | int | np.integer):
                    raise InputError(f"Model card key {key!r} in {where} is not a string or an integer.")
                converted[str(key)] = convert(item, f"{where}[{key!r}]")
            return converted
        raise InputError(
            f"Model card entry {where} is a {type(value).__name__}, which JSON cannot hold; convert it to numbers, "
            "strings, lists or dicts (e.g. with .tolist())."
        )

    return convert(card, "card")


@contextlib.contextmanager
def _opened_model(path: str | os.PathLike[str], *, need_weights: bool) -> Iterator[tuple[dict, Path | None]]:
    """Yield ``(card, weights_path)`` for a model folder, its ``model.json`` or a ``.zip`` (whose weights are
    extracted to a temporary folder that lives as long as the context); ``weights_path`` is ``None`` unless
    ``need_weights``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Model {path} does not exist; give a model folder, its {CARD_FILE} or a .zip.")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise InputError(f"{path} is not a readable .zip archive (damaged or truncated?): {error}") from None
        with archive:
            prefix = _card_member_prefix(archive, path)
            card = _check_card(_read_card_member(archive, prefix + CARD_FILE, path), path)
            if not need_weights:
                yield card, None
                return
            member = prefix + card["weights"]["file"]
            with tempfile.TemporaryDirectory(prefix="medsegcnn-model-") as scratch:
                weights_path = Path(scratch) / card["weights"]["file"]
                try:
                    with archive.open(member) as source, weights_path.open("wb") as target:
                        shutil.copyfileobj(source, target, 2**20)
                except KeyError:
                    raise InputError(f"{path} lacks the weights file {member} its model card names.") from None
                except (zipfile.BadZipFile, OSError, EOFError) as error:
                    raise InputError(f"{path} is damaged; cannot extract {member}: {error}") from None
                yield card, weights_path
            return
    if path.is_file() and (suffix in PICKLE_SUFFIXES or _looks_pickled(path)):
        raise InputError(f"{path} is a PyTorch/pickle file. {_PICKLE_REFUSAL}")
    if path.is_file() and path.name != CARD_FILE and suffix != ".json":
        raise InputError(f"{path} is not a MedSegCNN model; give a model folder, its {CARD_FILE} or a .zip.")
    folder = path if path.is_dir() else path.parent
    card_path = folder / CARD_FILE if path.is_dir() else path
    if path.is_dir() and not card_path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise InputError(
                f"{folder} holds no {CARD_FILE} but PyTorch/pickle files ({', '.join(pickles)}). " + _PICKLE_REFUSAL
            )
        raise InputError(f"{folder} is not a MedSegCNN model folder: it holds no {CARD_FILE}.")
    card = _check_card(read_json(card_path, what="model card"), card_path)
    yield card, (folder / card["weights"]["file"] if need_weights else None)


def _card_member_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The folder inside ``archive`` that holds ``model.json`` ("" or "name/"); refuses unsafe member names
    (absolute, drive letters, ``..``) and pickles."""
    names = archive.namelist()
    for name in names:
        parts = re.split(r"[\\/]", name)
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise InputError(f"{path} holds an unsafe entry {name!r} (absolute path or '..'); it is not opened.")
    cards = [name for name in names if name == CARD_FILE or re.fullmatch(rf"[^/\\]+/{re.escape(CARD_FILE)}", name)]
    if len(cards) != 1:
        if any(name.lower().endswith((".pkl", *PICKLE_SUFFIXES)) for name in names):
            raise InputError(f"{path} holds PyTorch/pickle files, not a MedSegCNN model. {_PICKLE_REFUSAL}")
        found = "no" if not cards else f"{len(cards)}"
        raise InputError(f"{path} holds {found} {CARD_FILE} (at the top or in one folder); it is not a model .zip.")
    return cards[0][: -len(CARD_FILE)]


def _read_card_member(archive: zipfile.ZipFile, member: str, path: Path) -> Any:
    info = archive.getinfo(member)
    if info.file_size > _MAX_CARD_BYTES:
        raise InputError(f"The model card in {path} is implausibly large ({info.file_size} bytes); not read.")
    try:
        return json.loads(archive.read(member).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise InputError(f"{path} is damaged; cannot read {member}: {error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"The model card {member} in {path} is not valid JSON (edited?): {error}") from None


def _check_card(card: Any, where: Path) -> dict:
    """``card`` after checking that it is a MedSegCNN model card this version can read."""
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise InputError(f'{where} is not a MedSegCNN model card (no "format": "{MODEL_FORMAT}").')
    version = card.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{where} has an invalid format_version {version!r} (corrupted?).")
    if version > MODEL_FORMAT_VERSION:
        raise InputError(
            f"{where} was written by a newer MedSegCNN (model format {version}; this is {__version__}, which reads "
            f"format {MODEL_FORMAT_VERSION}); upgrade MedSegCNN."
        )
    weights = card.get("weights")
    file = weights.get("file") if isinstance(weights, dict) else None
    sha256 = weights.get("sha256") if isinstance(weights, dict) else None
    if not isinstance(file, str) or file != PurePath(file).name or "\\" in file or not file.endswith(".safetensors"):
        raise InputError(f"{where} names no valid weights file (a .safetensors file beside the card); corrupted?")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InputError(f"{where} has no valid SHA-256 for its weights (corrupted?).")
    return card


def _looks_pickled(path: Path) -> bool:
    """True when the file starts like a pickle (protocol 2 or later)."""
    with path.open("rb") as file:
        head = file.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def weights_mismatch(network: nn.Module, tensors: Mapping[str, torch.Tensor]) -> str:
    """How the names and shapes of ``tensors`` differ from ``network``'s state dict, naming a few of each kind
    (missing, unexpected, wrong shape); ``""`` when they match exactly."""
    own = network.state_dict()
    missing = [name for name in own if name not in tensors]
    unexpected = [name for name in tensors if name not in own]
    wrong = [
        f"{name} {tuple(tensors[name].shape)} vs {tuple(own[name].shape)}"
        for name in own
        if name in tensors and tensors[name].shape != own[name].shape
    ]
    return "; ".join(
        f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if items
    )
