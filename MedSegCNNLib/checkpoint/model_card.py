"""The model card (``model.json``) of a saved model folder or ``.zip``: the typed :class:`ModelCard`, its schema,
its validation and size bounds. Nothing here imports torch.

A model folder holds ``model.json`` and the weights file the card names (``model.safetensors``); a model ``.zip``
holds that folder's two files at its top or inside one folder; both are opened safely by :mod:`.model_archive`.
Listing models (the registry, the Slicer panel) only reads cards, so it stays cheap.

**Schema, format version 1** (:data:`MODEL_FORMAT_VERSION`). A card is one JSON object; required keys are
marked *(required)*, optional ones may also be ``null``:

- ``format`` *(required)*: ``"medsegcnn-model"``.
- ``format_version`` *(required)*: integer 1 .. :data:`MODEL_FORMAT_VERSION`; newer versions are refused with
  "upgrade MedSegCNN".
- ``library_version`` *(required)*: string, the MedSegCNN version that saved the model.
- ``created`` *(required)*: string, ISO 8601 date and time (UTC).
- ``name``, ``title``, ``description``: strings (dataset name, display title, one-paragraph description).
- ``network`` *(required)*: object, the network configuration that rebuilds the network. ``name`` *(required)*:
  non-empty string; ``spatial_dims`` *(required)*: the card's ``spatial_dims``; ``in_channels`` *(required)*:
  the number of ``channels``; ``out_channels`` *(required)*: the number of ``labels``; ``features``: 1 to 16
  integers in 1 .. 65536 (channels per level); ``blocks_per_level``: integer in 1 .. 64. Other options are any
  JSON values; the network checks them when it is built.
- ``spatial_dims`` *(required)*: 2 or 3.
- ``patch_size`` *(required)*: ``spatial_dims`` integers in 1 .. 65536 (voxels, array order z, y, x), at most
  2**40 voxels in all: the window the network sees.
- ``channels`` *(required)*: 1 to 256 non-empty strings, the input modality of each channel.
- ``labels`` *(required)*: object mapping each label value ``"0"`` .. ``"K-1"`` (2 <= K <= 32768, consecutive
  from 0; ``"0"`` is the background) to ``{"name": non-empty string, "color": [r, g, b] in [0, 1] or null}``.
- ``preprocessing`` *(required)*: object, a :class:`~MedSegCNNLib.data.preprocessing.PreprocessingPlan`
  (``target_spacing``, ``crop_to_nonzero``, ``normalization``: one entry per channel, ``image_interpolation``,
  ``spatial_dims``: the card's), or, with ``"kind": "nnunet"``, an imported nnU-Net model's
  :class:`~MedSegCNNLib.data.nnunet.plan.NnUNetPlan` (its ``normalization`` also one entry per channel, its
  configuration of the card's ``spatial_dims``).
- ``training``: object, how the weights were made (:class:`TrainingRecord`); every key is optional (or null); other
  keys are reported in a warning and not used. A MedSegCNN training run writes ``weights`` (``"final"`` or
  ``"best"``), ``dataset``,
  ``train_cases`` and ``val_cases`` (lists of non-empty strings), ``fold`` (integer >= 0), ``folds`` (integer
  >= 2), ``epochs_done`` (integer >= 0), ``seed`` (integer), ``world_size`` (integer >= 1), ``config`` and
  ``plan`` (objects of any JSON values: the training configuration and plan) and ``validation``: null or an
  object with ``mean_dice`` and ``best_mean_dice`` (numbers), ``dice`` (an object mapping label values to
  numbers), ``epoch`` and ``best_epoch`` (integers >= 0) and ``source`` (a string), all optional. An imported
  nnU-Net model has ``dataset``, ``source``, ``trainer``, ``plans``, ``configuration``, ``checkpoint`` and
  ``postprocessing`` (strings) and ``folds`` (a list of fold names). Non-finite numbers are stored as the strings
  ``"nan"``, ``"inf"``, ``"-inf"``.
- ``licence``: null or ``{"spdx": string or null, "text": string or null}`` (:class:`Licence`): the licence of
  the weights as an SPDX identifier or expression (at most :data:`MAX_SPDX_CHARS` characters of letters,
  digits, ``.+-:()`` and spaces) and free text (at most :data:`MAX_LICENCE_TEXT_CHARS` characters, no control
  characters but line breaks and tabs); either may be empty or absent, and an absent licence means unknown.
- ``weights`` *(required)*: ``{"file": a file name ending in .safetensors (no folder), "sha256": 64 lowercase
  hexadecimal digits}``.

Every malformed value is refused with one :class:`InputError` naming the card and the field. **Unknown top-level
keys** (e.g. written by a newer MedSegCNN of the same format version) are accepted with a logged warning naming
them; they are kept and written back unchanged by :meth:`ModelCard.to_dict`, but never used. Unknown keys inside
``training`` (and its ``validation``) or ``licence`` are reported in a warning and not used; inside ``weights``, a
label or ``preprocessing`` they are errors.

**Size bounds.** Before a network is allocated, loading (:func:`~MedSegCNNLib.checkpoint.load_model`) counts its
parameters and the bytes of the feature maps (every layer's output, float32) of one ``patch_size`` window,
exactly, on torch's "meta" device, and refuses models beyond :data:`MAX_PARAMETERS` or
:data:`MAX_WINDOW_FEATURE_BYTES` (:func:`check_model_size`) unless ``allow_large=True`` (``medsegcnn predict
--allow-large-model``). The weights file must not be larger than that network's tensors can take.

**Zip models** are read by streaming, their sizes capped and their SHA-256 checked (:mod:`.model_archive`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

import numpy as np

from .._version import __version__
from ..data.nnunet.plan import KIND as NNUNET_KIND
from ..data.nnunet.plan import NnUNetPlan
from ..data.preprocessing import PreprocessingPlan
from ..errors import InputError
from ..image.core import LabelInfo
from ..records import record_from_dict
from .model_archive import ModelFiles, opened_model_files

logger = logging.getLogger(__name__)

MODEL_FORMAT = "medsegcnn-model"
MODEL_FORMAT_VERSION = 1
MAX_PARAMETERS = 2**28
"""Most network parameters loaded without ``allow_large`` (268 million, 1 GiB in float32): about 8 times the
default nnU-Net-style 3D U-Net (31 million)."""
MAX_WINDOW_FEATURE_BYTES = 16 * 2**30
"""Most bytes of feature maps (every layer's output, float32) for one window loaded without ``allow_large``:
the default 3D U-Net on a 128³ window needs 3 GiB, a residual U-Net on a 160 x 224 x 192 window 12 GiB."""
MAX_SPDX_CHARS = 200
"""Longest SPDX licence identifier or expression in a card (characters)."""
MAX_LICENCE_TEXT_CHARS = 4000
"""Longest licence text in a card (characters)."""
_SPDX = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+:() -]*")
_SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+:-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NON_FINITE = ("nan", "inf", "-inf")
_MAX_CHANNELS = 256
_MAX_LABELS = 32768
_MAX_SIDE = 65536
_MAX_WINDOW_VOXELS = 2**40
_MAX_LEVELS = 16
_MAX_FEATURES = 65536
_MAX_BLOCKS = 64
_SAVED_KEYS = ("format", "format_version", "library_version", "created", "weights")
_CONTENT_KEYS = (
    "name",
    "network",
    "spatial_dims",
    "patch_size",
    "channels",
    "labels",
    "preprocessing",
    "training",
    "licence",
)
_REQUIRED_CONTENT = ("network", "spatial_dims", "patch_size", "channels", "labels", "preprocessing")
_TEXT_KEYS = ("title", "description")
_KNOWN_KEYS = frozenset(_SAVED_KEYS + _CONTENT_KEYS + _TEXT_KEYS)
_REPORTED_UNKNOWN: set[tuple[str, tuple[str, ...]]] = set()  # (card, unknown fields) already warned about


@dataclass(frozen=True)
class WeightsFile:
    """The weights a card names: ``file`` (beside the card) and its hex ``sha256``."""

    file: str
    sha256: str


@dataclass(frozen=True)
class ValidationSummary:
    """The validation Dice of a model's weights: ``mean_dice`` (over the foreground labels) and ``dice`` (label
    value -> Dice) measured at ``epoch``, the run's best ``best_mean_dice`` at ``best_epoch``, and ``source``
    (how it was measured, free text). ``None``: not recorded; Dice may be ``nan`` (undefined)."""

    epoch: int | None = None
    mean_dice: float | None = None
    dice: Mapping[int, float] | None = None
    best_epoch: int | None = None
    best_mean_dice: float | None = None
    source: str | None = None
    given_keys: tuple[str, ...] = field(init=False, default=(), compare=False, repr=False)
    """The keys of the card's object in their order, ``null`` ones included (written back so)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dice", _frozen(self.dice))

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON data (recorded fields only; non-finite Dice as strings)."""
        return _record_data(self)


@dataclass(frozen=True)
class TrainingRecord:
    """The card's ``training`` section: how the weights were made (see the module docstring); ``None``: not
    recorded.

    A MedSegCNN training run records ``weights`` ("final" or "best"), ``dataset``, ``train_cases`` and
    ``val_cases``, ``fold`` (``None``: trained on all cases), ``folds`` (the number of cross-validation folds),
    ``epochs_done``, ``seed``, ``world_size`` (processes), ``config`` and ``plan`` (read-only JSON data: the
    training configuration and plan with the steps done) and ``validation``. An imported nnU-Net model records
    ``dataset``, ``source`` ("nnU-Net v2"), ``trainer``, ``plans``, ``configuration``, ``folds`` (the names of
    the folds averaged), ``checkpoint`` and ``postprocessing``.
    """

    weights: str | None = None
    dataset: str | None = None
    train_cases: tuple[str, ...] | None = None
    val_cases: tuple[str, ...] | None = None
    fold: int | None = None
    folds: int | tuple[str, ...] | None = None
    epochs_done: int | None = None
    seed: int | None = None
    world_size: int | None = None
    config: Mapping[str, Any] | None = None
    validation: ValidationSummary | None = None
    plan: Mapping[str, Any] | None = None
    source: str | None = None
    trainer: str | None = None
    plans: str | None = None
    configuration: str | None = None
    checkpoint: str | None = None
    postprocessing: str | None = None
    given_keys: tuple[str, ...] = field(init=False, default=(), compare=False, repr=False)
    """The keys of the card's object in their order, ``null`` ones included (written back so)."""

    def __post_init__(self) -> None:
        for name in ("config", "plan"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON data (recorded fields only)."""
        return _record_data(self)


@dataclass(frozen=True)
class Licence:
    """The licence of a model's weights: ``spdx``, an SPDX licence identifier or expression (e.g.
    ``"CC-BY-NC-SA-4.0"``), and ``text``, free text (the terms, where they are, the source's own words); either
    may be empty. A card without one says the licence is unknown."""

    spdx: str = ""
    text: str = ""

    @classmethod
    def parse(cls, value: str) -> Licence | None:
        """The licence a user gives as one string (``--licence``): a single SPDX identifier (letters, digits,
        ``.+-:``, no spaces, e.g. ``CC-BY-4.0``) is the ``spdx``, anything else the ``text``; blank gives ``None``;
        text too long or with control characters raises :class:`InputError`."""
        value = value.strip()
        if not value:
            return None
        if len(value) <= MAX_SPDX_CHARS and _SPDX_ID.fullmatch(value):
            return cls(spdx=value)
        if len(value) > MAX_LICENCE_TEXT_CHARS or _CONTROL.search(value):
            raise InputError(
                f"--licence must be an SPDX identifier (e.g. CC-BY-4.0) or up to {MAX_LICENCE_TEXT_CHARS:,} "
                f"characters of text without control characters; got {len(value):,} characters."
            )
        return cls(text=value)

    def describe(self) -> str:
        """One line for listings: the SPDX identifier and the text's first line, or ``"unknown"``."""
        first_line = self.text.strip().splitlines()[0] if self.text.strip() else ""
        if self.spdx and first_line:
            return f"{self.spdx} ({first_line})"
        return self.spdx or first_line or "unknown"

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON data."""
        return {"spdx": self.spdx or None, "text": self.text or None}


@dataclass(frozen=True)
class ModelCard:
    """A validated model card (see the module docstring for the schema).

    Make one with :meth:`from_dict` (a card read from a file) or :meth:`new` (a card about to be saved, without
    the fields :func:`~MedSegCNNLib.checkpoint.save_model` fills in: ``weights``, ``library_version``,
    ``created``); both validate, the constructor does not. ``labels`` holds every label, background (value 0)
    first, in value order. ``network`` and ``extra`` (unknown top-level keys, kept) are read-only
    JSON data (mappings and tuples); :meth:`to_dict` and :meth:`network_config` give plain copies.
    """

    network: Mapping[str, Any]
    spatial_dims: int
    patch_size: tuple[int, ...]
    channels: tuple[str, ...]
    labels: tuple[LabelInfo, ...]
    preprocessing: PreprocessingPlan | NnUNetPlan
    training: TrainingRecord | None = None
    licence: Licence | None = None
    name: str | None = None
    title: str | None = None
    description: str | None = None
    library_version: str | None = None
    created: str | None = None
    weights: WeightsFile | None = None
    format_version: int = MODEL_FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("network", "extra"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @classmethod
    def from_dict(cls, data: Any, where: str | PurePath) -> ModelCard:
        """The card of the JSON data read from ``where`` (a file, named in errors); every malformed field raises
        :class:`InputError` naming ``where`` and the field."""
        return _parse(data, str(where), saved=True)

    @classmethod
    def new(cls, data: Mapping[str, Any], where: str = "being saved") -> ModelCard:
        """A card to be saved, from plain Python data: tuples, numpy scalars, paths, integer keys and non-finite
        floats are turned into JSON data first; ``format``, ``format_version``, ``library_version``,
        ``created`` and ``weights`` are dropped (saving fills them in)."""
        return _parse(_json_data(data, "card"), where, saved=False)

    @property
    def foreground_labels(self) -> tuple[LabelInfo, ...]:
        """The labels except the background (value 0)."""
        return tuple(label for label in self.labels if label.value != 0)

    def network_config(self) -> dict[str, Any]:
        """A plain, mutable copy of the network configuration (for ``build_network``)."""
        return _thawed(self.network)

    def updated(self, **fields: Any) -> ModelCard:
        """A new card (see :meth:`new`) with the top-level ``fields`` replaced by the given JSON data."""
        return ModelCard.new({**self.to_dict(), **fields})

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON data, in the layout and key order of ``model.json`` (absent optional fields are left
        out; the saved fields only once saved)."""
        data: dict[str, Any] = {"format": MODEL_FORMAT, "format_version": self.format_version}
        if self.library_version is not None:
            data["library_version"] = self.library_version
        if self.created is not None:
            data["created"] = self.created
        if self.name is not None:
            data["name"] = self.name
        data |= {
            "network": _thawed(self.network),
            "spatial_dims": self.spatial_dims,
            "patch_size": list(self.patch_size),
            "channels": list(self.channels),
            "labels": {
                str(label.value): {"name": label.name, "color": None if label.color is None else list(label.color)}
                for label in self.labels
            },
            "preprocessing": self.preprocessing.to_dict(),
        }
        if self.training is not None:
            data["training"] = self.training.to_dict()
        if self.licence is not None:
            data["licence"] = self.licence.to_dict()
        data |= {key: getattr(self, key) for key in _TEXT_KEYS if getattr(self, key) is not None}
        data |= _thawed(self.extra)
        if self.weights is not None:
            data["weights"] = {"file": self.weights.file, "sha256": self.weights.sha256}
        return data


def check_model_size(path: str | PurePath, card: ModelCard, *, parameters: int, feature_bytes: int | None) -> None:
    """Refuse (:class:`InputError`) a model whose network has more than :data:`MAX_PARAMETERS` parameters or
    whose feature maps for one window take more than :data:`MAX_WINDOW_FEATURE_BYTES` bytes (``None``: not
    measured yet)."""
    if parameters > MAX_PARAMETERS:
        need = f"its network has {parameters:,} parameters (limit {MAX_PARAMETERS:,})"
    elif feature_bytes is not None and feature_bytes > MAX_WINDOW_FEATURE_BYTES:
        window = " x ".join(map(str, card.patch_size))
        need = (
            f"one {window} window needs {_gib(feature_bytes)} of feature maps (limit {_gib(MAX_WINDOW_FEATURE_BYTES)})"
        )
    else:
        return
    raise InputError(
        f"The model {path} is too large to load safely: {need}; if you trust it and have the memory, pass "
        "--allow-large-model (allow_large=True in Python)."
    )


def read_model_card(path: str | Path, *, require_weights: bool = False) -> ModelCard:
    """The validated card of a model folder, its ``model.json`` or a ``.zip`` (no weights are read).

    With ``require_weights``, a card whose weights file is absent raises :class:`InputError` too (the file is
    looked up, not read or hashed).
    """
    with opened_model(path) as model:
        if require_weights and not model.has_weights():
            raise InputError(
                f"The weights file {model.card.weights.file} named by the model card of {path} is missing; the "
                "model is incomplete (copy the whole model folder)."
            )
        return model.card


@dataclass(frozen=True)
class OpenedModel:
    """A model whose card is read and validated (:func:`opened_model`); its weights are read on demand.

    ``path``: the model as given; ``where``: where its card was read (the card file, or
    ``archive.zip:folder/model.json``), for messages.
    """

    card: ModelCard
    files: ModelFiles

    @property
    def path(self) -> Path:
        return self.files.path

    @property
    def where(self) -> str:
        return self.files.where

    def has_weights(self) -> bool:
        """Whether the weights file the card names exists (looked up, not read)."""
        return self.files.has(self.card.weights.file)

    def weights_file(self, max_bytes: int | None) -> Path:
        """The weights file, checked before it is used: no larger than ``max_bytes`` (``None``: no cap) and with
        the card's SHA-256 (:meth:`.model_archive.ModelFiles.checked_file`)."""
        return self.files.checked_file(self.card.weights.file, self.card.weights.sha256, max_bytes)


@contextlib.contextmanager
def opened_model(path: str | Path) -> Iterator[OpenedModel]:
    """Yield the :class:`OpenedModel` of a model folder, its ``model.json`` or a ``.zip``
    (:func:`.model_archive.opened_model_files`). Unreadable, unsafe, pickled, malformed or unsupported models raise
    :class:`InputError`."""
    with opened_model_files(path) as files:
        yield OpenedModel(ModelCard.from_dict(files.card_data, files.where), files)


# ----- validation -----------------------------------------------------------------------------------------------


def _parse(data: Any, where: str, *, saved: bool) -> ModelCard:
    """The :class:`ModelCard` of JSON ``data``; ``saved``: a card read from a file (with the saved fields)."""
    if not isinstance(data, dict) or (saved and data.get("format") != MODEL_FORMAT):
        raise InputError(f'{where} is not a MedSegCNN model card (no "format": "{MODEL_FORMAT}").')
    check = _Checker(where)
    saved_fields: dict[str, Any] = {}
    if saved:
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InputError(f"{where} has an invalid format_version {version!r} (corrupted?).")
        if version > MODEL_FORMAT_VERSION:
            raise InputError(
                f"{where} was written by a newer MedSegCNN (model format {version}; this is {__version__}, which "
                f"reads format {MODEL_FORMAT_VERSION}); upgrade MedSegCNN."
            )
    required = ("library_version", "created", *_REQUIRED_CONTENT) if saved else _REQUIRED_CONTENT
    missing = [key for key in required if data.get(key) is None]
    if missing:
        check.fail_missing(missing)
    if saved:
        saved_fields = {
            "format_version": version,
            "weights": _weights_entry(data.get("weights"), where),
            "library_version": check.text("library_version", data["library_version"]),
            "created": check.timestamp("created", data["created"]),
        }
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown and (where, tuple(unknown)) not in _REPORTED_UNKNOWN:  # once per card and process
        _REPORTED_UNKNOWN.add((where, tuple(unknown)))
        logger.warning(
            "The model card %s has unknown field(s) %s (written by a newer MedSegCNN?); they are kept but not used.",
            where,
            ", ".join(unknown),
        )
    dims = check.choice("spatial_dims", data["spatial_dims"], (2, 3))
    channels = check.channels(data["channels"])
    labels = check.labels(data["labels"])
    return ModelCard(
        network=check.network(data["network"], dims, len(channels), *check.outputs(data["preprocessing"], labels)),
        spatial_dims=dims,
        patch_size=check.patch_size(data["patch_size"], dims),
        channels=channels,
        labels=labels,
        preprocessing=check.preprocessing(data["preprocessing"], dims, len(channels)),
        training=check.training(data.get("training")),
        licence=check.licence(data.get("licence")),
        name=check.text("name", data.get("name")),
        title=check.text("title", data.get("title")),
        description=check.text("description", data.get("description")),
        extra={key: data[key] for key in unknown},
        **saved_fields,
    )


def _weights_entry(weights: Any, where: str) -> WeightsFile:
    file = weights.get("file") if isinstance(weights, dict) else None
    sha256 = weights.get("sha256") if isinstance(weights, dict) else None
    if not isinstance(file, str) or file != PurePath(file).name or "\\" in file or not file.endswith(".safetensors"):
        raise InputError(f"{where} names no valid weights file (a .safetensors file beside the card); corrupted?")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InputError(f"{where} has no valid SHA-256 for its weights (corrupted?).")
    if set(weights) != {"file", "sha256"}:
        _Checker(where).fail("weights", 'an object with only "file" and "sha256"', weights)
    return WeightsFile(file, sha256)


class _Checker:
    """Checks of the card fields read from ``where``; each failure is one :class:`InputError` line."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field_name: str, expected: str, value: Any) -> NoReturn:
        raise InputError(
            f"Invalid model card {self.where}: {field_name} must be {expected}, not {_shown(value)}; fix the card or "
            "use another model."
        )

    def fail_missing(self, keys: list[str]) -> NoReturn:
        what = f"the required field {keys[0]} is" if len(keys) == 1 else f"the required fields {', '.join(keys)} are"
        raise InputError(f"Invalid model card {self.where}: {what} missing; fix the card or use another model.")

    def integer(self, field_name: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(field_name, f"an integer in {low}..{high}", value)
        return value

    def choice(self, field_name: str, value: Any, choices: tuple[int, ...]) -> int:
        if isinstance(value, bool) or value not in choices:
            self.fail(field_name, " or ".join(map(str, choices)), value)
        return value

    def text(self, field_name: str, value: Any) -> str | None:
        if not (value is None or isinstance(value, str)):
            self.fail(field_name, "a string", value)
        return value

    def timestamp(self, field_name: str, value: Any) -> str:
        try:
            datetime.fromisoformat(value)
        except (TypeError, ValueError):
            self.fail(field_name, "an ISO 8601 date and time", value)
        return value

    def strings(self, field_name: str, value: Any, low: int, high: int | None = None) -> tuple[str, ...]:
        """A list of ``low`` to ``high`` (``None``: any number of) non-empty strings."""
        count = f" {low} to {high}" if high is not None else ""
        if (
            not isinstance(value, list)
            or not low <= len(value) <= (high if high is not None else len(value))
            or not all(isinstance(item, str) and item for item in value)
        ):
            self.fail(field_name, f"a list of{count} non-empty strings", value)
        return tuple(value)

    def channels(self, value: Any) -> tuple[str, ...]:
        return self.strings("channels", value, 1, _MAX_CHANNELS)

    def patch_size(self, value: Any, dims: int) -> tuple[int, ...]:
        expected = f"a list of {dims} integers in 1..{_MAX_SIDE} (spatial_dims is {dims})"
        if not isinstance(value, list) or len(value) != dims:
            self.fail("patch_size", expected, value)
        sizes = tuple(self.integer("patch_size", size, 1, _MAX_SIDE) for size in value)
        if math.prod(sizes) > _MAX_WINDOW_VOXELS:
            self.fail("patch_size", f"at most {_MAX_WINDOW_VOXELS:,} voxels in all", value)
        return sizes

    def labels(self, value: Any) -> tuple[LabelInfo, ...]:
        expected = f'an object mapping "0", "1", ... (2 to {_MAX_LABELS} consecutive label values) to labels'
        if not isinstance(value, dict) or not 2 <= len(value) <= _MAX_LABELS:
            self.fail("labels", expected, value)
        if set(value) != {str(number) for number in range(len(value))}:
            self.fail("labels", expected + " (keys 0 .. K-1)", sorted(value))
        labels = []
        for key in sorted(value, key=int):
            entry, field_name = value[key], f'labels["{key}"]'
            if not isinstance(entry, dict) or not set(entry) <= {"name", "color"}:
                self.fail(field_name, 'an object with "name" and "color"', entry)
            name, color = entry.get("name"), entry.get("color")
            if not isinstance(name, str) or not name:
                self.fail(f"{field_name}.name", "a non-empty string", name)
            if color is not None and not (
                isinstance(color, list) and len(color) == 3 and all(_is_number(c) and 0.0 <= c <= 1.0 for c in color)
            ):
                self.fail(f"{field_name}.color", "null or three numbers in [0, 1]", color)
            labels.append(LabelInfo(int(key), name, None if color is None else tuple(color)))
        return tuple(labels)

    def network(
        self, value: Any, dims: int, in_channels: int, out_channels: int, outputs_of: str = "label"
    ) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            self.fail("network", "an object (the network configuration)", value)
        missing = [
            f"network.{key}" for key in ("name", "spatial_dims", "in_channels", "out_channels") if key not in value
        ]
        if missing:
            self.fail_missing(missing)
        if not isinstance(value["name"], str) or not value["name"]:
            self.fail("network.name", "a non-empty string", value["name"])
        self.choice("network.spatial_dims", value["spatial_dims"], (dims,))
        if value["in_channels"] != in_channels or isinstance(value["in_channels"], bool):
            self.fail("network.in_channels", f"{in_channels} (one per entry of channels)", value["in_channels"])
        if value["out_channels"] != out_channels or isinstance(value["out_channels"], bool):
            self.fail("network.out_channels", f"{out_channels} (one per {outputs_of})", value["out_channels"])
        features = value.get("features")
        if features is not None:
            if not isinstance(features, list) or not 1 <= len(features) <= _MAX_LEVELS:
                self.fail("network.features", f"a list of 1 to {_MAX_LEVELS} integers", features)
            for number in features:
                self.integer("network.features", number, 1, _MAX_FEATURES)
        if value.get("blocks_per_level") is not None:
            self.integer("network.blocks_per_level", value["blocks_per_level"], 1, _MAX_BLOCKS)
        return value

    def preprocessing(self, value: Any, dims: int, channels: int) -> PreprocessingPlan | NnUNetPlan:
        if not isinstance(value, dict):
            self.fail("preprocessing", "an object (the preprocessing plan)", value)
        if "kind" in value:
            return self.nnunet_plan(value, dims, channels)
        spacing = value.get("target_spacing")
        if spacing is not None and not (
            isinstance(spacing, list)
            and len(spacing) in (2, 3)
            and all(s is None or (_is_number(s) and math.isfinite(s) and s > 0) for s in spacing)
        ):
            self.fail("preprocessing.target_spacing", "null or 2 or 3 positive numbers (or nulls)", spacing)
        normalization = value.get("normalization")
        if not isinstance(normalization, list) or len(normalization) != channels:
            self.fail("preprocessing.normalization", f"a list with one entry per channel ({channels})", normalization)
        if not all(isinstance(entry, dict) for entry in normalization):
            self.fail("preprocessing.normalization", "a list of objects", normalization)
        if not isinstance(value.get("crop_to_nonzero"), bool):
            self.fail("preprocessing.crop_to_nonzero", "true or false", value.get("crop_to_nonzero"))
        self.choice("preprocessing.spatial_dims", value.get("spatial_dims"), (dims,))
        try:
            return PreprocessingPlan.from_dict(value)
        except (InputError, TypeError, ValueError) as error:
            reason = str(error).rstrip(".")
            raise InputError(
                f"Invalid model card {self.where}: preprocessing: {reason}; fix the card or use another model."
            ) from None

    def outputs(self, preprocessing: Any, labels: tuple[LabelInfo, ...]) -> tuple[int, str]:
        """The network's output channels: one per label, or one per region of a region-based nnU-Net model (whose
        ``regions_class_order`` must paint foreground labels of the card), and what they are one per."""
        if not isinstance(preprocessing, dict) or preprocessing.get("kind") != NNUNET_KIND:
            return len(labels), "label"
        regions = preprocessing.get("regions_class_order")
        if regions is None:
            return len(labels), "label"
        values = {label.value for label in labels if label.value != 0}
        if (
            not isinstance(regions, list)
            or not regions
            or not all(isinstance(value, int) and not isinstance(value, bool) and value in values for value in regions)
        ):
            self.fail("preprocessing.regions_class_order", f"foreground label values of the card {sorted(values)}",
                      regions)  # fmt: skip
        return len(regions), "region"

    def nnunet_plan(self, value: dict[str, Any], dims: int, channels: int) -> NnUNetPlan:
        if value["kind"] != NNUNET_KIND:
            self.fail("preprocessing.kind", f"{NNUNET_KIND!r} (or no kind: MedSegCNN's own plan)", value["kind"])
        try:
            plan = NnUNetPlan.from_dict(value)
        except (InputError, TypeError, ValueError) as error:
            reason = str(error).rstrip(".")
            raise InputError(
                f"Invalid model card {self.where}: preprocessing: {reason}; fix the card or import the model again."
            ) from None
        if plan.spatial_dims != dims:
            self.fail("preprocessing.configuration", f"a {dims}D configuration", plan.configuration)
        if plan.num_channels != channels:
            self.fail("preprocessing.normalization", f"a list with one entry per channel ({channels})", value)
        return plan

    def training(self, value: Any) -> TrainingRecord | None:
        if value is None:
            return None
        text, cases, json_object = self.text, self.cases, self.json_object
        checks = {
            **dict.fromkeys(("weights", "dataset", "source", "trainer", "plans", "configuration"), text),
            **dict.fromkeys(("checkpoint", "postprocessing"), text),
            "train_cases": cases,
            "val_cases": cases,
            "fold": self.count,
            "folds": self.folds,
            "epochs_done": self.count,
            "seed": lambda name, item: self.whole(name, item, None),
            "world_size": lambda name, item: self.whole(name, item, 1),
            "config": json_object,
            "plan": json_object,
            "validation": self.validation,
        }
        return self.record(TrainingRecord, "training", value, checks)

    def validation(self, field_name: str, value: Any) -> ValidationSummary:
        checks = {
            "epoch": self.count,
            "mean_dice": self.score,
            "dice": self.dice,
            "best_epoch": self.count,
            "best_mean_dice": self.score,
            "source": self.text,
        }
        return self.record(ValidationSummary, field_name, value, checks)

    def count(self, field_name: str, value: Any) -> int:
        return self.whole(field_name, value, 0)

    def whole(self, field_name: str, value: Any, low: int | None) -> int:
        """An integer of at least ``low`` (``None``: any integer)."""
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            self.fail(field_name, "an integer" if low is None else f"an integer >= {low}", value)
        return value

    def cases(self, field_name: str, value: Any) -> tuple[str, ...]:
        return self.strings(field_name, value, 0)

    def folds(self, field_name: str, value: Any) -> int | tuple[str, ...]:
        """The number of folds of a MedSegCNN run, or the fold names of an imported nnU-Net model."""
        if isinstance(value, list):
            return self.strings(field_name, value, 1)
        return self.whole(field_name, value, 2)

    def json_object(self, field_name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field_name, "an object", value)
        return value

    def score(self, field_name: str, value: Any) -> float:
        if not _is_score(value):
            self.fail(field_name, "a number", value)
        return float(value)

    def dice(self, field_name: str, value: Any) -> dict[int, float]:
        if not isinstance(value, dict) or not all(key.isdigit() and _is_score(v) for key, v in value.items()):
            self.fail(field_name, "an object mapping label values to numbers", value)
        return {int(key): float(v) for key, v in value.items()}

    def licence(self, value: Any) -> Licence | None:
        if value is None:
            return None
        return self.record(Licence, "licence", value, {"spdx": self.spdx, "text": self.licence_text})

    def spdx(self, field_name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > MAX_SPDX_CHARS or (value and not _SPDX.fullmatch(value)):
            expected = f"an SPDX licence identifier or expression (up to {MAX_SPDX_CHARS} characters)"
            self.fail(field_name, expected, value)
        return value

    def licence_text(self, field_name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > MAX_LICENCE_TEXT_CHARS or _CONTROL.search(value):
            self.fail(field_name, f"text of up to {MAX_LICENCE_TEXT_CHARS:,} characters without control characters",
                      value)  # fmt: skip
        return value

    def record(
        self, cls: type[_Record], field_name: str, value: Any, checks: Mapping[str, Callable[[str, Any], Any]]
    ) -> _Record:
        """The record ``cls`` of the object ``value`` (the card's ``field_name``): every non-null value of a known
        key passes its check (named ``field_name.key``); nulls leave the field's default; unknown keys are reported
        once in a warning and not used (as the card's own unknown fields are: a newer MedSegCNN may write more)."""
        if not isinstance(value, dict):
            self.fail(field_name, "an object", value)
        known = {item.name for item in fields(cls) if item.init}
        unknown = sorted(set(value) - known)
        if unknown and (f"{self.where} {field_name}", tuple(unknown)) not in _REPORTED_UNKNOWN:
            _REPORTED_UNKNOWN.add((f"{self.where} {field_name}", tuple(unknown)))
            logger.warning(
                "The model card %s has unknown field(s) %s in its %s section (written by a newer MedSegCNN?); they "
                "are not used.", self.where, ", ".join(unknown), field_name,
            )  # fmt: skip
        value = {key: item for key, item in value.items() if key in known}
        given = {
            key: checks[key](f"{field_name}.{key}", item) if key in checks else item
            for key, item in value.items()
            if item is not None or key not in checks
        }
        try:
            record = record_from_dict(cls, given, f"{field_name} section")
        except InputError as error:
            raise InputError(
                f"Invalid model card {self.where}: {str(error).rstrip('.')}; fix the card or use another model."
            ) from None
        if any(item.name == "given_keys" for item in fields(cls)):
            object.__setattr__(record, "given_keys", tuple(value))
        return record


_Record = TypeVar("_Record")


def _record_data(record: TrainingRecord | ValidationSummary) -> dict[str, Any]:
    """A record's recorded fields as the card's JSON data: those it was read with (``null`` ones too, in their
    order), then the others that are not ``None``."""
    names = [*record.given_keys, *(item.name for item in fields(record) if item.init)]
    data = {}
    for name in dict.fromkeys(names):
        value = getattr(record, name)
        if value is not None or name in record.given_keys:
            data[name] = value.to_dict() if isinstance(value, ValidationSummary) else _json_data(value, name)
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_score(value: Any) -> bool:
    """A number as JSON stores it here: finite, or one of the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    return _is_number(value) or value in _NON_FINITE


def _shown(value: Any) -> str:
    """``value`` as JSON text, shortened to about 60 characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def _frozen(value: Any) -> Any:
    """JSON data made read-only: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


def _thawed(value: Any) -> Any:
    """The plain (mutable) JSON data of :func:`_frozen` data."""
    if isinstance(value, Mapping):
        return {key: _thawed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thawed(item) for item in value]
    return value


def _json_data(value: Any, where: str) -> Any:
    """``value`` as JSON data: tuples become lists, integer keys strings, paths strings, numpy scalars Python
    numbers and non-finite floats the strings ``"inf"``, ``"-inf"``, ``"nan"``; other objects (tensors, arrays)
    raise :class:`InputError` naming ``where`` they are."""
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
        return [_json_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        converted = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int | np.integer):
                raise InputError(f"Model card key {key!r} in {where} is not a string or an integer.")
            converted[str(key)] = _json_data(item, f"{where}[{key!r}]")
        return converted
    raise InputError(
        f"Model card entry {where} is a {type(value).__name__}, which JSON cannot hold; convert it to numbers, "
        "strings, lists or dicts (e.g. with .tolist())."
    )
