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

Cards are read and checked by :mod:`.model_card` (without torch). Loading checks that the weights' SHA-256 is
the card's and that their names and shapes are exactly the network's. Plain PyTorch files (``.pt``, ``.pth``,
``.ckpt``, ``.pkl``, ...) are refused: they are pickles, which can run code when loaded.
:func:`import_state_dict` is the one explicit way to bring such weights in, through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..atomic import atomic_path
from ..errors import InputError
from .json_file import write_json
from .model_card import CARD_FILE, MODEL_FORMAT, MODEL_FORMAT_VERSION, WEIGHTS_FILE, opened_model
from .state_codec import atomic_folder, read_tensors, sha256_file, storable_tensors, write_tensors

logger = logging.getLogger(__name__)


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
    with opened_model(path, need_weights=True) as (card, weights_path):
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


def zip_model(folder: str | os.PathLike[str], zip_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Pack the model in ``folder`` (its card and weights, checked first; other entries are left out) into
    ``zip_path`` (``.zip``), under a top-level folder named like ``folder``; atomic. Returns ``zip_path``."""
    folder, zip_path = Path(folder).resolve(), Path(zip_path)
    if zip_path.suffix.lower() != ".zip":
        raise InputError(f"The model archive must be a .zip file; got {zip_path}.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a model folder; give the folder that holds {CARD_FILE}.")
    with opened_model(folder, need_weights=True) as (card, weights_path):
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
