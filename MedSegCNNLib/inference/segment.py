"""``segment``: a whole image through a trained model, back on the image's own grid.

Steps: read the image (a file, a DICOM folder, an :class:`Image`, or one per channel), repeat the model
card's preprocessing exactly (crop, resample to the model's spacing, normalise), predict with a sliding
window (probabilities averaged over mirror flips and ensemble members), take the argmax, map the *label
map* back onto the original grid (nearest neighbour, crop restored), then post-process. Probabilities and
the uncertainty map, when asked for, are mapped back with linear interpolation.

Non-finite voxels (NaN, ±inf) are replaced by the channel's smallest finite value before prediction, with a
warning that gives their number and the file. On a CUDA out-of-memory error the prediction is retried with
stitching on the CPU, then entirely on the CPU, and each retry is logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import CaseSource, load_case
from ..data.preprocessing import PreprocessedCase, preprocess_case, to_source_grid
from ..errors import InputError
from ..image import Image
from ..image.io import case_name
from ..image.labels import label_dtype
from ..postprocessing import postprocess
from ..runtime import OPENVINO_INSTALL, inference_precision, openvino_version, resolve_backend, resolve_device
from .engine import Engine, engine_for
from .model import SegmentationModel, load_segmentation_model
from .options import PredictOptions
from .precision_gate import cached_decision, decide, gate_record
from .predictor import Predictor
from .sliding_window import Progress, predict_image

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
    input_name: str | None = None,
) -> SegmentationResult:
    """Segment ``image`` with ``model`` (a model folder, several folders for an ensemble, or a loaded model).

    Args:
        image: an :class:`Image`, a file, a DICOM series folder, or one of these per input channel.
        options: device, precision, test-time augmentation, post-processing and the extra results
            (probabilities: K channels; uncertainty: the entropy of the mean softmax in nats; both on the input
            grid); see :class:`PredictOptions`. Its file options (``overlay``, ``output_format``) are the caller's.
        overlap, batch_size: of the sliding window (:func:`.sliding_window.sliding_window_inference`).
        progress: called with (windows done, windows in total) after every batch of windows.
        input_name: how messages name the input (e.g. the file an in-memory image was read from); default:
            the input file(s), or "The input image".

    Example:
        >>> result = segment("case.nii.gz", "models/hippo", PredictOptions(tta=True))  # doctest: +SKIP
        >>> write_image(result.labels, "case_seg.seg.nrrd")  # doctest: +SKIP
    """
    if isinstance(model, SegmentationModel):
        loaded = model
    else:
        loaded = load_segmentation_model(model, resolve_device(options.device_choice))
    source = _load_input(image)
    _check_compatible(source, loaded)
    what = input_name or _input_text(image)
    case = preprocess_case(_finite(source, what), None, loaded.plan, name="input")
    want_probabilities = options.wants_probabilities
    flips = 2**loaded.spatial_dims if options.tta else 1

    def predict(engine: Engine, report: Progress | None) -> np.ndarray:
        return _predict_with_fallback(
            loaded, engine, case, tta=options.tta, keep_probabilities=want_probabilities, overlap=overlap,
            batch_size=batch_size, progress=report,
        )  # fmt: skip

    mean_probabilities = _predict_gated(loaded, options, predict, batch=batch_size * flips, reference=what,
                                        progress=progress)  # fmt: skip
    label_array = _labels_of(mean_probabilities).astype(label_dtype(loaded.num_classes - 1), copy=False)
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


def _load_input(image: ImageSource | Sequence[ImageSource]) -> Image:
    sources = list(image) if isinstance(image, list | tuple) else [image]
    if not sources:
        raise InputError("No input image given.")
    name = case_name(sources[0]) if not isinstance(sources[0], Image) else "input"
    case = CaseSource(name=name, images=tuple(_as_path_or_image(s) for s in sources), label=None)
    loaded, _label = load_case(case, allow_non_finite=True)
    return loaded


def _input_text(image: ImageSource | Sequence[ImageSource]) -> str:
    """The input file(s) for messages, or "The input image" for images in memory."""
    sources = list(image) if isinstance(image, list | tuple) else [image]
    files = [str(source) for source in sources if not isinstance(source, Image)]
    return ", ".join(files) if files else "The input image"


def _as_path_or_image(source: ImageSource) -> Image | Path:
    return source if isinstance(source, Image) else Path(source)


def _check_compatible(image: Image, model: SegmentationModel) -> None:
    expected = len(model.channels)
    if image.num_channels != expected:
        raise InputError(
            f"The model expects {expected} input channel(s) ({', '.join(model.channels)}); the input has "
            f"{image.num_channels}. Give one image per channel in that order."
        )
    if model.spatial_dims == 3 and image.spatial_dims == 2:
        raise InputError("This is a 3D model and the input is a 2D image; use a 2D model or a 3D volume.")


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


def _predict_gated(
    model: SegmentationModel,
    options: PredictOptions,
    predict: Callable[[Engine, Progress | None], np.ndarray],
    *,
    batch: int,
    reference: str,
    progress: Progress | None,
) -> np.ndarray:
    """``predict`` with the engine that ``options`` ask for; a reduced precision goes through the accuracy gate
    (:mod:`.precision_gate`) the first time, with this image as the reference case. A reduced precision that
    ``auto`` chose is kept only if it also predicted the reference case faster than fp32 did."""
    backend = resolve_backend(options.backend, model.device)
    precision = inference_precision(options.precision, model.device)
    if precision == "int8" and backend != "openvino":
        if openvino_version() is None:
            raise InputError(f"int8 runs on the OpenVINO backend, which is not installed; install: {OPENVINO_INSTALL}.")
        raise InputError(f"int8 runs on the OpenVINO backend, which is not used on {model.device}; use --device cpu.")
    engine = engine_for(model, backend, precision, batch=batch, cache_folder=options.cache_folder)
    if engine.precision == "fp32":
        return predict(engine, progress)
    record = gate_record(model, engine.backend, engine.precision)
    decision = cached_decision(model, record, options.cache_folder)
    wants_speed = options.precision == "auto"
    if decision is not None and decision.use_reduced(wants_speed):
        return predict(engine, progress)
    fp32 = engine_for(model, engine.backend, "fp32", batch=batch, cache_folder=options.cache_folder)
    if decision is not None:
        return predict(fp32, progress)
    start = time.perf_counter()
    reduced_output = predict(engine, progress)
    middle = time.perf_counter()
    fp32_output = predict(fp32, None)
    seconds = {"reduced": middle - start, "fp32": time.perf_counter() - middle}
    labels = _labels_of(fp32_output), _labels_of(reduced_output)
    decision = decide(model, record, options.cache_folder, *labels, reference=reference, seconds=seconds)
    chosen = decision.use_reduced(wants_speed)
    (logger.info if chosen or decision.accepted else logger.warning)("Precision check: %s.", decision.describe())
    return reduced_output if chosen else fp32_output


def predict_case_labels(model: SegmentationModel, engine: Engine, case: PreprocessedCase) -> np.ndarray:
    """The label map of a preprocessed case, on its own grid, predicted with ``engine`` as it is (no gate, no
    test-time augmentation; overlap 0.5): for comparing engines on the same case."""
    return _predict_with_fallback(
        model, engine, case, tta=False, keep_probabilities=False, overlap=0.5, batch_size=engine.batch, progress=None
    )


def _labels_of(output: np.ndarray) -> np.ndarray:
    """The label map of a prediction's output: itself, or the argmax of its (K, *S) probabilities."""
    return output.argmax(0) if output.dtype.kind == "f" else output


def _predict_with_fallback(
    model: SegmentationModel,
    engine: Engine,
    case: PreprocessedCase,
    *,
    tta: bool,
    keep_probabilities: bool,
    overlap: float,
    batch_size: int,
    progress: Progress | None,
) -> np.ndarray:
    """:func:`_predict`, retried on a CUDA out-of-memory error with stitching on the CPU, then on the CPU."""

    def predict(on: Engine, device: torch.device, accumulation_device: torch.device | None) -> np.ndarray:
        return _predict(
            on, device, model.patch_size, case, tta=tta, keep_probabilities=keep_probabilities, overlap=overlap,
            batch_size=batch_size, progress=progress, accumulation_device=accumulation_device,
        )  # fmt: skip

    try:
        return predict(engine, model.device, None)
    except torch.cuda.OutOfMemoryError:
        if model.device.type != "cuda":
            raise
        logger.warning("Out of GPU memory; retrying with the stitching buffers on the CPU.")
        torch.cuda.empty_cache()
    try:
        return predict(engine, model.device, torch.device("cpu"))
    except torch.cuda.OutOfMemoryError:
        logger.warning("Still out of GPU memory; predicting on the CPU (slower).")
        torch.cuda.empty_cache()
    precision = "fp32" if engine.precision == "fp16" else engine.precision  # fp16 autocast needs a GPU
    on_cpu = Engine(tuple(n.to("cpu") for n in model.networks), "torch", precision, engine.batch)
    return predict(on_cpu, torch.device("cpu"), None)


@torch.inference_mode()
def _predict(
    engine: Engine,
    device: torch.device,
    patch_size: tuple[int, ...],
    case: PreprocessedCase,
    *,
    tta: bool,
    keep_probabilities: bool,
    overlap: float,
    batch_size: int,
    progress: Progress | None,
    accumulation_device: torch.device | None,
) -> np.ndarray:
    """Mean probabilities (K, *shape) when ``keep_probabilities``, else the label map (*shape)."""
    predictor = Predictor(engine.networks, mirror_axes=tuple(range(len(patch_size))) if tta else ())
    tensor = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32)).to(device)
    with engine.running():
        output = predict_image(
            tensor, predictor, patch_size, overlap=overlap, batch_size=batch_size,
            output="average" if keep_probabilities else "labels", precision=engine.autocast,
            channels_last=engine.channels_last, accumulation_device=accumulation_device, progress=progress,
        )  # fmt: skip
    return output.cpu().numpy()


def _on_source_grid(case: PreprocessedCase, label_array: np.ndarray, *, labels) -> Image:
    mapped = to_source_grid(label_array, case, interpolation="nearest", fill=0)
    return case.source_geometry.image(mapped, labels=labels)


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of the class distribution per voxel, −Σ p log p, in nats (0 = certain)."""
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return (-(probabilities * np.log(clipped)).sum(0)).astype(np.float32)
