"""``export_model``: a model folder's network as an ONNX file or an OpenVINO IR, with its sidecar.

- **ONNX** (``--output NAME.onnx``): ``torch.onnx.export`` with the ``torch.export``-based exporter (``dynamo=True``;
  it exports every network of the library, SegNet's max-unpooling included, which the older TorchScript-based
  exporter refuses) of the network in evaluation mode (deep supervision: the final head only; an imported nnU-Net
  model's folds: their mean), float32, input ``image`` (batch, channels, *patch) with a dynamic batch, output
  ``logits``. The sidecar's JSON is also stored in the file's metadata (key :data:`METADATA_KEY`).
- **OpenVINO** (``--output FOLDER``): the OpenVINO backend's conversion (:func:`~MedSegCNNLib.inference.
  openvino_backend.convert`, fp32 IR) for a batch of one window, as ``network.xml`` + ``network.bin`` in the folder
  (OpenVINO's ``Model.reshape`` gives other batches).

Everything is written under temporary names, checked (the ONNX checker; the IR read back; with ``check``, the
check of :mod:`.check`), then renamed into place: a failed export or check leaves the outputs as they were.
Existing outputs are replaced only with ``overwrite``, and never a file the export reads.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import (
    atomic_folder,
    atomic_path,
    check_writable,
    incomplete_write,
    occupied,
    refuse_replacing_inputs,
    write_text_atomic,
)
from ..errors import CheckError, InputError
from ..image import Image
from ..inference.model import SegmentationModel, load_segmentation_model
from ..inference.openvino_backend import (
    ConversionError,
    compile_model,
    convert,
    exportable_copy,
    openvino_core,
    root_logger_kept,
    save_ir,
)
from ..inference.segment import ImageSource
from ..registry import resolve_model_folder
from ..runtime import openvino_version
from .check import CheckResult, WindowNetwork, check_exported, check_image
from .sidecar import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME, ExportFormat, build_sidecar, sidecar_path

logger = logging.getLogger(__name__)

ONNX_INSTALL = 'pip install "medsegcnn[onnx]" (or: pip install onnx onnxscript onnxruntime)'
#: The ONNX file's metadata entry that holds the sidecar's JSON.
METADATA_KEY = "medsegcnn"
#: The OpenVINO IR's network file in the output folder (its weights: ``network.bin``).
OPENVINO_NETWORK = "network.xml"
#: The batch of the example input traced for ONNX (not 1: torch.export would specialise the batch axis to it).
_EXAMPLE_BATCH = 2

Case = tuple[Image, str]
"""The check's case: the image and how to name it."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the network's ``files``, its ``sidecar`` and, when asked for, the ``check``."""

    files: tuple[Path, ...]
    sidecar: Path
    check: CheckResult | None


def export_model(
    model: str | os.PathLike[str],
    format: str,
    output: str | os.PathLike[str],
    *,
    check: bool = False,
    check_image_files: ImageSource | Sequence[ImageSource] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export the network of ``model`` (a model folder, ``.zip`` or registry name) as ``format`` (``onnx``: the
    file ``output``, ending in ``.onnx``; ``openvino``: the folder ``output``) with its sidecar (see the module
    docstring and :mod:`.sidecar`).

    ``check`` (implied by ``check_image_files``): run the exported network in its runtime on ``check_image_files``
    (one image, or one per channel; default: a synthetic sample case) and compare it with the engine
    (:mod:`.check`); a failed check raises :class:`~MedSegCNNLib.errors.CheckError` and writes nothing.
    ``overwrite``: replace existing outputs.
    """
    chosen = _format(format)
    check = check or check_image_files is not None
    folder = resolve_model_folder(model)
    output = Path(output)
    targets = _targets(chosen, output)
    refuse_replacing_inputs(targets, [folder])
    if chosen is ExportFormat.OPENVINO:
        _refuse_model_folder(output, folder)
    else:
        for target in targets:
            check_writable(target, overwrite=overwrite)
    runtime = _import_runtime(chosen, check=check)
    loaded = load_segmentation_model(folder, torch.device("cpu"))
    case = check_image(loaded, check_image_files) if check else None
    writer = _write_onnx if chosen is ExportFormat.ONNX else _write_openvino
    result = writer(loaded, output, runtime, case, overwrite=overwrite)
    logger.info("Exported %s as %s to %s.", folder, chosen.value, output)
    return result


def _format(name: str) -> ExportFormat:
    try:
        return ExportFormat(str(name).lower())
    except ValueError:
        known = ", ".join(item.value for item in ExportFormat)
        raise InputError(f"Unknown export format {name!r}; choose one of {known}.") from None


def _targets(chosen: ExportFormat, output: Path) -> list[Path]:
    """The files the export writes: the network's and the sidecar."""
    if chosen is ExportFormat.ONNX:
        if output.suffix.lower() != ".onnx":
            raise InputError(f"An ONNX export is one .onnx file; give --output {output.name}.onnx (not {output}).")
        return [output, sidecar_path(output)]
    if occupied(output) and not output.is_dir():
        raise InputError(f"An OpenVINO export is a folder; {output} exists and is not one.")
    network = output / OPENVINO_NETWORK
    return [network, network.with_suffix(".bin"), sidecar_path(network)]


def _refuse_model_folder(output: Path, folder: Path) -> None:
    """Refuse an OpenVINO output folder that is the model's folder or holds it (replacing it would lose the model)."""
    source = folder.resolve()
    if output.resolve() == source or output.resolve() in source.parents:
        raise InputError(
            f"Output folder {output} holds the model {folder} this command reads; choose another folder "
            "(--overwrite never replaces an input)."
        )


def _import_runtime(chosen: ExportFormat, *, check: bool) -> Any:
    """``onnxruntime`` (None without ``check``) for ONNX, after making sure the exporter's packages are there; for
    OpenVINO, its version (refused when it is not installed)."""
    if chosen is ExportFormat.OPENVINO:
        version = openvino_version()
        if version is None:
            raise InputError(
                'Exporting to OpenVINO needs OpenVINO; install it with: pip install "medsegcnn[openvino]".'
            )
        return version
    needed = ("onnx", "onnxscript", "onnxruntime") if check else ("onnx", "onnxscript")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"Exporting to ONNX needs {', '.join(missing)}; install with: {ONNX_INSTALL}.")
    return importlib.import_module("onnxruntime") if check else None


# ----- ONNX -----------------------------------------------------------------------------------------------------


def _write_onnx(
    model: SegmentationModel, output: Path, onnxruntime: Any, case: Case | None, *, overwrite: bool
) -> ExportResult:
    import onnx

    proto = _onnx_model(model.networks[0], (_EXAMPLE_BATCH, len(model.channels), *model.patch_size))
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    details = {"format": ExportFormat.ONNX.value, "files": [output.name], "opset": opset,
               "exporter": f"torch.onnx (torch.export) {torch.__version__}"}  # fmt: skip
    text = _sidecar_text(model, details, batch=None)
    onnx.helper.set_model_props(proto, {METADATA_KEY: text})
    sidecar = sidecar_path(output)
    result = None
    with atomic_path(output, overwrite=overwrite) as network_file, atomic_path(sidecar, overwrite=overwrite) as tmp:
        onnx.save_model(proto, network_file)
        try:
            onnx.checker.check_model(str(network_file))
        except onnx.checker.ValidationError as error:
            raise incomplete_write(
                output, f"the ONNX checker refused it ({error})", replaced=occupied(output)
            ) from None
        if case is not None:
            run = OnnxRuntimeNetwork(network_file, onnxruntime)
            result = _checked(model, run, f"onnxruntime {onnxruntime.__version__}", case)
        tmp.write_text(text, encoding="utf-8")
    return ExportResult(files=(output,), sidecar=sidecar, check=result)


def _onnx_model(network: torch.nn.Module, example_shape: tuple[int, ...]) -> Any:
    """The ONNX model (``onnx.ModelProto``) of ``network`` (see the module docstring)."""
    plain = exportable_copy(network)
    try:
        with torch.no_grad(), warnings.catch_warnings(), _exporter_quiet():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notices
            program = torch.onnx.export(
                plain, (torch.zeros(example_shape),), None, dynamo=True, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},), verbose=False,
            )  # fmt: skip
    except Exception as error:  # torch.export and the ONNX translation raise their own types
        reason = (str(error).strip() or repr(error)).splitlines()[0]
        raise InputError(f"The network cannot be exported to ONNX ({reason}).") from error
    return program.model_proto


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The exporter's own log lines (operators it skips, its progress) at ERROR only, the root logger kept."""
    exporter = logging.getLogger("torch.onnx")
    level = exporter.level
    exporter.setLevel(logging.ERROR)
    try:
        with root_logger_kept():
            yield
    finally:
        exporter.setLevel(level)


class OnnxRuntimeNetwork:
    """Callable (B, C, *window) → (B, K, *window) float32 torch tensor: the ONNX file run by onnxruntime on the CPU
    with torch's number of threads."""

    def __init__(self, path: Path, onnxruntime: Any) -> None:
        settings = onnxruntime.SessionOptions()
        settings.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(windows.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])


# ----- OpenVINO -------------------------------------------------------------------------------------------------


def _write_openvino(
    model: SegmentationModel, output: Path, version: str, case: Case | None, *, overwrite: bool
) -> ExportResult:
    shape = (1, len(model.channels), *model.patch_size)
    details = {"format": ExportFormat.OPENVINO.value, "files": [OPENVINO_NETWORK, "network.bin"], "openvino": version}
    text = _sidecar_text(model, details, batch=1)
    result = None
    with atomic_folder(output, overwrite=overwrite) as partial:
        try:
            converted = convert(model.networks[0], shape)
        except ConversionError as error:
            raise InputError(f"OpenVINO cannot convert this network ({error}); export it as ONNX instead.") from None
        save_ir(converted, partial / OPENVINO_NETWORK)
        ir = openvino_core().read_model(partial / OPENVINO_NETWORK)  # read back before the folder is renamed
        if case is not None:
            result = _checked(model, compile_model(ir, "fp32"), f"OpenVINO {version}", case)
        write_text_atomic(sidecar_path(partial / OPENVINO_NETWORK), text)
    network = output / OPENVINO_NETWORK
    return ExportResult(files=(network, network.with_suffix(".bin")), sidecar=sidecar_path(network), check=result)


# ----- shared ---------------------------------------------------------------------------------------------------


def _sidecar_text(model: SegmentationModel, details: dict[str, Any], *, batch: int | None) -> str:
    folds = int(model.card.network.get("folds", 1))
    return json.dumps(build_sidecar(model.card, details, batch=batch, folds=folds), indent=1) + "\n"


def _checked(model: SegmentationModel, exported: WindowNetwork, runtime: str, case: Case) -> CheckResult:
    """The check of ``exported`` on ``case`` (the image and its name); a failure logs the figures and raises
    :class:`CheckError`."""
    image, name = case
    result = check_exported(model, exported, runtime, image, name)
    if not result.passed:
        logger.warning("%s", result.describe())
        raise CheckError(f"The exported network failed its check: {result.failure()}; nothing was written.")
    return result
