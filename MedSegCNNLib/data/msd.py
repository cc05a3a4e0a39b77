"""Medical Segmentation Decathlon dataset descriptions (``dataset.json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError

DATASET_JSON = "dataset.json"


def read_label_names(dataset_json: str | os.PathLike[str]) -> dict[int, str]:
    """Label value → name from the ``"labels"`` object of an MSD ``dataset.json`` (background 0 included).

    Accepts both MSD's ``{"1": "Anterior"}`` and nnU-Net v2's ``{"Anterior": 1}`` orientation.
    """
    path = Path(dataset_json)
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; give the path of a dataset.json file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"Could not read {path} as JSON: {error}.") from None
    labels = description.get("labels") if isinstance(description, dict) else None
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
