"""int8 models: post-training quantisation with NNCF, calibrated on a few of the model's cases, for OpenVINO.

:func:`quantize_model` converts a model folder's network to OpenVINO (fp32 IR) and gives NNCF's quantiser
windows of calibration cases, preprocessed exactly as prediction does (windows tiling each case; images smaller
than the window padded as the sliding window pads them). It quantises with the "mixed" preset (asymmetric
activations, which fit LeakyReLU's negative side) and leaves the classifier (the last convolution) in fp32.
The int8 IR goes into ``<model folder>/int8/`` (``network.xml``/``.bin``) with ``int8.json``, the record that
keys it: the weights' SHA-256 and the input shape, as the cache keys its entries, plus the OpenVINO and NNCF
versions and the calibration cases. :func:`int8_network` finds it for prediction (``--precision int8``) and
refuses one made from other weights or for another window. NNCF is an optional extra (``medsegcnn[int8]``),
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
import torch.nn.functional as F

from ..atomic import atomic_folder, flush_to_disk, write_text_atomic
from ..data.dataset import CaseSource, load_case, load_dataset
from ..data.preprocessing import preprocess_case
from ..errors import InputError
from ..image.cases import list_cases
from ..registry import resolve_model_folder
from ..runtime import openvino_version
from .cache import weights_sha256
from .model import load_segmentation_model
from .openvino_backend import convert, import_openvino, openvino_core, without_telemetry
from .sliding_window import window_starts

logger = logging.getLogger(__name__)

INT8_FOLDER = "int8"
RECORD_FILE = "int8.json"
NETWORK_FILE = "network.xml"
NNCF_INSTALL = 'pip install "medsegcnn[int8]" (or: pip install nncf openvino)'
#: The most calibration windows given to NNCF (its default subset size).
MAX_WINDOWS = 300


def quantize_model(
    model: str | os.PathLike[str],
    calibration: str | os.PathLike[str],
    *,
    cases: int = 16,
    overwrite: bool = False,
) -> Path:
    """Write the int8 version of ``model`` (a model folder or registry name) into ``<model>/int8/``, calibrated on
    the first ``cases`` cases of ``calibration`` (a dataset folder, or a folder of images); returns that folder.

    Use cases like those the model will segment (its training or validation cases): NNCF sets the int8 ranges
    from their activations.
    """
    folder = resolve_model_folder(model)
    if not (folder / "model.json").is_file():
        raise InputError(f"{folder} is not a model folder; int8 versions are made of model folders.")
    if cases < 1:
        raise InputError(f"--cases must be at least 1; got {cases}.")
    nncf = _import_nncf()
    ov = import_openvino()
    loaded = load_segmentation_model(folder, torch.device("cpu"))
    shape = (1, len(loaded.channels), *loaded.patch_size)
    sources = _calibration_cases(calibration, cases)
    windows = _calibration_windows(sources, loaded, shape)
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
        ov.save_model(quantized, partial / NETWORK_FILE, compress_to_fp16=False)
        for written in (NETWORK_FILE, NETWORK_FILE.replace(".xml", ".bin")):
            flush_to_disk(partial / written)
        openvino_core().read_model(partial / NETWORK_FILE)  # read back before the folder is renamed into place
        write_text_atomic(partial / RECORD_FILE, json.dumps(record, indent=1))
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


def int8_network(source: Path, network: torch.nn.Module, input_shape: Sequence[int]) -> Any:
    """The OpenVINO model of the int8 version of the model folder ``source`` (whose network is ``network``); an
    error that says what to do when there is none, or when it was made from other weights or for another window."""
    record_path = source / INT8_FOLDER / RECORD_FILE
    remedy = f"make it with: medsegcnn quantize --model {source} --calibration DATASET"
    if not record_path.is_file():
        raise InputError(f"The model {source} has no int8 version; {remedy}.")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        made_for = (record["weights_sha256"], tuple(record["input_shape"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"The int8 record {record_path} is unreadable; {remedy} --overwrite.") from None
    if made_for != (weights_sha256(network), tuple(input_shape)):
        raise InputError(f"The int8 version in {source} was made from other weights or windows; {remedy} --overwrite.")
    return openvino_core().read_model(source / INT8_FOLDER / NETWORK_FILE)


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


def _calibration_windows(sources: Sequence[CaseSource], model, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Windows of ``shape`` (1, C, *patch) tiling each preprocessed case (at most :data:`MAX_WINDOWS`, spread
    evenly over the cases); a 2D model on volumes gets the volumes' slices."""
    patch = shape[2:]
    per_case = max(MAX_WINDOWS // len(sources), 1)
    windows: list[np.ndarray] = []
    for source in sources:
        image, _ = load_case(source)
        case = preprocess_case(image, None, model.plan, name=source.name)
        array = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
        planes = array.permute(1, 0, 2, 3) if len(patch) == 2 and array.ndim == 4 else array[None]
        tiles = [tile for plane in planes for tile in _tiles(plane, patch)]
        step = max(len(tiles) / per_case, 1.0)
        windows += [tiles[math.floor(i * step)][None].numpy() for i in range(min(per_case, len(tiles)))]
    if not windows:
        raise InputError("The calibration cases gave no windows; give at least one case the model can segment.")
    return windows


def _tiles(image: torch.Tensor, patch: Sequence[int]) -> list[torch.Tensor]:
    """Non-overlapping windows of ``patch`` covering ``image`` (C, *S), padded as the sliding window pads."""
    size = image.shape[1:]
    padding = [max(p - s, 0) for s, p in zip(size, patch, strict=True)]
    if any(padding):
        image = F.pad(image, [amount for p in reversed(padding) for amount in (p // 2, p - p // 2)])
    starts = [window_starts(s, p, 0.0) for s, p in zip(image.shape[1:], patch, strict=True)]
    boxes = np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(patch))
    return [image[(slice(None), *(slice(b, b + p) for b, p in zip(box, patch, strict=True)))] for box in boxes]
