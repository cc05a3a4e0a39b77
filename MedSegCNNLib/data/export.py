"""Training data export: (image, label map) pairs → a dataset folder that ``medsegcnn train --data`` reads.

The folder (MSD ``dataset.json`` with a ``"training"`` list; channel files named as in nnU-Net)::

    FOLDER/
      dataset.json                 name, channel_names (and MSD "modality"), labels {name: value},
                                   numTraining, file_ending, training [{"image", "label"}, ...]
      imagesTr/<case>_0000.nii.gz  one file per input channel: _0000, _0001, ...
      labelsTr/<case>.nii.gz       the label map (smallest fitting integer type)

It is written into a temporary folder beside ``FOLDER`` and renamed into place, so a failure never leaves
a half-written dataset under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder, occupied, write_text_atomic
from ..errors import InputError, OutputExistsError
from ..image.cases import listing
from ..image.core import Image, LabelInfo
from ..image.geometry import Grid, grid_difference
from ..image.io import write_image
from ..image.labels import as_label_array
from .msd import DATASET_JSON

logger = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"
_FOLDER_ENTRIES = frozenset({DATASET_JSON, "imagesTr", "labelsTr"})  # what a folder written here holds
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def write_training_folder(
    pairs: Sequence[tuple[Image, Image]],
    folder: str | os.PathLike[str],
    *,
    labels: Mapping[int, str],
    channel_names: Sequence[str] = ("image",),
    case_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``(image, label map)`` pairs as a training dataset folder (layout in the module docstring).

    Args:
        pairs: one ``(image, label)`` per case; ``image`` has ``len(channel_names)`` channels (channels
            first) and ``label`` is a label map on exactly the image's grid.
        labels: label value → name; 0 is named "background" unless given. Names must be unique and not
            plain numbers (``dataset.json`` maps names to values).
        case_names: file names of the cases (characters other than letters, digits, ``._-`` become
            ``_``); default ``case_000``, ``case_001``, ...
        overwrite: replace a folder this function wrote before; without it an existing non-empty folder
            is refused. A folder holding anything else is never replaced.

    Returns the folder. Raises :class:`InputError` (naming every problem found) before anything is written.
    """
    target = _check_target(Path(folder), overwrite=overwrite)
    channels = _channel_names(channel_names)
    names = _label_names(labels)
    pairs = list(pairs)
    if not pairs:
        raise InputError("No training pairs given; add at least one (image, label map) pair to export.")
    cases = _case_names(case_names, len(pairs))
    label_arrays = _check_pairs(pairs, cases, len(channels), names)
    with atomic_folder(target, overwrite=True) as partial:
        images = [image for image, _ in pairs]
        _write_folder(partial, images, label_arrays, cases, channels, names, dataset_name=target.name)
    logger.info("Wrote %d training case(s) to %s.", len(cases), target)
    return target


def _check_target(folder: Path, *, overwrite: bool) -> Path:
    if occupied(folder) and not folder.is_dir():
        raise InputError(f"{folder} is a file (or a link to a missing one); give a folder for the training data.")
    if not folder.parent.is_dir():
        raise InputError(f"Folder {folder.parent} does not exist; create it first.")
    entries = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    if entries and not overwrite:
        raise OutputExistsError(f"Folder {folder} is not empty; choose another folder or pass overwrite=True.")
    foreign = [name for name in entries if name not in _FOLDER_ENTRIES]
    if foreign:
        raise InputError(
            f"Folder {folder} holds other files than training data (e.g. {foreign[0]}), so it is not replaced; "
            "choose an empty or new folder."
        )
    return folder


def _channel_names(channel_names: Sequence[str]) -> tuple[str, ...]:
    names = (channel_names,) if isinstance(channel_names, str) else tuple(channel_names)
    if not names or not all(isinstance(name, str) and name.strip() for name in names):
        raise InputError(f"Give one non-empty name per input channel, e.g. ('CT',); got {channel_names!r}.")
    if len(set(names)) != len(names):
        raise InputError(f"Channel names must be unique; got {list(names)}.")
    return names


def _label_names(labels: Mapping[int, str]) -> dict[int, str]:
    """Value → name with background 0, checked for what ``dataset.json`` can hold."""
    if not isinstance(labels, Mapping) or not labels:
        raise InputError("Give the label names as {value: name}, e.g. {1: 'liver', 2: 'tumour'}.")
    names: dict[int, str] = {}
    for value, name in labels.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InputError(f"Label values must be integers >= 0; got {value!r} (named {name!r}).")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"Label {value} needs a non-empty name; got {name!r}.")
        if name.strip().lstrip("-").isdigit():
            raise InputError(
                f"Label {value} is named {name!r}, a plain number; dataset.json maps names to values, so rename "
                f"it (e.g. 'label_{name.strip()}')."
            )
        names[int(value)] = name
    names.setdefault(0, "background")
    repeated = sorted({name for name in names.values() if list(names.values()).count(name) > 1})
    if repeated:
        raise InputError(f"Label names must be unique; {listing(repeated)} name several values. Rename them.")
    return dict(sorted(names.items()))


def _case_names(case_names: Sequence[str] | None, count: int) -> list[str]:
    if case_names is None:
        return [f"case_{index:03d}" for index in range(count)]
    if isinstance(case_names, str):
        raise InputError(f"Give the case names as a list, one per pair; got the text {case_names!r}.")
    names = [_UNSAFE_CHARACTERS.sub("_", str(name)).strip("._") for name in case_names]
    if len(names) != count:
        raise InputError(f"Got {len(names)} case names for {count} pairs; give one name per pair.")
    if not all(names):
        raise InputError(f"Case names need a letter or digit; got {list(case_names)}.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"Case names must be unique as file names; {listing(repeated)} repeat. Rename them.")
    return names


def _check_pairs(
    pairs: list[tuple[Image, Image]], cases: list[str], channels: int, names: dict[int, str]
) -> list[np.ndarray]:
    """The integer label arrays of the pairs; every problem of every pair is reported at once."""
    problems, arrays = [], []
    for index, (case, pair) in enumerate(zip(cases, pairs, strict=True)):
        if not isinstance(pair, Sequence) or len(pair) != 2 or not all(isinstance(part, Image) for part in pair):
            raise InputError(f"Pair {index} ({case}) must be (image, label map) Image objects; got {pair!r}.")
        image, label = pair
        if image.num_channels != channels:
            problems.append(
                f"{case}: the image has {image.num_channels} channel(s) but {channels} channel name(s) are given"
            )
        if label.is_multichannel:
            problems.append(f"{case}: the label map has {label.num_channels} channels; give a single label map")
            continue
        if not label.same_grid(image):
            problems.append(
                f"{case}: the label map's grid differs from the image's (label map vs image: "
                f"{grid_difference(Grid.of(label), Grid.of(image))}); resample the segmentation onto "
                "its image (in Slicer: export it with the volume as reference geometry)"
            )
        array = as_label_array(label, allow_whole_floats=True, compact=True, what=f"The label map of case {case}")
        unknown = sorted(set(np.unique(array).tolist()) - set(names))
        if unknown:
            problems.append(f"{case}: label value(s) {', '.join(map(str, unknown))} have no name in labels")
        arrays.append(array)
    if problems:
        raise InputError("Cannot export the training data: " + "; ".join(problems) + ".")
    return arrays


def _write_folder(
    folder: Path,
    images: list[Image],
    label_arrays: list[np.ndarray],
    cases: list[str],
    channels: tuple[str, ...],
    names: dict[int, str],
    *,
    dataset_name: str,
) -> None:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    infos = [LabelInfo(value, name) for value, name in names.items() if value != 0]
    for case, image, label_array in zip(cases, images, label_arrays, strict=True):
        arrays = image.array if image.is_multichannel else image.array[None]
        for channel, array in enumerate(arrays):
            channel_image = Image(array, image.spacing, image.origin, image.direction)
            write_image(channel_image, folder / "imagesTr" / f"{case}_{channel:04d}{FILE_ENDING}")
        label_image = Image(label_array, image.spacing, image.origin, image.direction, labels=infos)  # image's grid
        write_image(label_image, folder / "labelsTr" / f"{case}{FILE_ENDING}")
    description = {
        "name": dataset_name,
        "description": "Training data exported by MedSegCNN",
        "channel_names": {str(index): name for index, name in enumerate(channels)},
        "modality": {str(index): name for index, name in enumerate(channels)},
        "labels": {name: value for value, name in names.items()},
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "training": [
            {"image": f"./imagesTr/{case}{FILE_ENDING}", "label": f"./labelsTr/{case}{FILE_ENDING}"} for case in cases
        ],
    }
    write_text_atomic(folder / DATASET_JSON, json.dumps(description, indent=2) + "\n")
