"""Validation during training: whole held-out cases through sliding-window inference, scored with Dice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.preprocessing import PreprocessedCase
from ..image.labels import label_dtype
from ..inference import predict_image
from ..metrics.label_metrics import compute_label_metrics
from ..runtime import autocast


def predict_case(
    network: torch.nn.Module,
    image: np.ndarray,
    patch_size: Sequence[int],
    device: torch.device,
    precision: str,
    *,
    batch_size: int = 4,
) -> np.ndarray:
    """Label map (array order) of a preprocessed (C, z, y, x) or (C, y, x) image; a 2D model runs on a volume
    slice by slice along z."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    was_training = network.training
    network.eval()
    try:
        with autocast(precision, device):
            logits = predict_image(tensor, network, patch_size, batch_size=batch_size)
        return logits.argmax(0).cpu().numpy().astype(label_dtype(logits.shape[0] - 1))
    finally:
        network.train(was_training)


def validate(
    network: torch.nn.Module,
    cases: Sequence[PreprocessedCase],
    labels: Sequence[int],
    patch_size: Sequence[int],
    device: torch.device,
    precision: str,
) -> dict[int, float]:
    """Mean Dice per label over ``cases`` (foundation metrics; a label absent from both maps counts 1)."""
    totals = dict.fromkeys(labels, 0.0)
    for case in cases:
        prediction = predict_case(network, case.image, patch_size, device, precision)
        metrics = compute_label_metrics(prediction, case.label, list(labels), case.spacing, surface=False)
        for label in labels:
            totals[label] += metrics[label].dice
    return {label: total / len(cases) for label, total in totals.items()}
