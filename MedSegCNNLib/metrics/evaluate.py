"""``evaluate``: compare predicted label maps with reference label maps, per case and per label.

Files are read by :func:`read_label_map`: 2D pictures (PNG, TIFF, BMP, ...) through the one mask rule
(:func:`~MedSegCNNLib.image.labels.label_map_from_mask`: a 0/255 mask is labels 0/1), other formats as they are.

Units: distances are in mm, except for a case where neither file has physical spacing (pictures without spacing
metadata, :func:`~MedSegCNNLib.image.io.has_physical_spacing`): they are in pixels there, and its rows say so
(``distance_unit``). When only one of the two (or of the ROI mask) has physical spacing, the files must have the
same size and the one without takes the other's geometry; two files without it are never resampled either.
Images given in memory count as having physical spacing.

A 3D image with a single slice meets a 2D one as that slice (a single-slice volume exported from Slicer against
a PNG, for instance).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..image import Image, resample_labels_onto
from ..image.cases import files_for_cases, listing, pair_cases
from ..image.geometry import Grid, grid_difference
from ..image.io import case_name, has_physical_spacing, is_raster_path, read_image
from ..image.labels import as_label_array
from ..image.masks import label_map_from_mask
from .label_metrics import compute_label_metrics
from .result import CaseEvaluation, EvaluationResult

logger = logging.getLogger(__name__)

ImageSource = Image | str | os.PathLike[str]


def evaluate(
    prediction: ImageSource | Sequence[ImageSource],
    reference: ImageSource | Sequence[ImageSource],
    labels: Iterable[int] | None = None,
    *,
    nsd_tolerance_mm: float = 1.0,
    label_names: Mapping[int, str] | None = None,
    surface: bool = True,
    case: str | None = None,
    on_case: Callable[[CaseEvaluation], None] | None = None,
    roi_mask: ImageSource | Sequence[ImageSource] | None = None,
    mask_values: Sequence[int] | None = None,
) -> EvaluationResult:
    """Compute segmentation metrics of ``prediction`` against ``reference``.

    Args:
        prediction, reference: label maps given as :class:`Image`, as file paths, as two folders (cases are
            matched by file name without extension) or as two equally long sequences of images/paths.
        labels: label values to report. Default: every non-zero value found in either map of a case (inside the
            ROI mask, when there is one), so a label present in one map only is reported (with Dice 0 and
            infinite distances), never skipped.
        nsd_tolerance_mm: tolerance τ of the normalised surface Dice, in mm (in pixels for cases in pixel units).
        label_names: names for label values; otherwise names stored in the reference (e.g. ``.seg.nrrd``),
            then in the prediction, then ``label_<value>``.
        surface: compute surface-distance metrics (HD, HD95, ASSD, NSD); ``False`` is faster and leaves
            them NaN.
        case: case name for a single in-memory pair (file inputs are named after the file).
        on_case: called with each case's result as soon as it is computed (progress reporting).
        roi_mask: the region where the metrics are counted (non-zero inside; e.g. a fundus photograph's field of
            view): one mask (image or file) for every case, a folder of masks matched to the cases by name, or
            a sequence with one per case. See :mod:`.label_metrics` for how each metric is restricted.
        mask_values: raw values of the references (files of any format, or images) mapped to labels 0, 1, 2, ...
            in order (e.g. ``(0, 128, 255)``), for masks outside
            :func:`~MedSegCNNLib.image.labels.label_map_from_mask`'s rule.

    A reference on a different voxel grid is resampled (nearest neighbour) onto the prediction's grid when
    the two overlap physically; this is logged and flagged in the rows (``reference_resampled``). Images
    that do not overlap raise :class:`~MedSegCNNLib.errors.GeometryError`. Units: see the module docstring.
    Label values that look like a mistake are warned about (:func:`warn_about_label_values`): a map whose one
    foreground value is the largest of an integer type (a mask saved white on black, e.g. 0/65535), and a prediction
    and a reference without a label in common.
    See :mod:`MedSegCNNLib.metrics.label_metrics` for the exact metric definitions and the empty-mask policy.

    Example:
        >>> result = evaluate("pred/case_01.nii.gz", "labels/case_01.nii.gz", labels=[1, 2])
        >>> result.summary()[1]["dice"]["mean"]  # doctest: +SKIP
    """
    if not (nsd_tolerance_mm >= 0 and np.isfinite(nsd_tolerance_mm)):
        raise InputError(f"The NSD tolerance must be a non-negative number of mm, got {nsd_tolerance_mm}.")
    label_list = _validate_labels(labels)
    pairs = _case_pairs(prediction, reference, case)
    rois = _roi_sources(roi_mask, [name for name, _, _ in pairs])
    cases = []
    for (name, pred_source, ref_source), roi_source in zip(pairs, rois, strict=True):
        result = evaluate_case(
            name,
            pred_source,
            ref_source,
            label_list,
            nsd_tolerance_mm=nsd_tolerance_mm,
            label_names=label_names,
            surface=surface,
            roi_mask=roi_source,
            mask_values=mask_values,
        )
        if on_case is not None:
            on_case(result)
        cases.append(result)
    return EvaluationResult(cases=tuple(cases), nsd_tolerance_mm=float(nsd_tolerance_mm))


def evaluate_case(
    name: str,
    prediction: ImageSource,
    reference: ImageSource,
    labels: list[int] | None,
    *,
    nsd_tolerance_mm: float,
    label_names: Mapping[int, str] | None,
    surface: bool,
    roi_mask: ImageSource | None = None,
    mask_values: Sequence[int] | None = None,
) -> CaseEvaluation:
    """Metrics of one (prediction, reference) pair, inside ``roi_mask`` when given; see :func:`evaluate`."""
    pred, pred_physical = _load_label_map(prediction, "prediction", name)
    ref, ref_physical = _load_label_map(reference, "reference", name, mask_values=mask_values)
    roi, roi_physical = (None, False) if roi_mask is None else _load_label_map(roi_mask, "ROI mask", name)
    pred, ref, roi = _common_dimensions(name, pred, ref, roi)
    physical = pred_physical or ref_physical
    if not pred_physical and ref_physical:
        pred = _adopt_grid(name, ("prediction", pred), ("reference", ref))
    ref, resampled = _onto_grid(name, ("reference", ref, ref_physical), pred, physical)
    inside = None
    if roi is not None:
        roi, _ = _onto_grid(name, ("ROI mask", roi, roi_physical), pred, physical)
        inside = roi.array != 0
        if not inside.any():
            raise InputError(f"Case {name}: the ROI mask {_where(roi_mask)}is empty (no voxel inside); nothing to "
                             "evaluate. Check the mask, or leave out the ROI.")  # fmt: skip
    warn_about_label_values(name, (("prediction", prediction, pred), ("reference", reference, ref)),
                            mapped=mask_values is not None)  # fmt: skip
    evaluated = labels if labels is not None else sorted(_present_labels(pred.array, inside)
                                                         | _present_labels(ref.array, inside))  # fmt: skip
    metrics = compute_label_metrics(
        pred.array,
        ref.array,
        evaluated,
        pred.array_spacing,
        nsd_tolerance_mm=nsd_tolerance_mm,
        surface=surface,
        roi=inside,
    )
    if not physical:  # no physical size: the volumes would be pixel counts / 1000 under a mL name
        metrics = {
            label: dataclasses.replace(values, volume_pred_ml=math.nan, volume_ref_ml=math.nan)
            for label, values in metrics.items()
        }
    names = {label: _label_name(label, label_names, ref, pred) for label in evaluated}
    return CaseEvaluation(
        case=name,
        metrics=metrics,
        names=names,
        reference_resampled=resampled,
        distance_unit="mm" if physical else "pixel",
        roi_mask=inside is not None,
    )


def read_label_map(source: str | os.PathLike[str], *, mask_values: Sequence[int] | None = None) -> Image:
    """The label map in the file ``source``: a 2D picture (PNG, TIFF, ...; palette pictures as their indices)
    through :func:`~MedSegCNNLib.image.labels.label_map_from_mask`, any other file as
    :func:`~MedSegCNNLib.image.io.read_image` reads it, or with ``mask_values`` mapped by them (as there)."""
    path = Path(source)
    if not is_raster_path(path):
        image = read_image(path)
        return image if mask_values is None else label_map_from_mask(image, mask_values=mask_values, source=str(path))
    return label_map_from_mask(read_image(path, palette="indices"), mask_values=mask_values, source=str(path))


def warn_about_label_values(name: str, maps: Sequence[tuple[str, ImageSource, Image]], *, mapped: bool) -> None:
    """Warn about label values of case ``name`` that look like a mistake; ``maps``: (role, source, label map) of the
    prediction and the reference, ``mapped``: the reference's values were mapped by ``mask_values``.

    A map whose only non-zero value is the largest value of an integer type (255, 65535, 2**31 - 1, ...: a binary
    mask saved white on black) gets a warning that names ``--mask-values``; otherwise, a prediction and a reference
    that both have labels but none in common get one (every Dice would be 0).
    """
    present = {role: _present_labels(image.array) for role, _, image in maps}
    white = False
    for role, source, _ in maps:
        values = present[role]
        if len(values) != 1 or (value := next(iter(values))) not in _TYPE_MAXIMA or (role == "reference" and mapped):
            continue
        white = True
        advice = (
            f"pass --mask-values 0,{value} (Python: mask_values=(0, {value})) to read it as labels 0/1"
            if role == "reference"
            else "--mask-values maps the references only, so save the prediction as labels 0/1"
        )
        logger.warning(
            "Case %s: the %s %sholds one label, %d, the largest %s integer: a binary mask saved white on "
            "black? It is evaluated as label %d; %s.",
            name, role, _where(source), value, _TYPE_MAXIMA[value], value, advice,
        )  # fmt: skip
    (_, prediction, _), (_, reference, _) = maps
    predicted, referenced = present["prediction"], present["reference"]
    if not white and predicted and referenced and not predicted & referenced:
        logger.warning(
            "Case %s: the prediction %shas labels %s and the reference %shas labels %s: none in common, so every Dice "
            "is 0. Check that both use the same label values (--mask-values maps the references' raw values to "
            "labels 0, 1, 2, ...).",
            name, _where(prediction), _label_listing(predicted), _where(reference), _label_listing(referenced),
        )  # fmt: skip


_TYPE_MAXIMA = {
    int(np.iinfo(dtype).max): f"{np.iinfo(dtype).bits}-bit{'' if np.iinfo(dtype).min == 0 else ' signed'}"
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64)
}
"""The largest value of each integer type → how messages name the type ("16-bit", "32-bit signed")."""


def _label_listing(values: set[int]) -> str:
    """Label values in ascending order, as :func:`~MedSegCNNLib.image.cases.listing` lists names."""
    return listing([str(value) for value in sorted(values)])


def _case_pairs(
    prediction: ImageSource | Sequence[ImageSource],
    reference: ImageSource | Sequence[ImageSource],
    case: str | None,
) -> list[tuple[str, ImageSource, ImageSource]]:
    pred_is_seq = isinstance(prediction, list | tuple)
    ref_is_seq = isinstance(reference, list | tuple)
    if pred_is_seq or ref_is_seq:
        if not (pred_is_seq and ref_is_seq) or len(prediction) != len(reference):
            raise InputError("Give predictions and references as two sequences of the same length.")
        if not prediction:
            raise InputError("No cases to evaluate: the sequences are empty.")
        return [
            (_source_name(p, _source_name(r, f"case_{i}")), p, r)
            for i, (p, r) in enumerate(zip(prediction, reference, strict=True))
        ]
    pred_dir = not isinstance(prediction, Image) and Path(prediction).is_dir()
    ref_dir = not isinstance(reference, Image) and Path(reference).is_dir()
    if pred_dir and ref_dir:
        return list(pair_cases(prediction, reference))
    if pred_dir != ref_dir:
        folder, other = ("prediction", "reference") if pred_dir else ("reference", "prediction")
        raise InputError(
            f"The {folder} is a folder but the {other} is not; give two files or two folders. (A folder holding "
            "one DICOM series is read as an image only through read_image().)"
        )
    return [(case or _source_name(prediction, _source_name(reference, "case")), prediction, reference)]


def _roi_sources(roi_mask: ImageSource | Sequence[ImageSource] | None, cases: list[str]) -> list[ImageSource | None]:
    """The ROI mask of each case: none, one for all, one per case from a sequence, or matched by name in a
    folder."""
    if roi_mask is None or isinstance(roi_mask, Image):
        return [roi_mask] * len(cases)
    if isinstance(roi_mask, list | tuple):
        if len(roi_mask) != len(cases):
            raise InputError(f"Give one ROI mask per case: {len(roi_mask)} masks for {len(cases)} cases.")
        return list(roi_mask)
    path = Path(roi_mask)
    if not path.is_dir():
        return [path] * len(cases)
    return list(files_for_cases(path, cases, what="ROI mask"))


def _source_name(source: ImageSource, default: str) -> str:
    return default if isinstance(source, Image) else case_name(source)


def _load_label_map(
    source: ImageSource, role: str, name: str, *, mask_values: Sequence[int] | None = None
) -> tuple[Image, bool]:
    """The label map ``source`` (:func:`read_label_map`, then :func:`~MedSegCNNLib.image.labels.as_label_array`;
    float files with whole values are accepted), named in messages as the ``role`` of case ``name``, and whether
    its spacing is physical (in-memory images: yes)."""
    image = source if isinstance(source, Image) else read_label_map(source, mask_values=mask_values)
    what = f"Case {name}: the {role} {_where(source)}".rstrip()
    array = as_label_array(image, allow_whole_floats=True, what=what, retry="evaluate again")
    return image.with_array(array), isinstance(source, Image) or has_physical_spacing(source)


def _where(source: ImageSource | None) -> str:
    """``"<path> "`` for a file, ``""`` for an image in memory (in messages)."""
    return "" if source is None or isinstance(source, Image) else f"{source} "


def _common_dimensions(name: str, pred: Image, ref: Image, roi: Image | None) -> tuple[Image, Image, Image | None]:
    """The maps with one number of dimensions: when one is 2D, the 3D ones with a single slice become that slice;
    other mixtures are refused."""
    images = {"prediction": pred, "reference": ref} | ({} if roi is None else {"ROI mask": roi})
    if len({image.spatial_dims for image in images.values()}) == 1:
        return pred, ref, roi
    flat = {role: _single_slice(image) if image.spatial_dims == 3 else image for role, image in images.items()}
    deep = [role for role, image in flat.items() if image is None]
    if deep:
        dims = ", ".join(f"the {role} is {image.spatial_dims}D" for role, image in images.items())
        raise InputError(f"Case {name}: {dims}; give maps of the same dimension (a 3D one may have one slice).")
    return flat["prediction"], flat["reference"], flat.get("ROI mask")


def _single_slice(image: Image) -> Image | None:
    """A 3D ``image`` with one slice (size 1 along its third axis) as a 2D image, or ``None``."""
    if image.shape[0] != 1:
        return None
    return Image(
        image.array[0],
        spacing=image.spacing[:2],
        origin=image.origin[:2],
        direction=image.direction[:2, :2],
        labels=image.labels,
    )


def _adopt_grid(name: str, image: tuple[str, Image], grid: tuple[str, Image]) -> Image:
    """The first image on the second's grid, voxel for voxel: for a file without physical spacing, which must
    have the same size."""
    (role, picture), (other_role, other) = image, grid
    if picture.shape != other.shape:
        raise InputError(
            f"Case {name}: the {role} (size {picture.size}) has no physical spacing and differs in size from the "
            f"{other_role} (size {other.size}), so the two cannot be aligned; give them the same size."
        )
    return other.with_array(picture.array, labels=picture.labels)


def _onto_grid(name: str, image: tuple[str, Image, bool], pred: Image, pred_physical: bool) -> tuple[Image, bool]:
    """``image`` (role, map, physical spacing) on the prediction's grid, and whether it was resampled: adopted
    voxel for voxel when either lacks physical spacing, else resampled (nearest neighbour) when the grids
    differ."""
    role, picture, physical = image
    if not (physical and pred_physical):
        return _adopt_grid(name, (role, picture), ("prediction", pred)), False
    if picture.same_grid(pred):
        return picture, False
    logger.warning(
        "Case %s: the %s is on another grid than the prediction (%s vs prediction: %s); resampling the %s onto the "
        "prediction's grid (nearest neighbour).",
        name, role, role, grid_difference(Grid.of(picture), Grid.of(pred)), role,
    )  # fmt: skip
    return resample_labels_onto(picture, pred), True


def _present_labels(array: np.ndarray, inside: np.ndarray | None = None) -> set[int]:
    """Non-zero label values occurring in ``array`` (where ``inside`` is true, when given; one O(N) pass when
    values are small)."""
    if inside is not None:
        array = array[inside]
    if array.size == 0:
        return set()
    high = int(array.max())
    if high < 1 << 20:
        counts = np.bincount(array.ravel().astype(np.intp, copy=False), minlength=high + 1)
        values = np.flatnonzero(counts)
    else:
        values = np.unique(array)
    return {int(v) for v in values if v != 0}


def _validate_labels(labels: Iterable[int] | None) -> list[int] | None:
    if labels is None:
        return None
    result = []
    for value in labels:
        if isinstance(value, bool) or not float(value).is_integer() or value < 0:
            raise InputError(f"Label values must be non-negative integers, got {value!r}.")
        result.append(int(value))
    if not result:
        raise InputError("The list of labels to evaluate is empty; leave it out to evaluate every label.")
    return sorted(set(result))


def _label_name(label: int, names: Mapping[int, str] | None, reference: Image, prediction: Image) -> str:
    if names and label in names:
        return names[label]
    for image in (reference, prediction):
        info = image.label_info(label)
        if info is not None:
            return info.name
    return f"label_{label}"
