"""The check of an exported network: it must segment a case exactly as MedSegCNN's engine does.

The case (an image given, or :func:`sample_image`) is segmented twice by
:func:`~MedSegCNNLib.inference.segment.segment`, with the same preprocessing, sliding window and steps after it, on
the CPU at fp32: once with the model's torch network (the engine's segmentation) and once with the exported network
in its runtime (onnxruntime or OpenVINO) in the network's place. Every window the exported network computes is also
computed by the torch network, and the largest absolute difference of their logits is kept. The check passes when
that difference is at most :data:`LOGIT_TOLERANCE` times the largest logit magnitude (at least 1) and every label's
Dice between the two segmentations is 1.0 (a label absent from both counts as 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..checkpoint.model_card import ModelCard
from ..data.nnunet.plan import NnUNetPlan
from ..image import Image
from ..inference.model import SegmentationModel
from ..inference.options import PredictOptions
from ..inference.segment import ImageSource, load_checked_input, segment
from ..metrics.overlap import confusion_counts, overlap_scores
from .sidecar import target_spacing

#: The largest logit difference allowed, relative to the largest logit magnitude (at least 1): float32 networks
#: computed by another runtime differ by rounding (measured: about 1e-6 relative).
LOGIT_TOLERANCE = 1e-3
#: The sample case spans this many patches along its first axis and one along the others: two windows that overlap,
#: as in real images, and no more (the check computes the torch network twice).
SAMPLE_PATCHES = 1.25
#: How both segmentations are made: the engine's torch network on the CPU at fp32 (exported networks are fp32).
CHECK_OPTIONS = PredictOptions(device="cpu", backend="torch", precision="fp32")

WindowNetwork = Callable[[torch.Tensor], torch.Tensor]
"""(B, C, *window) → (B, K, *window) float32 logits."""


@dataclass(frozen=True)
class CheckResult:
    """The check of one exported network on ``case`` run by ``runtime``: the ``largest_difference`` of the logits
    (and the ``largest_logit`` magnitude it is measured against); per foreground label value its ``dice`` between
    the engine's segmentation and the exported network's, and its voxel ``counts`` in each; ``names`` the labels'."""

    case: str
    runtime: str
    largest_difference: float
    largest_logit: float
    dice: dict[int, float]
    counts: dict[int, tuple[int, int]]
    names: dict[int, str]

    @property
    def tolerance(self) -> float:
        """The largest logit difference allowed (see :data:`LOGIT_TOLERANCE`)."""
        return LOGIT_TOLERANCE * max(1.0, self.largest_logit)

    @property
    def passed(self) -> bool:
        return self.largest_difference <= self.tolerance and all(score == 1.0 for score in self.dice.values())

    def describe(self) -> str:
        """The figures, one line for the logits and one per label."""
        lines = [
            f"Check on {self.case} with {self.runtime} against MedSegCNN's engine (PyTorch fp32): max |logit "
            f"difference| {self.largest_difference:.2e} (tolerance {self.tolerance:.2e}, largest |logit| "
            f"{self.largest_logit:.3g})"
        ]
        for value, score in self.dice.items():
            engine, exported = self.counts[value]
            lines.append(f"  label {value} {self.names[value]}: Dice {score:.6f} ({engine} voxels by the engine, "
                         f"{exported} by the exported network)")  # fmt: skip
        return "\n".join(lines)

    def failure(self) -> str:
        """One line saying why the check failed."""
        if self.largest_difference > self.tolerance:
            return (
                f"the exported network's logits differ from the engine's by up to {self.largest_difference:.2e} "
                f"(tolerance {self.tolerance:.2e}) on {self.case}"
            )
        worst = min(self.dice, key=self.dice.__getitem__)
        return (
            f"the exported network's segmentation of {self.case} differs from the engine's: label {worst} "
            f"({self.names[worst]}) Dice {self.dice[worst]:.6f}"
        )


class _Compared(torch.nn.Module):
    """The ``exported`` network in the sliding window's place; each window batch is also given to ``reference``
    (the torch network) and the largest logit difference and magnitude kept."""

    def __init__(self, exported: WindowNetwork, reference: torch.nn.Module) -> None:
        super().__init__()
        self.exported = exported
        self.reference = reference
        self.largest_difference = 0.0
        self.largest_logit = 0.0

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        expected = self.reference(windows).float()
        logits = self.exported(windows).to(expected.device)
        self.largest_difference = max(self.largest_difference, float((logits - expected).abs().max()))
        self.largest_logit = max(self.largest_logit, float(expected.abs().max()))
        return logits


def check_image(model: SegmentationModel, image: ImageSource | Sequence[ImageSource] | None) -> tuple[Image, str]:
    """The case to check on, read and checked against ``model`` (one image, or one per channel), and how to name
    it; None gives :func:`sample_image`."""
    if image is None:
        return sample_image(model.card), "a synthetic sample case"
    images = list(image) if isinstance(image, list | tuple) else [image]
    return load_checked_input(images, model), ", ".join(str(source) for source in images)


def check_exported(
    model: SegmentationModel, exported: WindowNetwork, runtime: str, case: Image, case_name: str
) -> CheckResult:
    """Segment ``case`` with ``model``'s torch network and with ``exported`` in its place (see the module
    docstring); ``runtime`` names the exported network's runtime."""
    (network,) = model.networks
    reference = segment(case, model, CHECK_OPTIONS).labels.array
    compared = _Compared(exported, network)
    stand_in = SegmentationModel(networks=(compared,), card=model.card, device=model.device)
    labels = segment(case, stand_in, CHECK_OPTIONS).labels.array
    values = [label.value for label in model.labels]
    dice = overlap_scores(confusion_counts(labels, reference, values)).dice
    return CheckResult(
        case=case_name,
        runtime=runtime,
        largest_difference=compared.largest_difference,
        largest_logit=compared.largest_logit,
        dice={value: float(score) for value, score in zip(values, dice, strict=True)},
        counts={value: (int((reference == value).sum()), int((labels == value).sum())) for value in values},
        names={label.value: label.name for label in model.labels},
    )


def sample_image(card: ModelCard) -> Image:
    """A synthetic case for ``card``'s model: smooth patterns (values about 0 to 255, one phase per channel) on
    :data:`SAMPLE_PATCHES` patches along the network's first axis and one along the others, at its spacing, with
    the identity direction. A 2D model gets a 2D image; an imported nnU-Net model's image is in file order (its
    transpose undone)."""
    spacing = [1.0 if s is None else s for s in target_spacing(card)]
    sizes = [math.ceil(SAMPLE_PATCHES * card.patch_size[0]), *card.patch_size[1:]]
    plan = card.preprocessing
    if isinstance(plan, NnUNetPlan) and card.spatial_dims == 3:  # network axis j is file axis transpose_forward[j]
        order = plan.transpose_backward
        spacing, sizes = [spacing[order[a]] for a in range(3)], [sizes[order[a]] for a in range(3)]
    grid = np.indices(sizes, dtype=np.float32)
    channels = []
    for channel in range(len(card.channels)):
        waves = [np.sin(2 * np.pi * (coordinates / period + channel / 7)) for coordinates, period in
                 zip(grid, (11.0, 17.0, 23.0), strict=False)]  # fmt: skip
        channels.append(128 + 60 * waves[0] * waves[-1] + 40 * np.prod(waves, axis=0))
    array = np.stack(channels) if len(channels) > 1 else channels[0]
    dims = len(sizes)
    return Image(
        array=array.astype(np.float32),
        spacing=tuple(reversed(spacing)),
        origin=(0.0,) * dims,
        direction=np.eye(dims),
    )
