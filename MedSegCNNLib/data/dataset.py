"""Training datasets: which cases there are, where their images and label maps come from, and loading one.

A :class:`Dataset` names its input channels and labels and lists :class:`CaseSource` entries, each holding
files or in-memory :class:`Image` objects. It is built from

- an MSD folder (``dataset.json`` with a ``"training"`` list; a 4D file may hold all modalities) or an
  nnU-Net v2 folder (``imagesTr/case_0000.nii.gz``, ``case_0001...``, ``labelsTr/case.nii.gz``):
  :func:`load_msd_dataset`;
- an image folder and a label folder matched by case name: :func:`dataset_from_folders`;
- (image, label) pairs of paths or images: :func:`dataset_from_pairs` (the Slicer panel's way).

Nothing is read until :func:`load_case` (or :func:`validate_dataset`) needs it, except that label names
are collected from the label maps when neither the caller nor a ``dataset.json`` gives them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..image.cases import list_cases, listing, require_partners
from ..image.core import Image
from ..image.geometry import Grid, physical_overlap, resample_onto
from ..image.integrity import check_header_geometry
from ..image.io import case_name, is_image_path, read_image
from ..image.labels import as_label_array
from ..image.native_stderr import captured_native_stderr
from .msd import (
    DATASET_JSON,
    find_dataset_json,
    is_nnunet_v2,
    read_channel_names,
    read_description,
    read_label_names,
    read_training_cases,
)
from .preprocessing import require_finite

logger = logging.getLogger(__name__)

Source = Path | Image
"""Where one image of a case comes from: a file (or DICOM folder) or an image in memory."""

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net: case_0000, case_0001, ...
_GEOMETRY_TOLERANCE = 1e-3  # label grids this close to their image's (relative, 1e-3 mm floor) adopt it


@dataclass(frozen=True)
class CaseSource:
    """One case: its image sources (one per channel, or one multi-channel file) and its label map, if any."""

    name: str
    images: tuple[Source, ...]
    label: Source | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"A case needs a non-empty name, got {self.name!r}.")
        images = tuple(_as_source(image) for image in _as_tuple(self.images))
        if not images:
            raise InputError(f"Case {self.name} has no image; give at least one image per case.")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "label", None if self.label is None else _as_source(self.label))

    @property
    def in_memory(self) -> bool:
        """True when any of the case's images or its label is an in-memory :class:`Image`."""
        return any(isinstance(source, Image) for source in (*self.images, self.label))

    def to_dict(self) -> dict[str, Any]:
        """Paths as strings; a case with in-memory images is listed by name only."""
        if self.in_memory:
            return {"name": self.name}
        return {
            "name": self.name,
            "images": [str(path) for path in self.images],
            "label": None if self.label is None else str(self.label),
        }


@dataclass(frozen=True)
class Dataset:
    """Named input channels, label values → names (0 = background included) and the cases."""

    name: str
    channel_names: tuple[str, ...]
    label_names: dict[int, str]
    cases: tuple[CaseSource, ...]

    def __post_init__(self) -> None:
        channel_names = tuple(str(name) for name in _as_tuple(self.channel_names))
        if not channel_names:
            raise InputError(f"Dataset {self.name} needs at least one channel name.")
        try:
            label_names = {int(value): str(name) for value, name in dict(self.label_names).items()}
        except (TypeError, ValueError):
            raise InputError(f"Label names of dataset {self.name} must map integer values to names.") from None
        if any(value < 0 for value in label_names):
            raise InputError(f"Label values must be >= 0, got {sorted(label_names)}.")
        label_names.setdefault(0, "background")
        cases = tuple(self.cases)
        if not all(isinstance(case, CaseSource) for case in cases):
            raise InputError("Dataset cases must be CaseSource objects.")
        names = [case.name for case in cases]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InputError(f"Case names must be unique; {listing(repeated)} appear more than once. Rename them.")
        object.__setattr__(self, "channel_names", channel_names)
        object.__setattr__(self, "label_names", dict(sorted(label_names.items())))
        object.__setattr__(self, "cases", cases)

    def subset(self, names: Sequence[str]) -> Dataset:
        """The same dataset with only the cases named in ``names`` (in the dataset's order)."""
        wanted = set(names)
        return replace(self, cases=tuple(case for case in self.cases if case.name in wanted))

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data for the model card (label values as string keys)."""
        return {
            "name": self.name,
            "channel_names": list(self.channel_names),
            "label_names": {str(value): name for value, name in self.label_names.items()},
            "cases": [case.to_dict() for case in self.cases],
        }


# ----- building datasets ----------------------------------------------------------------------------------


def load_dataset(path_or_dataset: str | os.PathLike[str] | Dataset) -> Dataset:
    """A :class:`Dataset` as is; a folder with ``dataset.json`` (or that file) via :func:`load_msd_dataset`;
    a folder with ``imagesTr/`` and ``labelsTr/`` but no ``dataset.json`` via :func:`dataset_from_folders`."""
    if isinstance(path_or_dataset, Dataset):
        return path_or_dataset
    path = Path(path_or_dataset)
    if path.is_file() and path.name == DATASET_JSON:
        path = path.parent
    if (path / DATASET_JSON).is_file():
        return load_msd_dataset(path)
    if (path / "imagesTr").is_dir() and (path / "labelsTr").is_dir():
        return dataset_from_folders(path / "imagesTr", path / "labelsTr")
    raise InputError(
        f"{path} is not a dataset folder: it has neither a {DATASET_JSON} nor imagesTr/ and labelsTr/ folders. "
        "Give an MSD or nnU-Net dataset folder, or build the dataset with dataset_from_folders."
    )


def load_msd_dataset(folder: str | os.PathLike[str]) -> Dataset:
    """The training cases of an MSD or nnU-Net v2 dataset folder (see the module docstring).

    MSD: ``dataset.json`` lists ``"training"`` pairs; ``"modality"`` names the channels. nnU-Net v2:
    ``imagesTr/`` holds ``<case>_<channel:04d><file_ending>`` files, ``"channel_names"`` names the channels.
    Both: ``"labels"`` maps values to names (either orientation).
    """
    folder = Path(folder)
    path = folder / DATASET_JSON
    if not path.is_file():
        raise InputError(f"{folder} has no {DATASET_JSON}; give an MSD or nnU-Net v2 dataset folder.")
    description = read_description(path)
    label_names = read_label_names(path)
    channel_names = read_channel_names(description, path)
    name = str(description.get("name") or folder.name)
    if is_nnunet_v2(description):
        images, labels = folder / "imagesTr", folder / "labelsTr"
        if not images.is_dir() or not labels.is_dir():
            raise InputError(f"{folder} is an nnU-Net v2 dataset but lacks imagesTr/ or labelsTr/.")
        cases = _cases_from_folders(images, labels, channel_files=True)
    else:
        cases = [CaseSource(case, images, label) for case, images, label in read_training_cases(description, folder)]
    if channel_names is None:
        channel_names = _default_channel_names(cases)
    return Dataset(name=name, channel_names=channel_names, label_names=label_names, cases=tuple(cases))


def dataset_from_folders(
    images_dir: str | os.PathLike[str],
    labels_dir: str | os.PathLike[str] | None,
    *,
    channel_names: Sequence[str] | None = None,
    label_names: Mapping[int, str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Cases from an image folder and a label folder, matched by case name (file name without extension).

    Image files named ``<case>_0000``, ``<case>_0001``, ... (nnU-Net) are grouped into the channels of
    ``<case>`` when that matches the label files better than the plain names do (without labels: when the
    numbering is consistent and, if given, matches ``channel_names``). Every label needs its
    image(s) and every image its label, else :class:`InputError` lists the unmatched. ``labels_dir=None``
    gives unlabelled cases. Label names default to a ``dataset.json`` in or beside ``labels_dir``, else to
    the names stored in the label files, else ``label_<value>``; channel names default to ``channel_<i>``.
    """
    labels = None if labels_dir is None else Path(labels_dir)
    cases = _cases_from_folders(
        Path(images_dir), labels, channel_files=None, channels=None if channel_names is None else len(channel_names)
    )
    if label_names is None and labels is not None:
        dataset_json = find_dataset_json(labels)
        label_names = read_label_names(dataset_json) if dataset_json else _label_names_of(cases)
    return Dataset(
        name=name or Path(images_dir).resolve().parent.name or "dataset",
        channel_names=tuple(channel_names) if channel_names is not None else _default_channel_names(cases),
        label_names=dict(label_names or {}),
        cases=tuple(cases),
    )


def dataset_from_pairs(
    pairs: Sequence[tuple[Source | str | Sequence[Source | str], Source | str]],
    *,
    channel_names: Sequence[str] | None = None,
    label_names: Mapping[int, str] | None = None,
    name: str = "dataset",
) -> Dataset:
    """Cases from ``(image or [channel images], label)`` pairs of paths or in-memory :class:`Image` objects.

    A case is named after its first image file, or ``case_<index:03d>`` for an in-memory image. Label
    names default to those stored with the label maps (e.g. Slicer segment names), else ``label_<value>``.
    """
    cases = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise InputError(f"Pair {index} must be (image, label) or ([channel images], label), got {pair!r}.")
        images, label = _as_tuple(pair[0]), pair[1]
        first = _as_source(images[0]) if images else None
        case = case_name(first) if isinstance(first, Path) else f"case_{index:03d}"
        cases.append(CaseSource(case, images, label))
    return Dataset(
        name=name,
        channel_names=tuple(channel_names) if channel_names is not None else _default_channel_names(cases),
        label_names=dict(label_names) if label_names is not None else _label_names_of(cases),
        cases=tuple(cases),
    )


# ----- loading and checking --------------------------------------------------------------------------------


def load_case(case: CaseSource, *, allow_non_finite: bool = False) -> tuple[Image, Image | None]:
    """The case's image as float32 ``(C, z, y, x)`` on its first channel's grid, and its integer label map.

    An image with NaN or ±inf voxels raises :class:`InputError` naming the case and file (training cannot use
    it) unless ``allow_non_finite`` (prediction, which replaces them); a label map with them always does.

    Further channels on another grid are resampled onto the first one (linear; 0 outside). The label map
    is cast to the smallest fitting integer type (float files with whole values are accepted). A label map
    whose grid differs from the image's only by header rounding (same size; spacing, origin and direction
    within 1e-3 relative, 1e-3 absolute) takes the image's grid; any other difference raises
    :class:`InputError`.
    """
    channels = [_read(source) for source in case.images]
    if not allow_non_finite:
        for source, channel in zip(case.images, channels, strict=True):
            require_finite(channel.array, f"case {case.name}: image {_source_text(source)}")
    reference = channels[0]
    arrays = []
    for index, channel in enumerate(channels):
        if channel.spatial_dims != reference.spatial_dims:
            raise InputError(
                f"Image {index} of case {case.name} is {channel.spatial_dims}D but image 0 is "
                f"{reference.spatial_dims}D; all channels of a case must have the same dimension."
            )
        if not channel.same_grid(reference):
            if not physical_overlap(channel, reference):
                raise InputError(
                    f"Image {index} of case {case.name} does not overlap image 0 in physical space; "
                    "check that both belong to the same case and that their headers are right."
                )
            logger.info("Case %s: image %d resampled onto the grid of image 0.", case.name, index)
            channel = resample_onto(channel, reference, "linear", dtype=np.float32)
        arrays.append(channel.array if channel.is_multichannel else channel.array[None])
    stacked = np.concatenate([array.astype(np.float32, copy=False) for array in arrays], axis=0)
    image = Image(stacked, reference.spacing, reference.origin, reference.direction)
    if case.label is None:
        return image, None
    label = _read(case.label)
    array = as_label_array(label, allow_whole_floats=True, compact=True, what=_label_text(case))
    problem = _label_grid_problem(Grid.of(image), Grid.of(label))
    if problem:
        raise InputError(_geometry_message(case.name, problem))
    return image, Image(array, image.spacing, image.origin, image.direction, label.labels)


def validate_dataset(dataset: Dataset, *, in_channels: int | None = None) -> None:
    """Check ``dataset`` before training; raise :class:`InputError` naming every problem found.

    Checks: at least one case; the same number of input channels in every case, equal to the dataset's
    channel names (and to ``in_channels`` when given); label values all declared in ``label_names``;
    label maps on their image's grid (see :func:`load_case`). Reads file headers and the label maps.
    """
    if not dataset.cases:
        raise InputError(f"Dataset {dataset.name} has no cases; add image/label pairs to train on.")
    expected = dataset.num_channels if in_channels is None else in_channels
    if in_channels is not None and in_channels != dataset.num_channels:
        raise InputError(
            f"The model takes {in_channels} input channel(s) but dataset {dataset.name} names "
            f"{dataset.num_channels} ({', '.join(dataset.channel_names)}); give matching channels."
        )
    wrong_channels, undeclared, misaligned = [], [], []
    for case in dataset.cases:
        count, geometry = _image_information(case)
        if count != expected:
            wrong_channels.append(f"{case.name} ({count})")
        if case.label is None:
            continue
        label = _read(case.label)
        values = np.unique(as_label_array(label.array, allow_whole_floats=True, compact=True, what=_label_text(case)))
        extra = sorted(set(values.tolist()) - set(dataset.label_names))
        if extra:
            undeclared.append(f"{case.name} ({', '.join(map(str, extra))})")
        problem = None if label.is_multichannel else _label_grid_problem(geometry, Grid.of(label))
        if label.is_multichannel or problem:
            misaligned.append(f"{case.name}: {problem or 'the label map has several channels'}")
    problems = []
    if wrong_channels:
        problems.append(
            f"cases with a number of input channels other than {expected}: {listing(wrong_channels)} "
            "(every case needs the same channels, in the same order)"
        )
    if undeclared:
        declared = ", ".join(f"{value}={name}" for value, name in dataset.label_names.items())
        problems.append(
            f"label values not declared in the label names ({declared}): {listing(undeclared)} "
            "(declare them, or fix the label maps)"
        )
    if misaligned:
        problems.append(
            f"label and image geometry differ for {listing(misaligned)} (resample the label maps onto their "
            "images, e.g. in Slicer, or fix the file headers)"
        )
    if problems:
        raise InputError(f"Dataset {dataset.name} cannot be used: " + "; ".join(problems) + ".")


# ----- helpers -----------------------------------------------------------------------------------------------


def _cases_from_folders(
    images: Path, labels: Path | None, *, channel_files: bool | None, channels: int | None = None
) -> list[CaseSource]:
    """Pair image and label files by case name.

    ``channel_files=True`` requires nnU-Net channel files (``<case>_0000``, ...); ``None`` groups them when
    that matches the label files better than the plain names (without labels: when the grouping is
    consistent, gives ``channels`` channels if known, and is not one case with many channels).
    """
    image_files = list_cases(images)
    label_files = list_cases(labels) if labels is not None else None
    grouped = _group_channels(image_files)
    if channel_files and grouped is None:
        raise InputError(
            f"Image files in {images} must be named <case>_0000, <case>_0001, ... (one per channel, the same "
            f"channels for every case); found e.g. {next(iter(image_files))}."
        )
    if channel_files is None and grouped is not None:
        count = len(next(iter(grouped.values())))
        if label_files is not None:
            channel_files = len(set(grouped) & set(label_files)) > len(set(image_files) & set(label_files))
        else:
            channel_files = count == channels if channels is not None else (len(grouped) > 1 or count == 1)
    by_case = grouped if channel_files and grouped else {case: (path,) for case, path in image_files.items()}
    if label_files is not None:
        require_partners(
            by_case,
            label_files,
            roles=("image", "label"),
            where=f"{images} and {labels}",
            hint="Files are matched by name without extension (and without the _0000 channel suffix); "
            "rename or remove the unmatched.",
        )
    return [
        CaseSource(case, files, None if label_files is None else label_files[case]) for case, files in by_case.items()
    ]


def _group_channels(files: dict[str, Path]) -> dict[str, tuple[Path, ...]] | None:
    """Case → channel files when every name ends in ``_<4 digits>`` and every case has the channels
    0000, 0001, ... up to the same last one; otherwise ``None``."""
    channels: dict[str, dict[int, Path]] = {}
    for name, path in files.items():
        match = _CHANNEL_SUFFIX.match(name)
        if match is None:
            return None
        channels.setdefault(match["case"], {})[int(match["channel"])] = path
    counts = {len(numbered) for numbered in channels.values()}
    if len(counts) != 1 or any(sorted(numbered) != list(range(len(numbered))) for numbered in channels.values()):
        return None
    return {case: tuple(path for _, path in sorted(numbered.items())) for case, numbered in sorted(channels.items())}


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (Image, str, os.PathLike)):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    return (value,)


def _as_source(value: Any) -> Source:
    if isinstance(value, Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise InputError(f"An image source must be a file path or an Image, got {type(value).__name__}.")


def _read(source: Source) -> Image:
    return source if isinstance(source, Image) else read_image(source)


def _source_text(source: Source) -> str:
    """A file's path, or "(in memory)" for an :class:`Image`."""
    return "(in memory)" if isinstance(source, Image) else str(source)


def _label_text(case: CaseSource) -> str:
    """How messages name the label map of ``case``: "Case c: label map <path>"."""
    return f"Case {case.name}: label map {_source_text(case.label)}"


def _image_information(case: CaseSource) -> tuple[int, Grid]:
    """Number of input channels of ``case`` and the grid of its first image, from file headers."""
    count, first = 0, None
    for source in case.images:
        channels, geometry = _source_information(source)
        count += channels
        first = first or geometry
    return count, first


def _source_information(source: Source) -> tuple[int, Grid]:
    """Channels and grid of one image source; files are read only up to their header when possible."""
    if isinstance(source, Path) and source.is_file() and is_image_path(source) and not _is_segmentation(source):
        check_header_geometry(source)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(source))
        try:
            with captured_native_stderr():
                reader.ReadImageInformation()
        except RuntimeError:
            return _source_information(read_image(source))  # read_image explains the problem
        dims, components = reader.GetDimension(), reader.GetNumberOfComponents()
        channels = reader.GetSize()[3] if dims == 4 and components == 1 else components
        return channels, Grid.of_sitk(reader)
    image = _read(source)
    return image.num_channels, Grid.of(image)


def _is_segmentation(path: Path) -> bool:
    return path.name.lower().endswith(".seg.nrrd")


def _default_channel_names(cases: Sequence[CaseSource]) -> tuple[str, ...]:
    """``channel_0``, ``channel_1``, ... for the first case's channel count (0 cases: one channel)."""
    count = _image_information(cases[0])[0] if cases else 1
    return tuple(f"channel_{index}" for index in range(count))


def _label_names_of(cases: Sequence[CaseSource]) -> dict[int, str]:
    """Label values found in the cases' label maps, named as the files name them or ``label_<value>``."""
    names: dict[int, str] = {0: "background"}
    for case in cases:
        if case.label is None:
            continue
        label = _read(case.label)
        labels = as_label_array(label.array, allow_whole_floats=True, compact=True, what=_label_text(case))
        for value in np.unique(labels).tolist():
            info = label.label_info(value)
            names.setdefault(value, info.name if info is not None else f"label_{value}")
    return names


def _label_grid_problem(image: Grid, label: Grid) -> str | None:
    """``None`` when the label grid may be taken as the image's; otherwise what differs."""
    if label.size == image.size and all(
        np.allclose(getattr(label, name), getattr(image, name), rtol=_GEOMETRY_TOLERANCE, atol=_GEOMETRY_TOLERANCE)
        for name in ("spacing", "origin", "direction")
    ):
        return None
    parts = [
        f"{name} {_rounded(getattr(label, name))} vs {_rounded(getattr(image, name))}"
        for name in ("size", "spacing", "origin", "direction")
        if getattr(label, name) != getattr(image, name)
    ]
    return "label " + ", ".join(parts) + " (image)"


def _geometry_message(case: str, problem: str) -> str:
    return (
        f"label and image geometry differ for case {case}: {problem}. Resample the label map onto its image "
        "(e.g. in Slicer) or fix the file headers."
    )


def _rounded(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(value, 4) for value in values)
