"""How a model's windows are computed: the backend (torch or OpenVINO) and the precision, chosen once per model.

An :class:`Engine` is the model's networks as callables for one backend, precision and window batch, as the
sliding window and :class:`~.predictor.Predictor` use them. :func:`engine_for` builds it (or returns the one built
before for the same choice) and falls back to torch, with a warning naming the operation, when OpenVINO cannot
convert a network.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..runtime import describe_device, openvino_version
from .model import SegmentationModel

logger = logging.getLogger(__name__)

#: The batch OpenVINO networks are compiled for: one window per request, so that no request computes padding
#: (``Testing/Benchmarks/bench_inference.py`` measures what larger batches would gain on a given CPU).
OPENVINO_BATCH = 1

WindowNetwork = Callable[[torch.Tensor], torch.Tensor]
"""(B, C, *window) → (B, K, *window) logits."""


@dataclass(frozen=True)
class Engine:
    """The networks of one model as ``backend`` runs them at ``precision`` for batches of ``batch`` windows.

    ``autocast`` is the precision the sliding window's autocast must use: the torch precision for torch, fp32 for
    OpenVINO (which applies its precision itself).
    """

    networks: tuple[WindowNetwork, ...]
    backend: str
    precision: str
    batch: int

    @property
    def autocast(self) -> str:
        return self.precision if self.backend == "torch" else "fp32"

    @property
    def channels_last(self) -> bool:
        """Whether window batches should be given in channels-last layout (what oneDNN convolutions like)."""
        return self.backend == "torch"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The block that predicts with this engine. For OpenVINO, torch's own CPU threads are reduced to one
        meanwhile (torch then only stitches windows): two thread pools spinning on the same cores slow both."""
        if self.backend == "torch":
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def describe(self, device: torch.device) -> str:
        """The backend, its version and the precision, and the hardware, in words."""
        runtime = f"OpenVINO {openvino_version()}" if self.backend == "openvino" else f"PyTorch {torch.__version__}"
        return f"{runtime} at {self.precision} on {describe_device(device)}"


def engine_for(model: SegmentationModel, backend: str, precision: str, *, batch: int, cache_folder: Path) -> Engine:
    """The engine of ``model`` for ``backend`` (``torch`` or ``openvino``, already resolved), ``precision``
    (concrete) and window batches of ``batch``; built on first use and kept with the model."""
    key = (backend, precision, batch)
    engine = model.engines.get(key)
    if engine is None:
        engine = model.engines[key] = _build(model, backend, precision, batch, cache_folder)
        logger.info("Predicting with %s.", engine.describe(model.device))
    return engine


def _build(model: SegmentationModel, backend: str, precision: str, batch: int, cache_folder: Path) -> Engine:
    torch_engine = Engine(model.networks, "torch", precision, batch)
    if backend == "torch":
        return torch_engine
    from .openvino_backend import ConversionError, compile_model, compile_network, int8_model

    input_shape = (OPENVINO_BATCH, len(model.channels), *model.patch_size)
    if precision == "int8":
        if len(model.sources) != len(model.networks):
            raise InputError("int8 needs models loaded from model folders (their int8 versions are stored there).")
        versions = [int8_model(src, net, input_shape) for src, net in zip(model.sources, model.networks, strict=True)]
        for source, version in zip(model.sources, versions, strict=True):
            if not version.accepted:
                logger.warning(
                    "The int8 version in %s changed the segmentation of its calibration cases (lowest Dice %.4f, "
                    "below %s); predicting at fp32 instead.", source, version.lowest, version.required,
                )  # fmt: skip
                return _build(model, backend, "fp32", batch, cache_folder)
        return Engine(tuple(compile_model(v.model, "int8") for v in versions), "openvino", precision, batch)
    try:
        networks = tuple(compile_network(net, input_shape, precision, cache_folder) for net in model.networks)
    except ConversionError as error:
        named = ", ".join(error.operations) or str(error)
        logger.warning("OpenVINO cannot convert this model (%s); predicting with PyTorch instead.", named)
        return torch_engine
    return Engine(networks, "openvino", precision, batch)
