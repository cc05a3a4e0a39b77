"""``evaluate``: compare predicted label maps with reference label maps, per case and per label."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..image import Image, resample_labels_onto
from ..image.cases import pair_cases
from ..image.io import case_name, read_image
from ..image.labels import as_label_array
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
) -> EvaluationResult:
    """Compute segmentation metrics of ``prediction`` against ``reference``.

    Args:
        prediction, reference: label maps given as :class:`Image`, as file paths, as two folders (cases are
            matched by file name without extension) or as two equally long sequences of images/paths.
        labels: label values to report. Default: every non-zero value found in either map of a case, so a
            label present in one map only is reported (with Dice 0 and infinite distances), never skipped.
        nsd_tolerance_mm: tolerance τ of the normalised surface Dice, in mm.
        label_names: names for label values; otherwise names stored in the reference (e.g. ``.seg.nrrd``),
            then in the prediction, then ``label_<value>``.
        surface: compute surface-distance metrics (HD, HD95, ASSD, NSD); ``False`` is faster and leaves
            them NaN.
        case: case name for a single in-memory pair (file inputs are named after the file).
        on_case: called with each case's result as soon as it is computed (progress reporting).

    A reference on a different voxel grid is resampled (nearest neighbour) onto the prediction's grid when
    the two overlap physically; this is logged and flagged in the rows (``reference_resampled``). Images
    that do not overlap raise :class:`~MedSegCNNLib.errors.GeometryError`. See
    :mod:`MedSegCNNLib.metrics.label_metrics` for the exact metric definitions and the empty-mask policy.

    Example:
        >>> result = evaluate("pred/case_01.nii.gz", "labels/case_01.nii.gz", labels=[1, 2])
        >>> result.summary()[1]["dice"]["mean"]  # doctest: +SKIP
    """
    if not (nsd_tolerance_mm >= 0 and np.isfinite(nsd_tolerance_mm)):
        raise InputError(f"The NSD tolerance must be a non-negative number of mm, got {nsd_tolerance_mm}.")
    label_list = _validate_labels(labels)
    cases = []
    for name, pred_source, ref_source in _case_pairs(prediction, reference, case):
        result = evaluate_case(
            name,
            pred_source,
            ref_source,
            label_list,
            nsd_tolerance_mm=nsd_tolerance_mm,
            label_names=label_names,
            surface=surface,
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
) -> CaseEvaluation:
    """Metrics of one (prediction, reference) pair; see :func:`evaluate`."""
    pred = _load_label_map(prediction, "prediction", name)
    ref = _load_label_map(reference, "reference", name)
    resampled = False
    if not pred.same_grid(ref):
        if pred.spatial_dims != ref.spatial_dims:
            raise InputError(
                f"Case {name}: the prediction is {pred.spatial_dims}D but the reference is {ref.spatial_dims}D."
            )
        logger.warning(
            "Case %s: the reference (size %s, spacing %s) is on another grid than the prediction (size %s, "
            "spacing %s); resampling the reference onto the prediction's grid (nearest neighbour).",
            name,
            ref.size,
            _fmt(ref.spacing),
            pred.size,
            _fmt(pred.spacing),
        )
        ref = resample_labels_onto(ref, pred)
        resampled = True
    evaluated = labels if labels is not None else sorted(_present_labels(pred.array) | _present_labels(ref.array))
    metrics = compute_label_metrics(
        pred.array, ref.array, evaluated, pred.array_spacing, nsd_tolerance_mm=nsd_tolerance_mm, surface=surface
    )
    names = {label: _label_name(label, label_names, ref, pred) for label in evaluated}
    return CaseEvaluation(case=name, metrics=metrics, names=names, reference_resampled=resampled)


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


def _source_name(source: ImageSource, default: str) -> str:
    return default if isinstance(source, Image) else case_name(source)


def _load_label_map(source: ImageSource, role: str, name: str) -> Image:
    """The label map ``source`` (by :func:`~MedSegCNNLib.image.labels.as_label_array`; float files with whole values are
    accepted), named in messages as the ``role`` of case ``name``."""
    image = source if isinstance(source, Image) else read_image(source)
    where = "" if isinstance(source, Image) else f" {source}"
    what = f"Case {name}: the {role}{where}"
    return image.with_array(as_label_array(image, allow_whole_floats=True, what=what, retry="evaluate again"))


def _present_labels(array: np.ndarray) -> set[int]:
    """Non-zero label values occurring in ``array`` (one O(N) pass when values are small)."""
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


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
