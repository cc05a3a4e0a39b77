"""The sidecar of an exported network: one JSON file that tells a consumer everything the network file does not.

Its name is the network file's stem plus :data:`SIDECAR_SUFFIX` beside it (``hippo.onnx`` →
``hippo.medsegcnn.json``; an OpenVINO folder's ``network.xml`` → ``network.medsegcnn.json``). **Format**
``"medsegcnn-export"``, version :data:`SIDECAR_FORMAT_VERSION`; every axis list is in the order of the network's
spatial axes (:func:`network_axes`):

- ``medsegcnn_version``, ``created`` (ISO 8601, UTC); ``network``: ``format`` (``onnx`` | ``openvino``), ``files``,
  the runtime details (ONNX opset and exporter; the OpenVINO version);
- ``source_model``: ``name``, ``title``, ``network`` (architecture), ``folds``, ``library_version`` and
  ``weights_sha256`` (the SHA-256 of the model folder's safetensors file); ``licence``: the model card's
  (``spdx``, ``text``), or null;
- ``input``: ``name``, ``shape`` (``"batch"`` for the dynamic axis), ``dynamic_axes`` (axis index → name),
  ``dtype``, ``axes`` (``batch``, ``channel``, then the spatial axes' names); ``channels``: index and name, in order;
- ``patch_size`` (voxels) and ``target_spacing`` (mm; null: that axis keeps the image's spacing), per spatial axis;
  ``sliding_window``: overlap, window weights, what is averaged (``probabilities`` or ``logits``), mirror axes;
- ``orientation``: the array order (``z, y, x`` of ITK/SimpleITK arrays: x fastest), the physical frame (LPS), the
  transpose and the reorientation an imported nnU-Net model applies first;
- ``preprocessing``: ``kind`` (``medsegcnn`` | ``nnunet``), the crop, the resampling and ``normalization``: one entry
  per channel with its scheme, its numbers (clipping bounds, dataset statistics) and its ``definition``;
- ``labels``: value, name, colour (RGB in [0, 1] or null); ``output``: ``name``, ``shape``, ``kind``
  (``logits``), ``channels`` (index → label value and name) and ``decision`` (how labels follow from the logits).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._version import __version__
from ..checkpoint.model_card import ModelCard
from ..data.nnunet.plan import NnUNetPlan
from ..data.preprocessing import PreprocessingPlan

SIDECAR_FORMAT = "medsegcnn-export"
SIDECAR_FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".medsegcnn.json"
INPUT_NAME, OUTPUT_NAME, BATCH_AXIS = "image", "logits", "batch"


class ExportFormat(enum.StrEnum):
    """What an export writes: ``onnx`` (one ``.onnx`` file) or ``openvino`` (an IR folder)."""

    ONNX = "onnx"
    OPENVINO = "openvino"


#: The sliding window's overlap that MedSegCNN (and nnU-Net, step 0.5) predicts with.
WINDOW_OVERLAP = 0.5

#: What each normalisation scheme computes, by plan kind and scheme (the numbers are in the entry beside it).
_DEFINITIONS: Mapping[tuple[str, str], str] = {
    ("medsegcnn", "zscore"): "(x - mean) / max(std, 1e-8) with this image's mean and std (over its non-zero voxels, "
    "and 0 outside them, when crop_to_nonzero)",
    ("medsegcnn", "ct"): "clip(x, clip_low, clip_high), then (x - mean) / std with the dataset's statistics",
    ("medsegcnn", "none"): "x as float32",
    ("nnunet", "zscore"): "(x - mean) / max(std, 1e-8) with this image's mean and std (over the non-zero mask, "
    "holes filled, and 0 outside it, when use_mask)",
    ("nnunet", "ct"): "clip(x, percentile_00_5, percentile_99_5), then (x - mean) / max(std, 1e-8) with the "
    "dataset's statistics",
    ("nnunet", "none"): "x as float32",
    ("nnunet", "rescale_to_0_1"): "(x - min(x)) / max(max(x) - min(x), 1e-8)",
    ("nnunet", "rgb_to_0_1"): "x / 255",
}


def sidecar_path(network_file: Path) -> Path:
    """The sidecar of ``network_file``: its stem plus :data:`SIDECAR_SUFFIX`, beside it."""
    return network_file.with_name(network_file.stem + SIDECAR_SUFFIX)


def model_licence(card: ModelCard) -> dict[str, Any] | None:
    """The licence the model card states, as the card writes it (``{"spdx": ..., "text": ...}``), or None where the
    card states none (unknown)."""
    return None if card.licence is None else card.licence.to_dict()


def network_axes(card: ModelCard) -> tuple[str, ...]:
    """The names of the network's spatial axes, in its input's order: ``z, y, x`` (``y, x`` in 2D) for MedSegCNN's
    models; for an imported nnU-Net model, the image array's axes permuted by ``transpose_forward`` (2D: the last
    two)."""
    plan = card.preprocessing
    if isinstance(plan, NnUNetPlan):
        permuted = tuple("zyx"[axis] for axis in plan.transpose_forward)
        return permuted[-card.spatial_dims :]
    return tuple("zyx"[-card.spatial_dims :])


def build_sidecar(card: ModelCard, network: Mapping[str, Any], *, batch: int | None, folds: int) -> dict[str, Any]:
    """The sidecar of ``card``'s network exported as ``network`` (its ``format``, ``files`` and runtime details);
    ``batch``: the input's fixed batch size, None when it is dynamic; ``folds``: networks averaged in it."""
    axes = network_axes(card)
    shape = [BATCH_AXIS if batch is None else batch, len(card.channels), *card.patch_size]
    labels = [{"value": label.value, "name": label.name, "color": None if label.color is None else list(label.color)}
              for label in card.labels]  # fmt: skip
    plan = card.preprocessing
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_FORMAT_VERSION,
        "medsegcnn_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "network": dict(network),
        "source_model": {
            "name": card.name,
            "title": card.title,
            "network": card.network.get("name"),
            "folds": folds,
            "library_version": card.library_version,
            "weights_sha256": None if card.weights is None else card.weights.sha256,
        },
        "licence": model_licence(card),
        "input": {
            "name": INPUT_NAME,
            "shape": shape,
            "dynamic_axes": {} if batch is not None else {"0": BATCH_AXIS},
            "dtype": "float32",
            "axes": [BATCH_AXIS, "channel", *axes],
        },
        "channels": [{"index": index, "name": name} for index, name in enumerate(card.channels)],
        "spatial_dims": card.spatial_dims,
        "patch_size": list(card.patch_size),
        "target_spacing": target_spacing(card),
        "sliding_window": _sliding_window(plan),
        "orientation": _orientation(plan, axes),
        "preprocessing": _preprocessing(card),
        "labels": labels,
        "output": {
            "name": OUTPUT_NAME,
            "shape": [shape[0], card.network["out_channels"], *card.patch_size],
            "kind": "logits",
            "channels": _output_channels(card),
            "decision": _decision(plan),
        },
    }


def target_spacing(card: ModelCard) -> list[float | None]:
    """The network's spacing per spatial axis (mm); None keeps the image's."""
    plan = card.preprocessing
    if isinstance(plan, NnUNetPlan):
        return list(plan.spacing)
    if plan.target_spacing is None:
        return [None] * card.spatial_dims
    return list(reversed(plan.target_spacing))[-card.spatial_dims :]  # ITK order (x, y, z) to array order


def _sliding_window(plan: PreprocessingPlan | NnUNetPlan) -> dict[str, Any]:
    nnunet = isinstance(plan, NnUNetPlan)
    return {
        "overlap": WINDOW_OVERLAP,
        "window_weights": ("nnU-Net's " if nnunet else "") + "gaussian, sigma 1/8 of the patch",
        "average": "logits" if nnunet else "probabilities (softmax)",
        "mirror_axes": list(plan.mirror_axes) if nnunet else [],
    }


def _orientation(plan: PreprocessingPlan | NnUNetPlan, axes: Sequence[str]) -> dict[str, Any]:
    text = {
        "array_order": ["z", "y", "x"],
        "physical_frame": "LPS",
        "note": "arrays as ITK/SimpleITK read them: x (the fastest) along the image's first direction column; "
        f"the network's spatial axes are {', '.join(axes)}",
    }
    if isinstance(plan, NnUNetPlan):
        text["transpose_forward"] = list(plan.transpose_forward)
        text["reorient"] = (
            "to the closest canonical RAS voxel order before the transpose (labels mapped back)"
            if plan.input_orientation == "RAS"
            else None
        )
    return text


def _preprocessing(card: ModelCard) -> dict[str, Any]:
    plan = card.preprocessing
    if isinstance(plan, NnUNetPlan):
        return {
            "kind": "nnunet",
            "configuration": plan.configuration,
            "steps": "transpose, crop to the non-zero box (holes filled), normalise, resample to target_spacing",
            "resampling": plan.resampling_data.to_dict(),
            "normalization": [
                {"channel": name, **entry.to_dict(), "definition": _DEFINITIONS["nnunet", entry.scheme]}
                for name, entry in zip(card.channels, plan.normalization, strict=True)
            ],
        }
    return {
        "kind": "medsegcnn",
        "steps": "crop to the non-zero box (when crop_to_nonzero), resample to target_spacing, normalise",
        "crop_to_nonzero": plan.crop_to_nonzero,
        "image_interpolation": plan.image_interpolation,
        "normalization": [
            {"channel": name, **spec.to_dict(), "definition": _DEFINITIONS["medsegcnn", spec.scheme]}
            for name, spec in zip(card.channels, plan.normalization, strict=True)
        ],
    }


def _output_channels(card: ModelCard) -> list[dict[str, Any]]:
    """Output channel → label: the label values in order, or for region-based nnU-Net models the label each
    region paints."""
    plan = card.preprocessing
    names = {label.value: label.name for label in card.labels}
    if isinstance(plan, NnUNetPlan) and plan.regions_class_order is not None:
        values = list(plan.regions_class_order)
    else:
        values = [label.value for label in card.labels]
    return [{"index": index, "label": value, "name": names[value]} for index, value in enumerate(values)]


def _decision(plan: PreprocessingPlan | NnUNetPlan) -> str:
    if isinstance(plan, NnUNetPlan) and plan.regions_class_order is not None:
        return "regions: in channel order, paint the channel's label where its logit > 0 (sigmoid > 0.5)"
    return "argmax over the channels"
