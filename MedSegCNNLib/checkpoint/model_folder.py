"""A trained model on disk: a folder holding ``model.safetensors`` (the weights) and ``model.json`` (the model
card), or a ``.zip`` of that folder. Nothing here ever unpickles a file.

The model card is a :class:`~.model_card.ModelCard` (its schema: :mod:`.model_card`), validated when saved and
when read; :func:`save_model` fills in ``format``, ``format_version``, ``library_version``, ``created`` (UTC,
ISO 8601) and ``weights`` (``{"file": "model.safetensors", "sha256": ...}``), replacing any given values.

Loading first sizes the network the card describes on torch's "meta" device (nothing allocated): its parameters
and the feature maps of one window are bounded (:func:`~.model_card.check_model_size`, overridable with
``allow_large=True``), and the weights file may be no larger than that network's tensors can take. Then the
weights' SHA-256 must be the card's and their names and shapes exactly the network's. Plain PyTorch files
(``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, ...) are refused: they are pickles, which can run code when loaded.
:func:`import_state_dict` is the one explicit way to bring such weights in, through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..atomic import atomic_folder, atomic_path, verify_zip
from ..errors import InputError
from .json_file import write_json
from .model_archive import CARD_FILE, WEIGHTS_FILE
from .model_card import MODEL_FORMAT_VERSION, ModelCard, WeightsFile, check_model_size, opened_model
from .state_codec import read_tensors, storable_tensors, write_tensors
from .weights_file import foreign_weights_problem, weights_file_kind

logger = logging.getLogger(__name__)

_HEADER_BYTES = 2**16
"""Allowance for a safetensors file's header and metadata, plus :data:`_HEADER_BYTES_PER_TENSOR` per tensor."""
_HEADER_BYTES_PER_TENSOR = 1024
_WIDEST_ELEMENT_BYTES = 8
"""Bytes per element of the widest dtype weights may be stored in (float64)."""


def save_model(
    folder: str | os.PathLike[str],
    network: nn.Module,
    card: ModelCard | Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``network``'s weights and the model ``card`` (a :class:`ModelCard`, or plain data that
    :meth:`ModelCard.new` validates) to ``folder``; return it.

    The folder appears complete or not at all (written beside it, then renamed). A non-empty existing folder is
    refused (:class:`OutputExistsError`) unless ``overwrite``; overwriting replaces the model files and keeps the
    folder's other entries (e.g. ``checkpoints/``), and the old model stays intact until the new one is complete.
    """
    if not isinstance(card, ModelCard):
        if not isinstance(card, Mapping):
            raise InputError(f"The model card must be a ModelCard or a mapping (dict); got a {type(card).__name__}.")
        card = ModelCard.new(card)
    tensors = storable_tensors(network.state_dict(), what="network's state dict")
    with atomic_folder(folder, overwrite=overwrite, keep_other_entries=True) as partial:
        sha256 = write_tensors(partial / WEIGHTS_FILE, tensors)
        written = dataclasses.replace(
            card,
            format_version=MODEL_FORMAT_VERSION,
            library_version=__version__,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            weights=WeightsFile(WEIGHTS_FILE, sha256),
        )
        write_json(partial / CARD_FILE, written.to_dict())
    logger.debug("Saved the model to %s", folder)
    return Path(folder)


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    network_builder: Callable[[dict], nn.Module] | None = None,
    allow_large: bool = False,
) -> tuple[nn.Module, ModelCard]:
    """Load a model saved by :func:`save_model`: ``path`` is its folder, the ``model.json`` in it, or a ``.zip``.

    The network is built by ``network_builder(card.network_config())`` (default
    :func:`MedSegCNNLib.networks.build_network`), first on the "meta" device to bound its size (see the module
    docstring; ``allow_large`` lifts the bound for genuinely huge models), then for real; it gets the weights
    (names and shapes must match exactly: every parameter and buffer comes from them) on ``device`` and is put in
    eval mode. Returns
    ``(network, card)``.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1', 'mps', ...") from None
    if network_builder is None:
        network_builder = _default_builder()
    with opened_model(path) as model:
        card = model.card
        max_weights_bytes = _sized_network(card, network_builder, path, model.where, allow_large=allow_large)
        weights_path = model.weights_file(max_weights_bytes)
        tensors = read_tensors(weights_path, sha256=None, what="weights", record="the model card")
        where = model.where
    with torch.device("meta"):  # built without initial values: every one is loaded from the weights
        network = _built(network_builder, card, where)
    mismatch = weights_mismatch(network, tensors)
    if mismatch:
        raise InputError(
            f"The weights of {path} do not fit the network built from its card ({mismatch}); the card's network "
            "configuration and the weights come from different models."
        )
    if any(name not in tensors for name, _ in network.named_buffers()):  # non-persistent buffers need their values
        network = _built(network_builder, card, where)
    if _on_meta(network):  # the weights become the network's tensors (in its dtypes): nothing allocated twice
        own = network.state_dict()
        network.load_state_dict({name: tensor.to(own[name].dtype) for name, tensor in tensors.items()}, assign=True)
        return network.to(device).eval(), card
    network = network.to(device)
    network.load_state_dict(tensors, strict=True)
    return network.eval(), card


def zip_model(folder: str | os.PathLike[str], zip_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Pack the model in ``folder`` (its card and weights, checked first; other entries are left out) into
    ``zip_path`` (``.zip``), under a top-level folder named like ``folder``; atomic. Returns ``zip_path``."""
    folder, zip_path = Path(folder).resolve(), Path(zip_path)
    if zip_path.suffix.lower() != ".zip":
        raise InputError(f"The model archive must be a .zip file; got {zip_path}.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a model folder; give the folder that holds {CARD_FILE}.")
    with opened_model(folder) as model:
        weights_path = model.weights_file(None)
        with (
            atomic_path(zip_path, overwrite=overwrite, verify=verify_zip) as partial,
            zipfile.ZipFile(partial, "w") as archive,
        ):
            archive.write(folder / CARD_FILE, f"{folder.name}/{CARD_FILE}", compress_type=zipfile.ZIP_DEFLATED)
            archive.write(weights_path, f"{folder.name}/{weights_path.name}", compress_type=zipfile.ZIP_STORED)
    return zip_path


def import_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read plain PyTorch weights: a safetensors file (by its name or content), or a ``torch.save`` file (either
    format) that ``torch.load(weights_only=True)`` reads (PyTorch's restricted unpickler, which refuses arbitrary
    objects) holding a flat ``name -> tensor`` mapping or a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper of
    one; plain pickles and other zips are refused by their kind (:mod:`.weights_file`). Returns CPU tensors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Weights file {path} does not exist; check the path.")
    kind = weights_file_kind(path)
    if path.suffix.lower() == ".safetensors" or kind == "safetensors":
        return read_tensors(path, sha256=None, what="weights", record="")
    problem = foreign_weights_problem(path, kind, "a PyTorch state dict")
    if problem is not None:
        raise InputError(problem)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the restricted unpickler raises many kinds; all mean "not plain weights"
        # torch's own message suggests weights_only=False, which would run the pickle's code: not relayed.
        raise InputError(
            f"{path} is not a plain PyTorch state dict that MedSegCNN can read safely (it holds other objects, "
            "which could run code when unpickled, or it is damaged); save only model.state_dict() with torch.save, "
            "or as safetensors."
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


def _built(network_builder: Callable[[dict], nn.Module], card: ModelCard, where: str) -> nn.Module:
    """``network_builder(card.network_config())``; a configuration the builder refuses is an invalid card (read
    from ``where``)."""
    try:
        network = network_builder(card.network_config())
    except (InputError, RuntimeError, OverflowError) as error:  # torch refuses absurd shapes with RuntimeError
        raise InputError(
            f"Invalid model card {where}: network: {_first_line(error)}; fix the card or use another model."
        ) from None
    if not isinstance(network, nn.Module):
        raise InputError(f"network_builder returned a {type(network).__name__}, not a torch.nn.Module.")
    return network


def _sized_network(
    card: ModelCard,
    network_builder: Callable[[dict], nn.Module],
    path: str | os.PathLike[str],
    where: str,
    *,
    allow_large: bool,
) -> int:
    """The most bytes a weights file of the network ``card`` describes can have (its tensors in float64, with a
    generous header). The network is built and run on one window on the "meta" device (shapes only, nothing
    allocated) to count its parameters and feature maps; unless ``allow_large``, a network beyond the bounds
    (:func:`check_model_size`) is refused, one with too many parameters before it runs."""
    with torch.device("meta"):
        network = _built(network_builder, card, where).eval()
    state = network.state_dict()
    parameters = sum(parameter.numel() for parameter in network.parameters())
    if not allow_large:
        check_model_size(path, card, parameters=parameters, feature_bytes=None)
    try:
        feature_bytes = _window_feature_bytes(network, card, cached=network_builder is _default_builder())
    except (InputError, RuntimeError, OverflowError) as error:
        raise InputError(
            f"Invalid model card {where}: patch_size {list(card.patch_size)} does not fit its network: "
            f"{_first_line(error)}; fix the card or use another model."
        ) from None
    if not allow_large:
        check_model_size(path, card, parameters=parameters, feature_bytes=feature_bytes)
    elements = sum(tensor.numel() for tensor in state.values())
    return _HEADER_BYTES + _HEADER_BYTES_PER_TENSOR * len(state) + _WIDEST_ELEMENT_BYTES * elements


def _default_builder() -> Callable[[dict], nn.Module]:
    from ..networks import build_network  # imported here: the networks package imports torch models

    return build_network


def _window_feature_bytes(network: nn.Module, card: ModelCard, *, cached: bool) -> int:
    """Bytes of the feature maps of one window of ``card`` through ``network`` (on the "meta" device); with
    ``cached`` (the network built by :func:`~MedSegCNNLib.networks.build_network`) kept per machine."""
    from ..networks.base import cached_feature_map_bytes, feature_map_bytes  # imported here, as build_network is

    window = (len(card.channels), *card.patch_size)
    if not cached:
        return feature_map_bytes(network, window)
    return cached_feature_map_bytes(network, card.network_config(), window)


def _first_line(error: Exception) -> str:
    """The first line of ``error``'s message, without its final full stop."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def _on_meta(network: nn.Module) -> bool:
    return any(parameter.is_meta for parameter in network.parameters())


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
