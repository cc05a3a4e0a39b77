"""Training datasets: which cases there are, where their images and label maps come from, and loading one.

A :class:`Dataset` names its input channels and labels and lists :class:`CaseSource` entries, each holding
files or in-memory :class:`Image` objects. It is built from

- an MSD folder (``dataset.json`` with a ``"training"`` list; a 4D file may hold all modalities) or an
  nnU-Net v2 folder (``imagesTr/case_0000.nii.gz``, ``case_0001...``, ``labelsTr/case.nii.gz``; any
  ``file_ending``, e.g. ``.png``): :func:`load_msd_dataset`;
- an image folder and a label folder matched by case name (``images/`` + ``masks/``, the layout most 2D
  datasets ship in): :func:`dataset_from_folders`;
- (image, label) pairs of paths or images: :func:`dataset_from_pairs` (the Slicer panel's way).

Cases are 2D images (PNG, TIFF, ... or 2D NIfTI/NRRD) or 3D volumes, never both in one dataset. A colour
picture is one case with three channels (``red``, ``green``, ``blue``).

Masks (:func:`read_label`). A label map holds label values 0..N; masks saved as pictures often do not (a
binary mask is usually saved as 0/255). Every picture mask (PNG, TIFF, BMP; palette pictures as their palette
indices) becomes labels by the mask rule of :func:`~MedSegCNNLib.image.masks.label_map_from_mask`, in every
layout: 0..N kept, a 0/255 (0/65535) binary mask read as 0/1, a grey colour mask as its one channel, anything
else refused with the values found. ``mask_values=(v0, v1, ...)`` maps those raw values to the labels 0, 1, ...
in that order instead (for every label file, of any format; a value not listed is refused). Label maps in
other formats (NIfTI, NRRD, ...) are read as stored.

Nothing is read until :func:`load_case` (or :func:`validate_dataset`) needs it, except that label names are
collected from the label maps when neither the caller nor a ``dataset.json`` gives them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..image.cases import group_channel_files, list_cases, listing, require_partners
from ..image.core import Image
from ..image.geometry import Grid, channel_onto, grid_difference
from ..image.integrity import check_header_geometry
from ..image.io import COLOR_CHANNEL_NAMES, case_name, is_image_path, is_raster_path, read_image
from ..image.labels import as_label_array
from ..image.masks import label_map_from_mask
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

_GEOMETRY_TOLERANCE = 1e-3  # label grids this close to their image's (relative, 1e-3 mm floor) adopt it
IMAGE_FOLDER_NAMES = ("images", "imagesTr")
"""Names of the image folder of a folder pair that :func:`load_dataset` recognises (any case)."""
MASK_FOLDER_NAMES = ("masks", "labels", "labelsTr", "annotations", "gt", "ground_truth", "groundtruth")
"""Names of the mask folder beside it (any case); exactly one of them must be there."""
MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_gt", "_seg", "_segmentation", "_annotation")
"""Suffixes that mask files may add to their image's case name (``a.png`` + ``a_mask.png``; all masks alike)."""


@dataclass(frozen=True)
class CaseSource:
    """One case: its image sources (one per channel, or one multi-channel file) and its label map, if any.

    ``mask_values`` maps the raw values of the label map to labels: the i-th value becomes label i (see the
    module docstring); ``None``: the mask rule for pictures, other label maps as stored.
    ``allow_partial_channels``: further channels may leave more than 1 % of the first one uncovered (filled with
    0; see :func:`load_case`).
    """

    name: str
    images: tuple[Source, ...]
    label: Source | None = None
    mask_values: tuple[int, ...] | None = None
    allow_partial_channels: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"A case needs a non-empty name, got {self.name!r}.")
        images = tuple(_as_source(image) for image in _as_tuple(self.images))
        if not images:
            raise InputError(f"Case {self.name} has no image; give at least one image per case.")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "label", None if self.label is None else _as_source(self.label))
        object.__setattr__(self, "mask_values", checked_mask_values(self.mask_values))

    @property
    def in_memory(self) -> bool:
        """True when any of the case's images or its label is an in-memory :class:`Image`."""
        return any(isinstance(source, Image) for source in (*self.images, self.label))

    def to_dict(self) -> dict[str, Any]:
        """Paths as strings; a case with in-memory images is listed by name only."""
        mapping = {} if self.mask_values is None else {"mask_values": list(self.mask_values)}
        if self.in_memory:
            return {"name": self.name, **mapping}
        return {
            "name": self.name,
            "images": [str(path) for path in self.images],
            "label": None if self.label is None else str(self.label),
            **mapping,
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


def load_dataset(
    path_or_dataset: str | os.PathLike[str] | Dataset,
    *,
    mask_values: Sequence[int] | None = None,
    allow_partial_channels: bool = False,
) -> Dataset:
    """A :class:`Dataset`; a folder with ``dataset.json`` (or that file) via :func:`load_msd_dataset`; a folder
    without one that holds an image folder and a mask folder (:func:`find_folder_pair`: ``images/`` +
    ``masks/``, ``imagesTr/`` + ``labelsTr/``, ...) via :func:`dataset_from_folders`.

    ``mask_values`` (see the module docstring) applies to every case, also of a :class:`Dataset` given;
    ``allow_partial_channels`` (see :class:`CaseSource`) is set on every case when true.
    """
    dataset = _loaded_dataset(path_or_dataset, mask_values)
    if not allow_partial_channels:
        return dataset
    return replace(dataset, cases=tuple(replace(case, allow_partial_channels=True) for case in dataset.cases))


def _loaded_dataset(path_or_dataset: str | os.PathLike[str] | Dataset, mask_values: Sequence[int] | None) -> Dataset:
    """:func:`load_dataset` without ``allow_partial_channels``."""
    if isinstance(path_or_dataset, Dataset):
        if mask_values is None:
            return path_or_dataset
        return replace(
            path_or_dataset, cases=tuple(replace(case, mask_values=mask_values) for case in path_or_dataset.cases)
        )
    path = Path(path_or_dataset)
    if path.is_file() and path.name == DATASET_JSON:
        path = path.parent
    if (path / DATASET_JSON).is_file():
        return load_msd_dataset(path, mask_values=mask_values)
    pair = find_folder_pair(path)
    if pair is not None:
        return dataset_from_folders(*pair, mask_values=mask_values)
    raise InputError(
        f"{path} is not a dataset folder: it has neither a {DATASET_JSON} nor an image folder with a mask folder "
        f"beside it ({'/, '.join(IMAGE_FOLDER_NAMES)}/ with one of {'/, '.join(MASK_FOLDER_NAMES)}/). Give an MSD "
        "or nnU-Net dataset folder or such a folder pair, or build the dataset with dataset_from_folders."
    )


def find_folder_pair(folder: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """The (image folder, mask folder) of a dataset folder, or ``None`` when it has none.

    ``imagesTr/`` + ``labelsTr/`` (nnU-Net without ``dataset.json``) come first; otherwise ``images/`` and one
    of :data:`MASK_FOLDER_NAMES` (names in any case). Several mask folders beside ``images/`` are refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
        return folder / "imagesTr", folder / "labelsTr"
    subfolders = {path.name.lower(): path for path in sorted(folder.iterdir()) if path.is_dir()}
    images = subfolders.get("images")
    masks = [subfolders[name.lower()] for name in MASK_FOLDER_NAMES if name.lower() in subfolders]
    if images is None or not masks:
        return None
    if len(masks) > 1:
        raise InputError(
            f"{folder} has several mask folders beside {images.name}/ ({', '.join(path.name for path in masks)}); "
            "keep one of them, or build the dataset with dataset_from_folders."
        )
    return images, masks[0]


def load_msd_dataset(folder: str | os.PathLike[str], *, mask_values: Sequence[int] | None = None) -> Dataset:
    """The training cases of an MSD or nnU-Net v2 dataset folder (see the module docstring).

    MSD: ``dataset.json`` lists ``"training"`` pairs; ``"modality"`` names the channels. nnU-Net v2:
    ``imagesTr/`` holds ``<case>_<channel:04d><file_ending>`` files, ``"channel_names"`` names the channels.
    Both: ``"labels"`` maps values to names (either orientation). ``mask_values`` maps the label files' raw
    values (module docstring).
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
    if mask_values is not None:
        cases = [replace(case, mask_values=mask_values) for case in cases]
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
    mask_values: Sequence[int] | None = None,
) -> Dataset:
    """Cases from an image folder and a label (mask) folder, matched by case name (file name without extension).

    Image files named ``<case>_0000``, ``<case>_0001``, ... (nnU-Net) are grouped into the channels of
    ``<case>`` when that matches the label files better than the plain names do (without labels: when the
    numbering is consistent and, if given, matches ``channel_names``). Mask files may add one of
    :data:`MASK_SUFFIXES` to the case name, all the same one (``a.png`` with ``a_mask.png``). Every label
    needs its image(s) and every image its label, else :class:`InputError` lists the unmatched.
    ``labels_dir=None`` gives unlabelled cases. Picture masks become labels by the mask rule, or by
    ``mask_values`` (module docstring). Label names default to a ``dataset.json`` in or beside ``labels_dir``,
    else to the names stored in the label files, else ``label_<value>``; channel names default to ``red``,
    ``green``, ``blue`` for colour pictures, else ``channel_<i>``.
    """
    labels = None if labels_dir is None else Path(labels_dir)
    cases = _cases_from_folders(
        Path(images_dir), labels, channel_files=None, channels=None if channel_names is None else len(channel_names)
    )
    if mask_values is not None:
        cases = [replace(case, mask_values=mask_values) for case in cases]
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
    mask_values: Sequence[int] | None = None,
) -> Dataset:
    """Cases from ``(image or [channel images], label)`` pairs of paths or in-memory :class:`Image` objects.

    A case is named after its first image file, or ``case_<index:03d>`` for an in-memory image. Label
    names default to those stored with the label maps (e.g. Slicer segment names), else ``label_<value>``.
    ``mask_values`` maps every label map's raw values to labels (module docstring).
    """
    cases = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise InputError(f"Pair {index} must be (image, label) or ([channel images], label), got {pair!r}.")
        images, label = _as_tuple(pair[0]), pair[1]
        first = _as_source(images[0]) if images else None
        case = case_name(first) if isinstance(first, Path) else f"case_{index:03d}"
        cases.append(CaseSource(case, images, label, mask_values))
    return Dataset(
        name=name,
        channel_names=tuple(channel_names) if channel_names is not None else _default_channel_names(cases),
        label_names=dict(label_names) if label_names is not None else _label_names_of(cases),
        cases=tuple(cases),
    )


# ----- loading and checking --------------------------------------------------------------------------------


def load_case(
    case: CaseSource, *, allow_non_finite: bool = False, names: Sequence[str] | None = None
) -> tuple[Image, Image | None]:
    """The case's image as float32 ``(C, z, y, x)`` (a 2D case: ``(C, y, x)``) on its first channel's grid, and
    its integer label map (:func:`read_label`).

    An image with NaN or ±inf voxels raises :class:`InputError` naming the case and file (training cannot use
    it) unless ``allow_non_finite`` (prediction, which replaces them); a label map with them always does.
    ``names`` names the image sources in messages, one each (default: their files; e.g. the files in-memory
    images were read from).

    Further channels on another grid are resampled onto the first one
    (:func:`~MedSegCNNLib.image.geometry.channel_onto`: linear; 0 outside, refused when more than 1 % of the first
    channel is outside unless the case's ``allow_partial_channels``). The label map is cast to the smallest
    fitting integer type (float files with whole values are accepted). A label map whose grid differs from the
    image's only by header rounding (same size; spacing, origin and direction within 1e-3 relative, 1e-3
    absolute) takes the image's grid; any other difference raises :class:`InputError`.
    """
    channels = [_read(source) for source in case.images]
    if not allow_non_finite:
        for source, channel in zip(case.images, channels, strict=True):
            require_finite(channel.array, f"case {case.name}: image {_source_text(source)}")
    texts = list(names) if names is not None else [_source_text(source) for source in case.images]
    reference = channels[0]
    arrays = []
    for index, channel in enumerate(channels):
        if channel.spatial_dims != reference.spatial_dims:
            raise InputError(
                f"Image {index} of case {case.name} is {channel.spatial_dims}D but image 0 is "
                f"{reference.spatial_dims}D; all channels of a case must have the same dimension."
            )
        if index:
            channel = channel_onto(
                channel,
                reference,
                what=f"Case {case.name}: image {index} ({texts[index]})",
                reference_what=f"image 0 ({texts[0]})",
                allow_partial=case.allow_partial_channels,
            )
        arrays.append(channel.array if channel.is_multichannel else channel.array[None])
    stacked = np.concatenate([array.astype(np.float32, copy=False) for array in arrays], axis=0)
    image = Image(stacked, reference.spacing, reference.origin, reference.direction)
    if case.label is None:
        return image, None
    label = read_label(case)
    array = as_label_array(label, allow_whole_floats=True, compact=True, what=_label_text(case))
    problem = label_grid_problem(Grid.of(image), Grid.of(label))
    if problem:
        raise InputError(_geometry_message(case.name, problem))
    return image, Image(array, image.spacing, image.origin, image.direction, label.labels)


def validate_dataset(dataset: Dataset, *, in_channels: int | None = None) -> None:
    """Check ``dataset`` before training; raise :class:`InputError` naming every problem found.

    Checks: at least one case; all cases 2D images or all 3D volumes; the same number of input channels in
    every case, equal to the dataset's channel names (and to ``in_channels`` when given); label values all
    declared in ``label_names``; label maps on their image's grid (see :func:`load_case`). Reads file headers
    (pictures: the files) and the label maps.
    """
    if not dataset.cases:
        raise InputError(f"Dataset {dataset.name} has no cases; add image/label pairs to train on.")
    expected = dataset.num_channels if in_channels is None else in_channels
    if in_channels is not None and in_channels != dataset.num_channels:
        raise InputError(
            f"The model takes {in_channels} input channel(s) but dataset {dataset.name} names "
            f"{dataset.num_channels} ({', '.join(dataset.channel_names)}); give matching channels."
        )
    wrong_channels, undeclared, misaligned, dims = [], [], [], {}
    for case in dataset.cases:
        count, geometry = case_information(case)
        dims[case.name] = geometry.dims
        if count != expected:
            wrong_channels.append(f"{case.name} ({count})")
        if case.label is None:
            continue
        label = read_label(case)
        values = np.unique(as_label_array(label.array, allow_whole_floats=True, compact=True, what=_label_text(case)))
        extra = sorted(set(values.tolist()) - set(dataset.label_names))
        if extra:
            undeclared.append(f"{case.name} ({', '.join(map(str, extra))})")
        problem = None if label.is_multichannel else label_grid_problem(geometry, Grid.of(label))
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
    require_one_dimension(dataset.name, dims)
    if misaligned:
        problems.append(
            f"label and image geometry differ for {listing(misaligned)} (resample the label maps onto their "
            "images, e.g. in Slicer, or fix the file headers)"
        )
    if problems:
        raise InputError(f"Dataset {dataset.name} cannot be used: " + "; ".join(problems) + ".")


def read_label(case: CaseSource) -> Image | None:
    """The label map of ``case`` (``None`` without one), by the rule of the module docstring: a picture mask
    (read with its palette indices) or one with ``mask_values`` through
    :func:`~MedSegCNNLib.image.masks.label_map_from_mask`, another label map as stored."""
    source = case.label
    if source is None:
        return None
    picture = _is_raster(source)
    label = source if isinstance(source, Image) else read_image(source, palette="indices" if picture else "refuse")
    if case.mask_values is None and not picture:
        return label
    return label_map_from_mask(label, mask_values=case.mask_values, source=_source_text(source))


def checked_mask_values(values: Sequence[int] | None) -> tuple[int, ...] | None:
    """``values`` as a tuple of at least two distinct integers >= 0 (raw mask values of labels 0, 1, ...);
    ``None`` stays ``None``."""
    if values is None:
        return None
    try:
        checked = tuple(int(value) for value in values)
    except (TypeError, ValueError):
        checked = ()
    if (
        len(checked) < 2
        or len(set(checked)) != len(checked)
        or min(checked) < 0
        or any(value != raw for value, raw in zip(checked, values, strict=True))
    ):
        raise InputError(
            f"mask_values must list at least two distinct raw mask values >= 0, those of labels 0, 1, ... in order "
            f"(e.g. 0,255 or 0,128,255); got {values!r}."
        )
    return checked


def require_one_dimension(dataset_name: str, dims: Mapping[str, int]) -> None:
    """Refuse a dataset whose cases (case name → spatial dimension) mix 2D images and 3D volumes."""
    flat = [name for name, count in dims.items() if count == 2]
    volumes = [name for name, count in dims.items() if count != 2]
    if flat and volumes:
        raise InputError(
            f"Dataset {dataset_name} mixes 2D images ({listing(flat)}) and 3D volumes ({listing(volumes)}); a "
            "dataset holds one kind. Train on each kind separately, or convert the volumes to 2D images (a "
            "single-slice volume is 3D)."
        )


# ----- helpers -----------------------------------------------------------------------------------------------


def _is_raster(source: Source | None) -> bool:
    """True for a picture file (PNG, TIFF, BMP, JPEG): its values may need the mask rule."""
    return isinstance(source, Path) and is_raster_path(source)


def _cases_from_folders(
    images: Path, labels: Path | None, *, channel_files: bool | None, channels: int | None = None
) -> list[CaseSource]:
    """Pair image and label files by case name.

    ``channel_files=True`` requires nnU-Net channel files (``<case>_0000``, ...); ``None`` groups them when
    that matches the label files better than the plain names (without labels: when the grouping is
    consistent, gives ``channels`` channels if known, and is not one case with many channels). Label files
    that all add the same one of :data:`MASK_SUFFIXES` to the case name are matched without it.
    """
    image_files = list_cases(images)
    grouped = group_channel_files(image_files)
    label_files = None
    if labels is not None:
        label_files = _without_mask_suffix(list_cases(labels), {*image_files, *(grouped or {})})
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


def _without_mask_suffix(label_files: dict[str, Path], case_names: set[str]) -> dict[str, Path]:
    """``label_files`` keyed by case name without the mask suffix they all share, when that matches more of
    ``case_names``; otherwise as they are."""
    for suffix in MASK_SUFFIXES:
        if all(name.lower().endswith(suffix) and len(name) > len(suffix) for name in label_files):
            stripped = {name[: -len(suffix)]: path for name, path in label_files.items()}
            matched, plain = len(case_names & set(stripped)), len(case_names & set(label_files))
            if len(stripped) == len(label_files) and matched > plain:
                return stripped
    return label_files


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


def case_information(case: CaseSource) -> tuple[int, Grid]:
    """Number of input channels of ``case`` and the grid of its first image, from file headers."""
    count, first = 0, None
    for source in case.images:
        channels, geometry = _source_information(source)
        count += channels
        first = first or geometry
    return count, first


def source_grid(source: Source) -> Grid:
    """The grid of one image source (a file is read only up to its header where possible)."""
    return _source_information(source)[1]


def _source_information(source: Source) -> tuple[int, Grid]:
    """Channels and grid of one image source; files are read only up to their header when possible."""
    if (
        isinstance(source, Path)
        and source.is_file()
        and is_image_path(source)
        and not _is_segmentation(source)
        and not is_raster_path(source)  # pictures are small, and their readers decide their channels
    ):
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
    """``red``, ``green``, ``blue`` when the first case is one colour picture; else ``channel_0``, ``channel_1``,
    ... for the first case's channel count (0 cases: one channel)."""
    count = case_information(cases[0])[0] if cases else 1
    if count == len(COLOR_CHANNEL_NAMES) and len(cases[0].images) == 1 and _is_raster(cases[0].images[0]):
        return COLOR_CHANNEL_NAMES
    return tuple(f"channel_{index}" for index in range(count))


def _label_names_of(cases: Sequence[CaseSource]) -> dict[int, str]:
    """Label values found in the cases' label maps, named as the files name them or ``label_<value>``."""
    names: dict[int, str] = {0: "background"}
    for case in cases:
        if case.label is None:
            continue
        label = read_label(case)
        labels = as_label_array(label.array, allow_whole_floats=True, compact=True, what=_label_text(case))
        for value in np.unique(labels).tolist():
            info = label.label_info(value)
            names.setdefault(value, info.name if info is not None else f"label_{value}")
    return names


def label_grid_problem(image: Grid, label: Grid) -> str | None:
    """``None`` when the label grid may be taken as the image's; otherwise what differs."""
    if label.size == image.size and all(
        np.allclose(getattr(label, name), getattr(image, name), rtol=_GEOMETRY_TOLERANCE, atol=_GEOMETRY_TOLERANCE)
        for name in ("spacing", "origin", "direction")
    ):
        return None
    return f"label vs image: {grid_difference(label, image)}"


def _geometry_message(case: str, problem: str) -> str:
    return (
        f"label and image geometry differ for case {case}: {problem}. Resample the label map onto its image "
        "(e.g. in Slicer) or fix the file headers."
    )
