"""int8 models: post-training quantisation with NNCF, calibrated on a few of the model's cases, for OpenVINO.

:func:`quantize_model` converts a model folder's network to OpenVINO (fp32 IR) and gives NNCF's quantiser
windows of calibration cases, preprocessed exactly as prediction does (windows tiling each case; images smaller
than the window padded as the sliding window pads them). It quantises with the "mixed" preset (asymmetric
activations, which fit LeakyReLU's negative side) and leaves the classifier (the last convolution) in fp32.
The int8 IR goes into ``<model folder>/int8/`` (``network.xml``/``.bin``) with ``int8.json``, the record that
keys it: the weights' SHA-256 and the input shape, as the cache keys its entries, plus the OpenVINO and NNCF
versions, the calibration cases, the check of int8 against fp32 on them and the SHA-256 of the two IR files
(a damaged or replaced file is refused).
:func:`~.openvino_backend.int8_model` finds it for prediction (``--precision int8``) and refuses one made from
other weights or for another window. NNCF is an optional extra (``medsegcnn[int8]``),
imported here only; its usage telemetry is off, as OpenVINO's (:func:`~.openvino_backend.import_openvino`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_folder, write_text_atomic
from ..checkpoint.model_archive import CARD_FILE
from ..data.dataset import CaseSource, load_case, load_dataset
from ..data.preprocessing import PreprocessedCase, preprocess_case
from ..errors import InputError
from ..image.cases import list_cases
from ..metrics.overlap import confusion_counts, overlap_scores
from ..registry import resolve_model_folder
from ..runtime import openvino_version, user_cache_folder
from .cache import weights_sha256
from .engine import Engine, engine_for
from .model import SegmentationModel, load_segmentation_model
from .openvino_backend import (
    INT8_FOLDER,
    INT8_NETWORK,
    INT8_RECORD,
    compile_model,
    convert,
    int8_files_sha256,
    openvino_core,
    save_ir,
    without_telemetry,
)
from .precision_gate import MIN_DICE
from .prediction import predict_case_labels
from .sliding_window import pad_to_patch, window_starts

logger = logging.getLogger(__name__)

NNCF_INSTALL = 'pip install "medsegcnn[int8]" (or: pip install nncf openvino)'
#: The most calibration windows given to NNCF (its default subset size).
MAX_WINDOWS = 300


def quantize_model(
    model: str | os.PathLike[str],
    calibration: str | os.PathLike[str],
    *,
    cases: int = 16,
    overwrite: bool = False,
    cache_folder: Path | None = None,
) -> Path:
    """Write the int8 version of ``model`` (a model folder or registry name) into ``<model>/int8/``, calibrated on
    the first ``cases`` cases of ``calibration`` (a dataset folder, or a folder of images); returns that folder.

    Use cases like those the model will segment (its training or validation cases): NNCF sets the int8 ranges
    from their activations. Every calibration case is then segmented at int8 and at fp32; the lowest Dice per label
    is recorded, and an int8 version below :data:`~.precision_gate.MIN_DICE` for any label is kept but not used
    (prediction runs at fp32 with a warning). ``cache_folder``: where the fp32 conversion is cached.
    """
    folder = resolve_model_folder(model)
    if not (folder / CARD_FILE).is_file():
        raise InputError(f"{folder} is not a model folder; int8 versions are made of model folders.")
    if cases < 1:
        raise InputError(f"--cases must be at least 1; got {cases}.")
    nncf = _import_nncf()
    loaded = load_segmentation_model(folder, torch.device("cpu"))
    shape = (1, len(loaded.channels), *loaded.patch_size)
    sources = _calibration_cases(calibration, cases)
    preprocessed = [preprocess_case(load_case(source)[0], None, loaded.plan, name=source.name) for source in sources]
    windows = _calibration_windows(preprocessed, shape)
    logger.info("Calibrating on %d windows of %d case(s).", len(windows), len(sources))
    network = loaded.networks[0]  # a model folder holds one network
    record = {
        "weights_sha256": weights_sha256(network),
        "input_shape": list(shape),
        "openvino": openvino_version(),
        "nncf": nncf.__version__,
        "calibration": [case.name for case in sources],
        "windows": len(windows),
    }
    with without_telemetry(), atomic_folder(folder / INT8_FOLDER, overwrite=overwrite) as partial:
        quantized = quantize_network(network, shape, windows)
        record["check"] = _check(loaded, quantized, preprocessed, cache_folder or user_cache_folder())
        save_ir(quantized, partial / INT8_NETWORK)
        openvino_core().read_model(partial / INT8_NETWORK)  # read back before the folder is renamed into place
        record["files"] = int8_files_sha256(partial)
        write_text_atomic(partial / INT8_RECORD, json.dumps(record, indent=1))
    return folder / INT8_FOLDER


def quantize_network(network: torch.nn.Module, input_shape: Sequence[int], windows: Sequence[np.ndarray]) -> Any:
    """The int8 OpenVINO model of ``network`` for inputs of ``input_shape``, calibrated on ``windows`` (arrays of
    that shape, preprocessed as prediction preprocesses): NNCF's "mixed" preset, the classifier left in fp32."""
    nncf = _import_nncf()
    converted = convert(network, tuple(input_shape))
    with without_telemetry():
        return nncf.quantize(
            converted, nncf.Dataset(list(windows)), subset_size=len(windows), preset=nncf.QuantizationPreset.MIXED,
            ignored_scope=nncf.IgnoredScope(names=[_output_convolution(converted)]),
        )  # fmt: skip


def _output_convolution(model: Any) -> str:
    """The name of the last convolution of an OpenVINO model: the classifier, left in fp32 (its outputs decide the
    argmax directly, so quantising it moves boundaries most)."""
    convolutions = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    if not convolutions:
        raise InputError("The network has no convolution to quantise.")
    return convolutions[-1]


def _import_nncf() -> Any:
    if openvino_version() is None:
        raise InputError(f"int8 needs OpenVINO and NNCF; install them with: {NNCF_INSTALL}.")
    try:
        with without_telemetry():
            import nncf
    except ImportError:
        raise InputError(f"int8 needs NNCF, which is not installed; install it with: {NNCF_INSTALL}.") from None
    return nncf


def _calibration_cases(calibration: str | os.PathLike[str], count: int) -> list[CaseSource]:
    """The first ``count`` cases of a dataset folder, or of a folder of images (one file per case)."""
    path = Path(calibration)
    if not path.is_dir():
        raise InputError(f"--calibration {path} is not a folder; give a dataset folder or a folder of images.")
    try:
        cases = list(load_dataset(path).cases)
    except InputError:
        cases = [CaseSource(name=name, images=(file,)) for name, file in list_cases(path).items()]
    return cases[:count]


def _calibration_windows(cases: Sequence[PreprocessedCase], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Windows of ``shape`` (1, C, *patch) tiling each preprocessed case (at most :data:`MAX_WINDOWS`, spread
    evenly over the cases); a 2D model on volumes gets the volumes' slices."""
    patch = shape[2:]
    per_case = max(MAX_WINDOWS // len(cases), 1)
    windows: list[np.ndarray] = []
    for case in cases:
        array = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
        planes = array.permute(1, 0, 2, 3) if len(patch) == 2 and array.ndim == 4 else array[None]
        tiles = [tile for plane in planes for tile in _tiles(plane, patch)]
        step = max(len(tiles) / per_case, 1.0)
        windows += [tiles[math.floor(i * step)][None].numpy() for i in range(min(per_case, len(tiles)))]
    if not windows:
        raise InputError("The calibration cases gave no windows; give at least one case the model can segment.")
    return windows


def _check(model: SegmentationModel, quantized: Any, cases: Sequence[PreprocessedCase], cache: Path) -> dict:
    """The lowest Dice per foreground label between the int8 and fp32 segmentations of ``cases``, the case that
    gave it, and whether every label reached :data:`~.precision_gate.MIN_DICE`."""
    fp32 = engine_for(model, "openvino", "fp32", batch=2, cache_folder=cache)
    int8 = Engine((compile_model(quantized, "int8"),), "openvino", "int8", 2)
    values = [label.value for label in model.labels]
    lowest = {value: (1.0, "") for value in values}
    for case in cases:
        reference, labels = predict_case_labels(model, fp32, case), predict_case_labels(model, int8, case)
        dice = overlap_scores(confusion_counts(labels, reference, values)).dice
        for value, score in zip(values, dice, strict=True):
            lowest[value] = min(lowest[value], (float(score), case.name))
    accepted = all(score >= MIN_DICE for score, _ in lowest.values())
    for value, (score, name) in lowest.items():
        logger.info("int8 vs fp32 on %d calibration case(s): label %s lowest Dice %.4f (%s).", len(cases), value,
                    score, name)  # fmt: skip
    if not accepted:
        logger.warning("The int8 version changes the segmentation (Dice below %s); prediction will stay at fp32. "
                       "Calibrate on more cases like those to segment, or use bf16.", MIN_DICE)  # fmt: skip
    return {"min_dice": {str(value): score for value, (score, _) in lowest.items()},
            "worst_case": {str(value): name for value, (_, name) in lowest.items()},
            "required": MIN_DICE, "accepted": accepted}  # fmt: skip


def _tiles(image: torch.Tensor, patch: Sequence[int]) -> list[torch.Tensor]:
    """Non-overlapping windows of ``patch`` covering ``image`` (C, *S), padded as the sliding window pads."""
    image, _ = pad_to_patch(image, patch)
    starts = [window_starts(s, p, 0.0) for s, p in zip(image.shape[1:], patch, strict=True)]
    boxes = np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(patch))
    return [image[(slice(None), *(slice(b, b + p) for b, p in zip(box, patch, strict=True)))] for box in boxes]
