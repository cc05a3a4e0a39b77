"""``segment``: a whole image through a trained model, back on the image's own grid.

Steps: read the image (a file, a DICOM folder, an :class:`Image`, or one per channel), repeat the model
card's preprocessing exactly (crop, resample to the model's spacing, normalise), predict with a sliding
window (probabilities averaged over mirror flips and ensemble members), take the argmax, map the *label
map* back onto the original grid (nearest neighbour, crop restored), then post-process. Probabilities and
the uncertainty map, when asked for, are mapped back with linear interpolation. A 2D image (a picture, or a
2D NIfTI/NRRD) gives a 2D label map on its grid; a 2D model segments a 3D volume slice by slice.

Non-finite voxels (NaN, ±inf) are replaced by the channel's smallest finite value before prediction, with a
warning that gives their number and the file. On a CUDA out-of-memory error the prediction is retried with
stitching on the CPU, then entirely on the CPU, and each retry is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import CaseSource, load_case
from ..data.nnunet.plan import NnUNetPlan
from ..data.preprocessing import PreprocessedCase, preprocess_case, to_source_grid
from ..errors import InputError
from ..image import Image
from ..image.geometry import Grid
from ..image.io import case_name
from ..image.labels import label_dtype
from ..postprocessing import postprocess
from ..runtime import resolve_device
from .model import SegmentationModel, load_segmentation_model
from .nnunet_inference import segment_nnunet
from .options import PredictOptions
from .prediction import WindowRecipe, labels_of, predict_gated
from .sliding_window import Progress

logger = logging.getLogger(__name__)

ImageSource = Image | str | os.PathLike[str]
DEFAULT_OPTIONS = PredictOptions()


@dataclass(frozen=True)
class SegmentationResult:
    """The label map on the input's grid; probabilities (K channels) and uncertainty when asked for."""

    labels: Image
    probabilities: Image | None = None
    uncertainty: Image | None = None


def segment(
    image: ImageSource | Sequence[ImageSource],
    model: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | SegmentationModel,
    options: PredictOptions = DEFAULT_OPTIONS,
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
    progress: Progress | None = None,
    input_name: str | Sequence[str] | None = None,
) -> SegmentationResult:
    """Segment ``image`` with ``model`` (a model folder, several folders for an ensemble, or a loaded model).

    Args:
        image: an :class:`Image`, a file, a DICOM series folder, or one of these per input channel.
        options: device, precision, test-time augmentation, post-processing and the extra results
            (probabilities: K channels; uncertainty: the entropy of the mean softmax in nats; both on the input
            grid); see :class:`PredictOptions`. Its file options (``overlay``, ``output_format``) are the caller's.
        overlap, batch_size: of the sliding window (:func:`.sliding_window.sliding_window_inference`).
        progress: called with (windows done, windows in total) after every batch of windows.
        input_name: how messages name the input: one name, or one per input image (e.g. the files in-memory
            images were read from); default: the input file(s), or "The input image".

    Example:
        >>> result = segment("case.nii.gz", "models/hippo", PredictOptions(tta=True))  # doctest: +SKIP
        >>> write_image(result.labels, "case_seg.seg.nrrd")  # doctest: +SKIP
    """
    if isinstance(model, SegmentationModel):
        loaded = model
    else:
        loaded = load_segmentation_model(model, resolve_device(options.device_choice))
    names = [input_name] if isinstance(input_name, str) else None if input_name is None else list(input_name)
    what = ", ".join(names) if names else _input_text(image)
    source = load_checked_input(image, loaded, names, allow_partial_channels=options.allow_partial_channels)
    if isinstance(loaded.plan, NnUNetPlan):
        return _segment_imported_nnunet(_finite(source, what), loaded, options, what, overlap, batch_size, progress)
    case = preprocess_case(_finite(source, what), None, loaded.plan, name="input")
    want_probabilities = options.wants_probabilities
    recipe = WindowRecipe(
        output="average" if want_probabilities else "labels",
        mirror_axes=tuple(range(loaded.spatial_dims)) if options.tta else (),
        overlap=overlap,
        batch_size=batch_size,
    )

    mean_probabilities = predict_gated(loaded, options, case.image, recipe, reference=what, progress=progress)
    label_array = labels_of(mean_probabilities).astype(label_dtype(loaded.num_classes - 1), copy=False)
    labels = _on_source_grid(case, label_array, labels=loaded.labels)
    if options.postprocessing.active:
        labels = postprocess(labels, options.postprocessing)
    result = SegmentationResult(labels=labels)
    if want_probabilities:
        fill = [1.0] + [0.0] * (loaded.num_classes - 1)  # outside the crop: background for sure
        mapped = to_source_grid(mean_probabilities, case, interpolation="linear", fill=fill)
        result = SegmentationResult(
            labels=labels,
            probabilities=case.source_geometry.image(mapped) if options.probabilities else None,
            uncertainty=case.source_geometry.image(_entropy(mapped)) if options.uncertainty else None,
        )
    return result


def _segment_imported_nnunet(
    source: Image,
    model: SegmentationModel,
    options: PredictOptions,
    what: str,
    overlap: float,
    batch_size: int,
    progress: Progress | None,
) -> SegmentationResult:
    """:func:`segment` with an imported nnU-Net model (:func:`.nnunet_inference.segment_nnunet`)."""
    label_array, probabilities = segment_nnunet(source, model, options, reference=what, overlap=overlap,
                                                batch_size=batch_size, progress=progress)  # fmt: skip
    grid = Grid.of(source)
    labels = grid.image(label_array, labels=model.labels)
    if options.postprocessing.active:
        labels = postprocess(labels, options.postprocessing)
    if probabilities is None:
        return SegmentationResult(labels=labels)
    return SegmentationResult(
        labels=labels,
        probabilities=grid.image(probabilities) if options.probabilities else None,
        uncertainty=grid.image(_entropy(probabilities)) if options.uncertainty else None,
    )


def load_checked_input(
    image: ImageSource | Sequence[ImageSource],
    model: SegmentationModel,
    names: Sequence[str] | None = None,
    *,
    allow_partial_channels: bool = False,
) -> Image:
    """The input of :func:`segment` read (channels on the first one's grid) and checked against ``model``: its
    channels and its dimension (a 2D image for a 3D model is refused). ``names``: how messages name the input
    images, one each (else their files)."""
    source = _load_input(image, names, allow_partial_channels=allow_partial_channels)
    _check_compatible(source, model, ", ".join(names) if names else _input_text(image))
    return source


def _load_input(
    image: ImageSource | Sequence[ImageSource], names: Sequence[str] | None, *, allow_partial_channels: bool
) -> Image:
    """The input channels as one image on the first one's grid (:func:`~MedSegCNNLib.data.dataset.load_case`);
    ``names``: how messages name the input images, one each (else their files)."""
    sources = list(image) if isinstance(image, list | tuple) else [image]
    if not sources:
        raise InputError("No input image given.")
    first = names[0] if names else sources[0]
    name = case_name(first) if not isinstance(first, Image) else "input"
    case = CaseSource(
        name=name,
        images=tuple(_as_path_or_image(s) for s in sources),
        allow_partial_channels=allow_partial_channels,
    )
    loaded, _label = load_case(
        case, allow_non_finite=True, names=names if names is not None and len(names) == len(sources) else None
    )
    return loaded


def _input_text(image: ImageSource | Sequence[ImageSource]) -> str:
    """The input file(s) for messages, or "The input image" for images in memory."""
    sources = list(image) if isinstance(image, list | tuple) else [image]
    files = [str(source) for source in sources if not isinstance(source, Image)]
    return ", ".join(files) if files else "The input image"


def _as_path_or_image(source: ImageSource) -> Image | Path:
    return source if isinstance(source, Image) else Path(source)


def _check_compatible(image: Image, model: SegmentationModel, what: str) -> None:
    expected = len(model.channels)
    if expected == 1 and image.num_channels == 3 and image.spatial_dims == 2:
        raise InputError(
            f"The model expects 1 input channel ({model.channels[0]}); the input has 3, a colour picture. Give a "
            "grayscale image (e.g. its luminance), or use a model trained on colour pictures."
        )
    if image.num_channels != expected:
        raise InputError(
            f"The model expects {expected} input channel(s) ({', '.join(model.channels)}); the input has "
            f"{image.num_channels}. Give one image per channel in that order."
        )
    if model.spatial_dims == 3 and image.spatial_dims == 2:
        raise InputError(f"{what} is a 2D image, but this is a 3D model; use a 2D model or a 3D volume.")


def _finite(image: Image, what: str) -> Image:
    """``image`` with NaN/±inf voxels set to their channel's smallest finite value (0 if none), with a warning
    naming ``what`` (the input file)."""
    array = image.array
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        array = array.copy()
        channels = array if image.is_multichannel else array[None]
        for channel in channels:
            finite = np.isfinite(channel)
            channel[~finite] = channel[finite].min() if finite.any() else 0.0
        logger.warning(
            "%s has %d non-finite voxels (NaN or infinite) of %d; they were set to their channel's smallest finite "
            "value before prediction.",
            what,
            bad,
            array.size,
        )
        return image.with_array(array)
    return image


def _on_source_grid(case: PreprocessedCase, label_array: np.ndarray, *, labels) -> Image:
    mapped = to_source_grid(label_array, case, interpolation="nearest", fill=0)
    return case.source_geometry.image(mapped, labels=labels)


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of the class distribution per voxel, −Σ p log p, in nats (0 = certain)."""
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return (-(probabilities * np.log(clipped)).sum(0)).astype(np.float32)
