"""The model registry: the trained models a user can pick by name, described from their model cards alone.

Models come from two places:

- **bundled**: every model in ``Resources/Models``, found beside the package (the source tree, or Slicer's
  scripted-module folder where the extension installs ``MedSegCNNLib`` and ``Resources``), else under the
  current folder;
- **user**: every model directly inside the user's models folder (:func:`user_models_folder`, where the Slicer
  panel imports nnU-Net models) and inside the folders the caller names (``extra_folders``): a model folder
  (holding ``model.json``), a training run folder (holding ``model/model.json``) or a model ``.zip``.

A model's registry name is its folder name (a run folder's name, a ``.zip``'s stem). A model given by its path
has source ``"folder"``. Nothing here imports torch or reads weights: listing is cheap enough for a GUI.
"""

from __future__ import annotations

import html
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from .checkpoint.model_archive import CARD_FILE
from .checkpoint.model_card import Licence, ModelCard, TrainingRecord, ValidationSummary, read_model_card
from .errors import InputError
from .image.core import LabelInfo
from .runtime import user_data_folder

logger = logging.getLogger(__name__)

BUNDLED_MODELS = Path("Resources") / "Models"
Source = Literal["bundled", "user", "folder"]
UNKNOWN_LICENCE = "unknown (the card names none; check the terms of the model's source before using it)"


@dataclass(frozen=True)
class ModelEntry:
    """What a model card says about one model, for choosing a model (CLI, Slicer panel).

    ``name``: registry name; ``path``: the model folder or ``.zip``; ``source``: ``"bundled"``, ``"user"``
    (found in a user folder) or ``"folder"`` (given by path). ``labels``: the non-background labels;
    ``channels``: the input modality names, one per channel. ``spacing``: the spacing (mm, ITK order x, y, z)
    images are resampled to, ``None`` where each image keeps its own (the slice axis of 2D models, or every
    axis). ``patch_size``: voxels, array order. ``mean_dice`` and ``label_dice`` (label value -> Dice): the
    training run's best validation Dice, measured on ``validation_cases`` (``None``/empty: not validated).
    ``licence``: the licence of the weights as the card gives it (``None``: unknown).
    """

    name: str
    path: Path
    source: Source
    title: str
    description: str
    network: str
    dims: int
    channels: tuple[str, ...]
    labels: tuple[LabelInfo, ...]
    spacing: tuple[float | None, ...] | None
    patch_size: tuple[int, ...]
    mean_dice: float | None
    label_dice: Mapping[int, float] = field(default_factory=dict)
    dataset: str | None = None
    training_cases: tuple[str, ...] = ()
    validation_cases: tuple[str, ...] = ()
    library_version: str | None = None
    licence: Licence | None = None

    @property
    def licence_line(self) -> str:
        """The licence in one line, or that it is unknown and where to look."""
        if self.licence is None:
            return UNKNOWN_LICENCE
        return self.licence.describe()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (paths as strings, label values as string keys, non-finite Dice as strings)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "source": self.source,
            "title": self.title,
            "description": self.description,
            "network": self.network,
            "dims": self.dims,
            "channels": list(self.channels),
            "labels": [{"value": label.value, "name": label.name, "color": label.color} for label in self.labels],
            "spacing": None if self.spacing is None else list(self.spacing),
            "patch_size": list(self.patch_size),
            "mean_dice": _json_float(self.mean_dice),
            "label_dice": {str(value): _json_float(dice) for value, dice in self.label_dice.items()},
            "dataset": self.dataset,
            "training_cases": list(self.training_cases),
            "validation_cases": list(self.validation_cases),
            "library_version": self.library_version,
            "licence": None if self.licence is None else self.licence.to_dict(),
        }

    def summary(self) -> str:
        """The model card in a few lines of text: labels, modality, spacing, reported accuracy."""
        names = {label.value: label.name for label in self.labels}
        lines = [
            f"{self.title} ({self.name}, {self.source}): {self.path}",
            *([self.description] if self.description else []),
            f"Network: {self.network} {self.dims}D, patch {' x '.join(map(str, self.patch_size))} voxels (z, y, x)",
            "Labels: " + ", ".join(f"{label.value} {label.name}" for label in self.labels),
            "Modality: " + ", ".join(self.channels),
            f"Spacing: {format_spacing(self.spacing)} (x, y, z)",
            f"Licence: {self.licence_line}",
        ]
        if self.mean_dice is None:
            lines.append("Reported accuracy: none (trained without validation cases)")
        else:
            per_label = ", ".join(f"{names.get(value, value)} {dice:.3f}" for value, dice in self.label_dice.items())
            lines.append(
                f"Reported accuracy: validation mean Dice {self.mean_dice:.3f} ({per_label}) on "
                f"{len(self.validation_cases)} case(s) held out from training"
                + (f" on {self.dataset}" if self.dataset else "")
            )
        return "\n".join(lines)

    def summary_html(self) -> str:
        """The model card as an HTML table (the Slicer panel's Model section): labels with colour swatches, input
        channels (modalities), spacing, network and patch, reported accuracy and location; text is escaped."""
        names = {label.value: label.name for label in self.labels}
        labels = []
        for label in self.labels:
            red, green, blue = (round(255 * c) for c in (label.color or (0.5, 0.5, 0.5)))
            swatch = f'<span style="color:#{red:02x}{green:02x}{blue:02x}">&#9632;</span>'
            labels.append(f"{swatch} {html.escape(label.name)} ({label.value})")
        if self.mean_dice is None:
            accuracy = "none reported (trained without validation cases)"
        else:
            per_label = ", ".join(f"{html.escape(names.get(v, str(v)))} {d:.3f}" for v, d in self.label_dice.items())
            accuracy = f"validation mean Dice {self.mean_dice:.3f}" + (f" ({per_label})" if per_label else "")
            accuracy += f" on {len(self.validation_cases)} held-out case(s)"
        rows = [
            ("Model", html.escape(self.title)),
            *([("About", html.escape(self.description))] if self.description else []),
            ("Labels", ", ".join(labels) or "none"),
            ("Inputs", html.escape(", ".join(self.channels))),
            ("Spacing", f"{format_spacing(self.spacing)} (x, y, z)"),
            ("Network", f"{html.escape(self.network)} {self.dims}D, patch {' x '.join(map(str, self.patch_size))}"),
            ("Accuracy", accuracy),
            ("Licence", html.escape(self.licence_line)),
            ("Location", f"{html.escape(self.source)}: {html.escape(str(self.path))}"),
        ]
        cells = "".join(f"<tr><td><b>{key}</b>&nbsp;</td><td>{value}</td></tr>" for key, value in rows)
        return f"<table>{cells}</table>"


def format_spacing(spacing: Sequence[float | None] | None) -> str:
    """``1 x 1 x 1.5 mm``; ``native`` for an axis (or all) kept at each image's own spacing."""
    if spacing is None:
        return "native"
    return " x ".join("native" if s is None else f"{s:g}" for s in spacing) + " mm"


def bundled_models_folder() -> Path | None:
    """The ``Resources/Models`` folder shipped with MedSegCNN (see the module docstring), or ``None``."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (root / BUNDLED_MODELS).is_dir():
            return root / BUNDLED_MODELS
    return None


def describe_model(
    path: str | os.PathLike[str], *, name: str | None = None, source: Source | None = None
) -> ModelEntry:
    """The :class:`ModelEntry` of the model at ``path``: a model folder, its ``model.json``, a model ``.zip`` or a
    training run folder (holding ``model/``). ``name`` defaults to the folder name (a ``.zip``'s stem);
    ``source`` to ``"bundled"`` for a model inside the bundled folder, else ``"folder"``. Reads only the card;
    a missing model, an unreadable or incomplete card, or missing weights raise :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Model {path} does not exist; give a model folder, its {CARD_FILE} or a model .zip.")
    if path.is_file() and path.name == CARD_FILE:
        path = path.parent
    if path.is_dir() and not (path / CARD_FILE).is_file() and (path / "model" / CARD_FILE).is_file():
        name, path = name or path.name, path / "model"  # a training run folder: its model/
    card = read_model_card(path, require_weights=True)
    return _entry(card, path, name or _default_name(path), source or _source_of(path))


def user_models_folder() -> Path:
    """The user's models folder (not created here): ``models`` in :func:`~MedSegCNNLib.runtime.user_data_folder`."""
    return user_data_folder() / "models"


def list_models(extra_folders: Iterable[str | os.PathLike[str]] = ()) -> list[ModelEntry]:
    """The bundled models, then those in the user's models folder (when it exists), then the models directly inside
    each of ``extra_folders`` (each sorted by name).

    Entries that are not readable models (corrupted cards, missing weights) are skipped with a warning; a
    path in ``extra_folders`` that is not a folder raises :class:`InputError`.
    """
    sources: list[tuple[Path, Source]] = []
    bundled = bundled_models_folder()
    if bundled is not None:
        sources.append((bundled, "bundled"))
    if user_models_folder().is_dir():
        sources.append((user_models_folder(), "user"))
    for folder in extra_folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"Models folder {folder} does not exist or is not a folder; choose an existing folder.")
        sources.append((folder, "user"))
    entries = []
    for folder, source in sources:
        for candidate in sorted(folder.iterdir(), key=lambda p: p.name):
            if not _looks_like_model(candidate):
                continue
            try:
                entries.append(describe_model(candidate, source=source))
            except InputError as error:
                logger.warning("Skipped %s: %s", candidate, error)
    return entries


def find_model(
    name_or_path: str | os.PathLike[str], extra_folders: Iterable[str | os.PathLike[str]] = ()
) -> ModelEntry:
    """The model named ``name_or_path`` in the registry (:func:`list_models`), or at that path.

    An existing path always means that path; a string with no path separator that is not an existing path is
    a registry name. Unknown names, and names that several listed models share, raise :class:`InputError`.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise InputError("No model given; give a registry name (see `medsegcnn models`) or a model folder or .zip.")
    path = Path(text)
    if path.exists() or isinstance(name_or_path, PurePath) or re.search(r"[\\/]", text):
        return describe_model(path)
    entries = list_models(extra_folders)
    matches = [entry for entry in entries if entry.name == text]
    if len(matches) == 1:
        return matches[0]
    if matches:
        where = ", ".join(str(entry.path) for entry in matches)
        raise InputError(f"Several models are named {text!r} ({where}); give the path of the one you mean.")
    available = ", ".join(sorted({entry.name for entry in entries})) or "none"
    raise InputError(
        f"No model named {text!r}; the available models are: {available}. Give one of these names, or the path "
        "of a model folder or .zip."
    )


def resolve_model(name_or_path: str | os.PathLike[str], extra_folders: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """The path (model folder or ``.zip``) of a registry name or a model path; see :func:`find_model`."""
    return find_model(name_or_path, extra_folders).path


def resolve_model_folder(path: str | os.PathLike[str]) -> Path:
    """The model folder for ``path``: itself, a ``.zip``, the ``model/`` inside a training output folder, or
    the folder of a registry name (``medsegcnn models`` lists them) when no such path exists."""
    text = os.fspath(path)
    path = Path(text)
    if text and not path.exists() and "/" not in text and "\\" not in text and not path.suffix:
        return resolve_model_folder(resolve_model(text))
    if path.is_dir() and not (path / CARD_FILE).is_file() and (path / "model" / CARD_FILE).is_file():
        return path / "model"
    return path


# ----- reading the card ---------------------------------------------------------------------------------------


def _looks_like_model(path: Path) -> bool:
    if path.is_dir():
        return (path / CARD_FILE).is_file() or (path / "model" / CARD_FILE).is_file()
    return path.is_file() and path.suffix.lower() == ".zip"


def _default_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _source_of(path: Path) -> Source:
    bundled = bundled_models_folder()
    inside = bundled is not None and path.resolve().parent == bundled.resolve()
    return "bundled" if inside else "folder"


def _entry(card: ModelCard, path: Path, name: str, source: Source) -> ModelEntry:
    """The entry of a validated card."""
    training = card.training or TrainingRecord()
    validation = training.validation or ValidationSummary()
    return ModelEntry(
        name=name,
        path=path,
        source=source,
        title=card.title or name,
        description=card.description or "",
        network=card.network["name"],
        dims=card.spatial_dims,
        channels=card.channels,
        labels=card.foreground_labels,
        spacing=card.preprocessing.target_spacing,
        patch_size=card.patch_size,
        mean_dice=validation.mean_dice,
        label_dice=dict(validation.dice or {}),
        dataset=training.dataset,
        training_cases=training.train_cases or (),
        validation_cases=training.val_cases or (),
        library_version=card.library_version,
        licence=card.licence,
    )


def _json_float(value: float | None) -> float | str | None:
    return value if value is None or math.isfinite(value) else str(value)
