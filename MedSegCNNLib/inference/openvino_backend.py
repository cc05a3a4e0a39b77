"""The OpenVINO backend: a network converted once per window shape, compiled for the CPU, cached on disk.

Conversion exports a contiguous copy of the torch network (``torch.export``) with a static input shape
(``batch × channels × window``) and writes OpenVINO's IR (``model.xml`` + ``model.bin``, fp32 weights) to a
cache entry (:mod:`.cache`) keyed by the weights' SHA-256, the input shape, the OpenVINO version and the IR's
kind. Each run reads the IR (milliseconds) and compiles it with the precision hint (``f32`` or ``bf16``: OpenVINO
then runs bf16 where the CPU has bf16 units). A batch smaller than the static one is padded with zeros and the
padding's outputs dropped. OpenVINO is imported only here, and only when this backend is used.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import importlib
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..atomic import flush_to_disk
from ..checkpoint.state_codec import sha256_file
from ..errors import InputError
from ..runtime import OPENVINO_INSTALL, openvino_version
from .cache import load_or_build, weights_sha256

logger = logging.getLogger(__name__)

#: OpenVINO's precision hint for each precision (int8 models: the precision of the layers left unquantised).
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: The IR layout written by this module; part of every key, so that a new layout never reads an old entry.
IR_LAYOUT = 1
#: A model folder's int8 version (written by :mod:`.quantization`): the folder, its record and its network.
INT8_FOLDER, INT8_RECORD, INT8_NETWORK = "int8", "int8.json", "network.xml"
#: The files of the int8 network (the IR's graph and its weights).
INT8_FILES = (INT8_NETWORK, "network.bin")


class ConversionError(RuntimeError):
    """OpenVINO could not convert the network; ``operations`` names the torch operations it has no rule for."""

    def __init__(self, message: str, operations: Sequence[str]) -> None:
        super().__init__(message)
        self.operations = tuple(operations)


class OpenVinoNetwork:
    """Callable (B, C, *window) → (B, K, *window) float32 torch tensor, running one compiled OpenVINO model whose
    batch is fixed at ``batch``: any B is run in chunks of ``batch``, the last one padded with zeros.

    OpenVINO writes each chunk's outputs straight into the array returned (set as the request's output tensor),
    so a call holds one copy of its outputs, not two, and copies nothing.
    """

    def __init__(self, compiled: Any, batch: int, precision: str) -> None:
        self.compiled, self.batch, self.precision = compiled, batch, precision
        self.request = compiled.create_infer_request()
        self.output_shape = tuple(compiled.output(0).get_shape())  # (batch, K, *window)
        self.tensor = import_openvino().Tensor

    def _infer_into(self, chunk: np.ndarray, target: np.ndarray) -> None:
        self.request.set_output_tensor(0, self.tensor(target, shared_memory=True))
        self.request.infer({0: chunk})

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(windows.detach().to("cpu", torch.float32).numpy())
        total = array.shape[0]
        outputs = np.empty((total, *self.output_shape[1:]), np.float32)
        for first in range(0, total, self.batch):
            chunk = array[first : first + self.batch]
            count = chunk.shape[0]
            if count == self.batch:
                self._infer_into(chunk, outputs[first : first + count])
                continue
            padded = np.concatenate([chunk, np.zeros((self.batch - count, *chunk.shape[1:]), np.float32)])
            target = np.empty(self.output_shape, np.float32)
            self._infer_into(padded, target)
            outputs[first:] = target[:count]
        return torch.from_numpy(outputs)


@contextlib.contextmanager
def without_telemetry() -> Iterator[None]:
    """Imports in the block find OpenVINO's telemetry package missing, so OpenVINO and NNCF use their own no-op
    stand-ins (unless it was imported before; see :func:`import_openvino`)."""
    blocked = "openvino_telemetry" not in sys.modules
    if blocked:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # importing it raises ImportError
    try:
        yield
    finally:
        if blocked:
            sys.modules.pop("openvino_telemetry", None)


def import_openvino() -> ModuleType:
    """``openvino``, with its usage telemetry off in this process.

    OpenVINO reports usage to Intel over the network, from ``import openvino`` on, unless the user opted out in a
    file in their home folder. A tool for medical images sends nothing it was not asked to, and the reporter
    forks processes that can deadlock a process with threads. Imported here first, OpenVINO uses its no-op
    stand-in (:func:`without_telemetry`); imported before, its converter's modules are given the stand-in (the
    import's own report has then been sent by whoever imported it).
    """
    with without_telemetry():
        ov = importlib.import_module("openvino")
    from openvino.tools.ovc import telemetry_stub

    for name, module in list(sys.modules.items()):
        if name.startswith("openvino.tools.ovc") and getattr(module, "tm", telemetry_stub) is not telemetry_stub:
            module.tm = telemetry_stub
    return ov


@functools.cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, kept until the process ends.

    OpenVINO's CPU plugin sets an alternate signal stack for the thread that creates a ``Core``; Cores created
    and destroyed in another order than the reverse can leave that stack pointing at freed memory, and the next
    signal delivered on it (Ctrl-C) crashes the process. One Core that lives as long as the process cannot.
    """
    return import_openvino().Core()


def compile_network(
    network: torch.nn.Module, input_shape: Sequence[int], precision: str, cache_folder: Path
) -> OpenVinoNetwork:
    """``network`` for inputs of ``input_shape`` (batch, channels, *window) through OpenVINO at ``precision``
    (``fp32`` or ``bf16``), converted or read from the cache in ``cache_folder``. Raises
    :class:`ConversionError` when it cannot be converted."""
    if precision not in ("fp32", "bf16"):
        raise InputError(f"OpenVINO converts networks for fp32 or bf16; {precision!r} is not one of them.")
    return compile_model(converted_model(network, input_shape, cache_folder), precision)


def converted_model(network: torch.nn.Module, input_shape: Sequence[int], cache_folder: Path) -> Any:
    """The OpenVINO model (fp32 IR) of ``network`` for inputs of ``input_shape``: read from its cache entry in
    ``cache_folder``, converted and stored there first when missing (see the module docstring)."""
    version = openvino_version()
    if version is None:
        raise InputError(f"The OpenVINO backend is not installed; install it with: {OPENVINO_INSTALL}.")
    shape = tuple(int(size) for size in input_shape)
    record = {"kind": "openvino-ir", "layout": IR_LAYOUT, "openvino": version, "input_shape": list(shape),
              "weights_sha256": weights_sha256(network)}  # fmt: skip
    core = openvino_core()

    def build(folder: Path) -> None:
        save_ir(convert(network, shape), folder / "model.xml")
        load(folder)  # read back before the entry is renamed into place

    def load(folder: Path) -> Any:
        model = core.read_model(folder / "model.xml")
        loaded_shape = tuple(model.inputs[0].get_partial_shape().to_shape())
        if loaded_shape != shape:
            raise InputError(f"the IR's input shape is {loaded_shape}, not {shape}")
        return model

    return load_or_build(cache_folder / "openvino", record, build, load)


def save_ir(model: Any, path: Path) -> None:
    """Write the OpenVINO ``model`` as fp32 IR (``path``, an ``.xml`` file, and its ``.bin`` beside it) and flush
    both to disk. A failed write raises :class:`OSError` (OpenVINO reports one, e.g. a full disk, as a bare
    ``RuntimeError``), for the caller's :func:`~MedSegCNNLib.atomic.write_failure`."""
    try:
        import_openvino().save_model(model, path, compress_to_fp16=False)
    except RuntimeError as error:
        raise OSError(errno.EIO, f"OpenVINO could not write the network ({error})", str(path)) from None
    for written in (path, path.with_suffix(".bin")):
        flush_to_disk(written)


def compile_model(model: Any, precision: str, *, threads: int | None = None) -> OpenVinoNetwork:
    """An OpenVINO model compiled for the CPU at ``precision`` (``fp32``, ``bf16``, or ``int8`` for a quantised
    model: its int8 layers run in int8, the others in fp32), using ``threads`` CPU threads (default: torch's
    setting)."""
    config = {
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
        # The CPU plugin's generated element-wise kernels ("snippets") crash compile_model (a segmentation fault,
        # OpenVINO 2026.4) on a group norm added to a residual branch, as in nnU-Net's ResidualEncoderUNet.
        "SNIPPETS_MODE": "DISABLE",
    }
    batch = int(model.inputs[0].get_partial_shape().to_shape()[0])
    return OpenVinoNetwork(openvino_core().compile_model(model, "CPU", config), batch, precision)


@dataclass(frozen=True)
class Int8Version:
    """A model folder's int8 version: its OpenVINO ``model``, and the check made when it was quantised: whether it
    was ``accepted`` (every label's Dice against fp32 on the calibration cases at least ``required``) and the
    ``lowest`` such Dice (None for a version made before the check existed: it is used as is)."""

    model: Any
    accepted: bool
    lowest: float | None
    required: float | None


def int8_model(source: Path, network: torch.nn.Module, input_shape: Sequence[int]) -> Int8Version:
    """The int8 version of the model folder ``source`` (whose network is ``network``); an error that says what to
    do when there is none, when its record is malformed, or when it was made from other weights or for another
    window."""
    record_path = source / INT8_FOLDER / INT8_RECORD
    remedy = f"make it with: medsegcnn quantize --model {source} --calibration DATASET"
    if not record_path.is_file():
        raise InputError(f"The model {source} has no int8 version; {remedy}.")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8")[:1_000_000])
        made_for = (str(record["weights_sha256"]), tuple(int(size) for size in record["input_shape"]))
        check = record.get("check")
        accepted, lowest, required = True, None, None
        if check is not None:
            accepted = check["accepted"]
            lowest = min(float(score) for score in check["min_dice"].values()) if check["min_dice"] else 1.0
            required = float(check["required"])
            if not isinstance(accepted, bool):
                raise TypeError("accepted must be true or false")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"The int8 record {record_path} is unreadable; {remedy} --overwrite.") from None
    if made_for != (weights_sha256(network), tuple(input_shape)):
        raise InputError(f"The int8 version in {source} was made from other weights or windows; {remedy} --overwrite.")
    return Int8Version(_read_int8_network(source / INT8_FOLDER, record, remedy), accepted, lowest, required)


def int8_files_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of each file of the int8 network in ``folder`` (``network.xml`` and ``network.bin``), by name: what
    its record keeps (``"files"``) to detect a damaged or replaced file."""
    return {name: sha256_file(folder / name) for name in INT8_FILES}


def _read_int8_network(folder: Path, record: dict[str, Any], remedy: str) -> Any:
    """The OpenVINO model in the int8 ``folder``: its files must exist, match the SHA-256 its ``record`` keeps
    (records made before they were kept have none) and parse; otherwise an error naming the file and the ``remedy``."""
    for name in INT8_FILES:
        if not (folder / name).is_file():
            raise InputError(f"The int8 version in {folder} lacks {name}; {remedy} --overwrite.")
    kept = record.get("files")
    if kept is not None:
        digests = int8_files_sha256(folder).items()
        damaged = [name for name, digest in digests if not isinstance(kept, dict) or kept.get(name) != digest]
        if damaged:
            names = " and ".join(str(folder / name) for name in damaged)
            raise InputError(f"{names} changed since it was quantised (damaged or replaced?); {remedy} --overwrite.")
    try:
        return openvino_core().read_model(folder / INT8_NETWORK)
    except RuntimeError as error:  # OpenVINO reports unparsable IR files as RuntimeError
        reason = next((line.strip() for line in reversed(str(error).splitlines()) if line.strip()), "unreadable")
        raise InputError(
            f"The int8 version in {folder} cannot be read ({reason.rstrip('.!')}): it is truncated or damaged; "
            f"{remedy} --overwrite."
        ) from None


def convert(network: torch.nn.Module, input_shape: tuple[int, ...]) -> Any:
    """An OpenVINO model of ``network`` for inputs of ``input_shape``: ``torch.export`` of its
    :func:`exportable_copy`, then OpenVINO's converter. Raises :class:`ConversionError` naming the operations it
    has no rule for."""
    ov = import_openvino()
    plain = exportable_copy(network)
    try:
        with torch.no_grad(), warnings.catch_warnings(), root_logger_kept():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecation notices
            exported = torch.export.export(plain, (torch.zeros(input_shape),))
            return ov.convert_model(exported, input=[input_shape])
    except Exception as error:  # torch.export and OpenVINO's frontends raise their own types
        message = str(error).strip() or repr(error)
        operations = sorted(set(re.findall(r"\b(?:aten|prim)(?:::|\.)[A-Za-z0-9_.]+", message)))
        summary = f"no conversion rule for {', '.join(operations)}" if operations else message.splitlines()[0]
        raise ConversionError(summary, operations) from error


def exportable_copy(network: torch.nn.Module) -> torch.nn.Module:
    """A contiguous float32 copy of ``network`` in evaluation mode (deep supervision: the final head only), which
    ``torch.export`` can trace: a network in channels-last layout, or held under inference mode, cannot be."""
    return copy.deepcopy(network).to(memory_format=torch.contiguous_format).float().eval()


@contextlib.contextmanager
def root_logger_kept() -> Iterator[None]:
    """Restore the root logger's level and handlers afterwards: a failed OpenVINO conversion sets the root logger
    to ERROR, which would silence every warning after it."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
