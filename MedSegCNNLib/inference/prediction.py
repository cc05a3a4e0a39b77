"""Prediction of one preprocessed image with a model's engine: the accuracy gate for reduced precisions, the
CUDA out-of-memory fallbacks, and the sliding window over the predictor. Shared by :mod:`.segment` (MedSegCNN's
own preprocessing) and :mod:`.nnunet_inference` (imported nnU-Net models).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.preprocessing import PreprocessedCase
from ..errors import InputError
from ..runtime import OPENVINO_INSTALL, inference_precision, openvino_version, resolve_backend
from .engine import Engine, engine_for
from .model import SegmentationModel
from .options import PredictOptions
from .precision_gate import cached_decision, decide, gate_record
from .predictor import Predictor, RememberedWindows, RememberingPredictor
from .sliding_window import Progress, predict_image, window_starts

logger = logging.getLogger(__name__)


def predict_gated(
    model: SegmentationModel,
    options: PredictOptions,
    image: np.ndarray,
    recipe: WindowRecipe,
    *,
    reference: str,
    progress: Progress | None,
) -> np.ndarray:
    """The ``recipe``'s output for the preprocessed ``image`` (C, *S) with the engine that ``options`` ask for.

    A reduced precision goes through the accuracy gate (:mod:`.precision_gate`) the first time: on the image's
    central window (:func:`gate_sample`), or on the whole image when it fits in one window (its outputs are then
    kept, so nothing is predicted twice). A reduced precision that ``auto`` chose is kept only if it also predicted
    that window faster than fp32 did. Once decided (this process or the cache), a refused precision's engine is
    not built again. ``reference`` names the image in the gate's record."""
    backend = resolve_backend(options.backend, model.device)
    precision = inference_precision(options.precision, model.device)
    if precision == "int8" and backend != "openvino":
        if openvino_version() is None:
            raise InputError(f"int8 runs on the OpenVINO backend, which is not installed; install: {OPENVINO_INSTALL}.")
        raise InputError(f"int8 runs on the OpenVINO backend, which is not used on {model.device}; use --device cpu.")
    batch = recipe.batch_size * 2 ** len(recipe.mirror_axes)
    wants_speed = options.precision == "auto"

    gate_windows = RememberedWindows()  # the gate's fp32 window, reused if fp32 predicts the image

    def predict(on: Engine, region: np.ndarray, report: Progress | None, *, record: bool = False) -> np.ndarray:
        memory = gate_windows if on.precision == "fp32" and (record or gate_windows.entries) else None
        return predict_with_fallback(model, on, region, recipe, report, memory=memory, record=record)

    def fp32_engine(on_backend: str) -> Engine:
        return engine_for(model, on_backend, "fp32", batch=batch, cache_folder=options.cache_folder)

    if precision != "fp32":  # a decision already taken against the reduced precision: its engine is not built
        decision = cached_decision(model, gate_record(model, backend, precision), options.cache_folder)
        if decision is not None and not decision.use_reduced(wants_speed):
            return predict(fp32_engine(backend), image, progress)
    engine = engine_for(model, backend, precision, batch=batch, cache_folder=options.cache_folder)
    if engine.precision == "fp32":
        return predict(engine, image, progress)
    record = gate_record(model, engine.backend, engine.precision)
    decision = cached_decision(model, record, options.cache_folder)
    if decision is not None and decision.use_reduced(wants_speed):
        return predict(engine, image, progress)
    fp32 = fp32_engine(engine.backend)
    if decision is not None:
        return predict(fp32, image, progress)
    sample = gate_sample(image, model.patch_size, recipe.overlap)
    whole = sample is None
    start = time.perf_counter()
    reduced_output = predict(engine, image if whole else sample, progress if whole else None)
    middle = time.perf_counter()
    fp32_output = predict(fp32, image if whole else sample, None, record=not whole)
    seconds = {"reduced": middle - start, "fp32": time.perf_counter() - middle}
    labels = labels_of(fp32_output), labels_of(reduced_output)
    where = reference if whole else f"the central window of {reference}"
    decision = decide(model, record, options.cache_folder, *labels, reference=where, seconds=seconds)
    chosen = decision.use_reduced(wants_speed)
    (logger.info if chosen or decision.accepted else logger.warning)("Precision check: %s.", decision.describe())
    if whole:
        return reduced_output if chosen else fp32_output
    return predict(engine if chosen else fp32, image, progress)


def gate_sample(image: np.ndarray, patch_size: Sequence[int], overlap: float = 0.5) -> np.ndarray | None:
    """The central window of ``image`` (C, *S), on which the accuracy gate compares precisions: of the sliding
    window's windows (``overlap``), the one nearest the image's centre (the first of two as near), one patch per
    axis (the whole axis where it is shorter; for a 2D model on a volume, one slice); None when the whole image fits
    in one window. Being one of the image's own windows, its fp32 output serves the image's fp32 prediction too."""
    sizes = image.shape[1:]
    window = (1,) * (len(sizes) - len(patch_size)) + tuple(patch_size)  # a 2D model runs a volume slice by slice
    if all(size <= patch for size, patch in zip(sizes, window, strict=True)):
        return None

    def central_start(size: int, patch: int) -> int:
        return min(window_starts(size, patch, overlap), key=lambda start: (abs(start - (size - patch) / 2), start))

    box = tuple(
        slice(central_start(size, patch), central_start(size, patch) + patch) if size > patch else slice(None)
        for size, patch in zip(sizes, window, strict=True)
    )
    return np.ascontiguousarray(image[(slice(None), *box)])


def predict_case_labels(model: SegmentationModel, engine: Engine, case: PreprocessedCase) -> np.ndarray:
    """The label map of a preprocessed case, on its own grid, predicted with ``engine`` as it is (no gate, no
    test-time augmentation; overlap 0.5): for comparing engines on the same case."""
    return predict_with_fallback(model, engine, case.image, WindowRecipe(batch_size=engine.batch), None)


def labels_of(output: np.ndarray) -> np.ndarray:
    """The label map of a prediction's output: itself, or the argmax of its (K, *S) probabilities."""
    return output.argmax(0) if output.dtype.kind == "f" else output


@dataclass(frozen=True)
class WindowRecipe:
    """How a preprocessed image is predicted window by window.

    ``output``: ``"labels"`` (the label map) or ``"average"`` (the (K, *S) mean of the predictor's output);
    ``mirror_axes``: spatial axes whose flips are averaged; ``average``: the :class:`~.predictor.Predictor`'s
    (``"probabilities"`` or ``"logits"``); ``window_weights``: the importance map's mode
    (:data:`~.sliding_window.MODES`); ``overlap`` and ``batch_size``: the sliding window's; ``average_dtype``:
    the torch type of the ``"average"`` output (``"float16"`` halves its memory).
    """

    output: str = "labels"
    mirror_axes: tuple[int, ...] = ()
    average: str = "probabilities"
    window_weights: str = "gaussian"
    overlap: float = 0.5
    batch_size: int = 2
    average_dtype: str = "float32"


def predict_with_fallback(
    model: SegmentationModel,
    engine: Engine,
    image: np.ndarray,
    recipe: WindowRecipe,
    progress: Progress | None,
    *,
    memory: RememberedWindows | None = None,
    record: bool = False,
) -> np.ndarray:
    """:func:`_predict`, retried on a CUDA out-of-memory error with stitching on the CPU, then on the CPU. With
    ``memory``, windows predicted before are taken from it (and, with ``record``, new ones kept there): see
    :class:`~.predictor.RememberingPredictor`."""

    def predict(
        on: Engine,
        device: torch.device,
        accumulation_device: torch.device | None,
        remembered: RememberedWindows | None = memory,
    ) -> np.ndarray:
        return _predict(on, device, model.patch_size, image, recipe, progress, accumulation_device, remembered, record)

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
    return predict(on_cpu, torch.device("cpu"), None, remembered=None)  # remembered outputs live on the GPU


@torch.inference_mode()
def _predict(
    engine: Engine,
    device: torch.device,
    patch_size: tuple[int, ...],
    image: np.ndarray,
    recipe: WindowRecipe,
    progress: Progress | None,
    accumulation_device: torch.device | None,
    memory: RememberedWindows | None = None,
    record: bool = False,
) -> np.ndarray:
    """The recipe's output for ``image`` (C, *shape): the (K, *shape) average or the label map (*shape)."""
    predictor: Callable[[torch.Tensor], torch.Tensor] = Predictor(
        engine.networks, mirror_axes=recipe.mirror_axes, average=recipe.average
    )
    if memory is not None:
        predictor = RememberingPredictor(predictor, memory, record=record)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    with engine.running():
        output = predict_image(
            tensor, predictor, patch_size, overlap=recipe.overlap, batch_size=recipe.batch_size,
            mode=recipe.window_weights, output=recipe.output, precision=engine.autocast,
            channels_last=engine.channels_last, accumulation_device=accumulation_device, progress=progress,
            average_dtype=getattr(torch, recipe.average_dtype),
        )  # fmt: skip
    return output.cpu().numpy()
