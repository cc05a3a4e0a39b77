"""Medical Segmentation Decathlon and nnU-Net v2 dataset descriptions (``dataset.json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath
from typing import Any

from ..errors import InputError
from ..image.io import case_name

DATASET_JSON = "dataset.json"


def read_label_names(dataset_json: str | os.PathLike[str]) -> dict[int, str]:
    """Label value → name from the ``"labels"`` object of an MSD ``dataset.json`` (background 0 included).

    Accepts both MSD's ``{"1": "Anterior"}`` and nnU-Net v2's ``{"Anterior": 1}`` orientation.
    """
    path = Path(dataset_json)
    labels = read_description(path).get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(f'{path} has no "labels" object mapping label values to names.')
    names: dict[int, str] = {}
    for key, value in labels.items():
        value_text, name = (key, value) if str(key).strip().lstrip("-").isdigit() else (value, key)
        try:
            label = int(value_text)
        except (TypeError, ValueError):
            raise InputError(f"{path}: label {key!r}: {value!r} is not a value-to-name pair.") from None
        if label < 0:
            raise InputError(f"{path}: label values must be >= 0, got {label}.")
        names[label] = str(name)
    return names


def find_dataset_json(folder: str | os.PathLike[str]) -> Path | None:
    """The ``dataset.json`` of an MSD-layout folder (``labelsTr/`` → its parent's file), if there is one."""
    folder = Path(folder)
    for candidate in (folder / DATASET_JSON, folder.parent / DATASET_JSON):
        if candidate.is_file():
            return candidate
    return None


def read_description(dataset_json: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a ``dataset.json`` file (MSD or nnU-Net v2)."""
    path = Path(dataset_json)
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; give the path of a dataset.json file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"Could not read {path} as JSON: {error}.") from None
    if not isinstance(description, dict):
        raise InputError(f'{path} must hold a JSON object with at least a "labels" entry.')
    return description


def read_channel_names(description: dict[str, Any], path: Path) -> tuple[str, ...] | None:
    """Input channel names in channel order: nnU-Net v2's ``"channel_names"`` or MSD's ``"modality"``.

    ``None`` when the description has neither; ``path`` is only used in error messages.
    """
    key = "channel_names" if "channel_names" in description else "modality" if "modality" in description else None
    if key is None:
        return None
    entries = description[key]
    if not isinstance(entries, dict) or not entries:
        raise InputError(f'{path}: "{key}" must map channel indices ("0", "1", ...) to names.')
    try:
        indexed = sorted((int(index), str(name)) for index, name in entries.items())
    except ValueError:
        raise InputError(f'{path}: "{key}" keys must be channel indices "0", "1", ...') from None
    if [index for index, _ in indexed] != list(range(len(indexed))):
        raise InputError(f'{path}: "{key}" must number channels 0, 1, ... without gaps.')
    return tuple(name for _, name in indexed)


def is_nnunet_v2(description: dict[str, Any]) -> bool:
    """True for an nnU-Net v2 description (``"channel_names"`` and ``"file_ending"``, no ``"training"`` list)."""
    return "training" not in description and ("channel_names" in description or "file_ending" in description)


def read_training_cases(description: dict[str, Any], folder: Path) -> list[tuple[str, tuple[Path, ...], Path]]:
    """``(case name, image files, label file)`` for each entry of an MSD ``"training"`` list.

    Paths are relative to ``folder`` and must stay inside it as written: an absolute path, or one whose ``..``
    climbs out of ``folder``, is refused by its location (before anything is opened); symlinks inside ``folder``
    are followed wherever they point (datasets are often linked in). An image entry naming ``x.nii.gz`` that is
    absent but stored as channel files ``x_0000.nii.gz``, ``x_0001.nii.gz``, ... (nnU-Net v1) is read as those
    channels. Every file must exist; otherwise :class:`InputError` lists the missing ones.
    """
    entries = description.get("training")
    if not isinstance(entries, list):
        raise InputError(f'{folder / DATASET_JSON}: "training" must be a list of {{"image": ..., "label": ...}}.')
    cases, missing = [], []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise InputError(f'{folder / DATASET_JSON}: training entry {entry!r} needs an "image" path.')
        if not isinstance(entry.get("label"), str):
            raise InputError(f'{folder / DATASET_JSON}: training entry {entry["image"]!r} needs a "label" path.')
        image, label = (_inside(folder, entry[key], key) for key in ("image", "label"))
        images = (image,) if image.exists() else _channel_files(image)
        missing += [str(path) for path in (*images, label) if not path.exists()]
        cases.append((case_name(image), images, label))
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise InputError(
            f"{folder / DATASET_JSON} lists files that do not exist: {shown}. Restore them or remove their entries."
        )
    return cases


def _inside(folder: Path, written: str, key: str) -> Path:
    """``folder / written``, or :class:`InputError` when the path ``written`` (an ``"image"`` or ``"label"`` entry)
    is absolute or climbs out of ``folder`` (judged on the text, symlinks not resolved)."""
    relative = PurePath(written)
    if relative.anchor or PurePath(os.path.normpath(relative)).parts[:1] == (os.pardir,):
        raise InputError(
            f'{folder / DATASET_JSON}: the {key} path "{written}" points outside the dataset folder {folder}; '
            "list files inside it by paths relative to it (a symlink inside it may point elsewhere)."
        )
    return folder / relative


def _channel_files(image: Path) -> tuple[Path, ...]:
    """The nnU-Net v1 channel files ``name_0000<ext>``, ... of ``image`` (``(image,)`` when there are none)."""
    name = case_name(image)
    ending = image.name[len(name) :]
    files = []
    while (candidate := image.with_name(f"{name}_{len(files):04d}{ending}")).exists():
        files.append(candidate)
    return tuple(files) or (image,)
