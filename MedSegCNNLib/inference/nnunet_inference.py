"""Segmentation with an imported nnU-Net v2 model: nnU-Net's own steps around the network
(:mod:`MedSegCNNLib.data.nnunet.preprocessing`) with MedSegCNN's engine in the middle (any backend and precision, the
accuracy gate, the lean sliding window), logits averaged over the checkpoint's mirror axes and the folds."""

from __future__ import annotations

import numpy as np

from ..data.nnunet.plan import NnUNetPlan
from ..data.nnunet.preprocessing import VoxelOrder, labels_from_logits, preprocess, probabilities_from_logits
from ..errors import InputError
from ..image import Image
from .model import SegmentationModel
from .options import PredictOptions
from .prediction import WindowRecipe, predict_gated
from .sliding_window import Progress

#: nnU-Net reads a 2D image as a volume of one slice whose spacing is this times its largest pixel spacing.
SLICE_SPACING_FACTOR_OF_2D_IMAGES = 999.0


def segment_nnunet(
    image: Image,
    model: SegmentationModel,
    options: PredictOptions,
    *,
    reference: str,
    overlap: float,
    batch_size: int,
    progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The label map of ``image`` in its array order and, when ``options`` want probabilities or uncertainty, the
    (K, ...) probabilities (see the module docstring); ``reference`` names the image in the accuracy gate's
    record (which compares label maps on the network's grid)."""
    plan = model.plan
    if not isinstance(plan, NnUNetPlan):
        raise InputError("This model is not an imported nnU-Net model.")
    if options.wants_probabilities and plan.regions_class_order is not None:
        raise InputError(
            "This nnU-Net model predicts overlapping regions, not one probability per label; predict its labels "
            "without probabilities or uncertainty."
        )
    channels = image.array if image.is_multichannel else image.array[None]
    spacing = tuple(reversed(image.spacing))  # array order (z, y, x)
    if image.spatial_dims == 2:
        channels, spacing = channels[:, None], (SLICE_SPACING_FACTOR_OF_2D_IMAGES * max(spacing), *spacing)
    order = None
    if plan.input_orientation == "RAS":
        if image.spatial_dims != 3:
            raise InputError("This nnU-Net model reorients 3D volumes; give it a 3D image.")
        order = VoxelOrder.closest_ras(image.direction)
        channels, spacing = order.forward(channels), order.spacing(spacing)
    case = preprocess(channels, spacing, plan)

    # logits kept in float16, as nnU-Net keeps them: half the memory of the largest buffer
    recipe = WindowRecipe(output="average", mirror_axes=plan.mirror_axes, average="logits", window_weights="nnunet",
                          overlap=overlap, batch_size=batch_size, average_dtype="float16")  # fmt: skip
    logits = predict_gated(model, options, case.data, recipe, reference=reference, progress=progress)
    labels = labels_from_logits(logits, case, plan, model.num_classes)
    probabilities = probabilities_from_logits(logits, case, plan) if options.wants_probabilities else None
    if order is not None:
        labels = np.ascontiguousarray(order.backward(labels))
        probabilities = None if probabilities is None else np.ascontiguousarray(order.backward(probabilities))
    if image.spatial_dims == 2:
        labels = labels[0]
        probabilities = None if probabilities is None else probabilities[:, 0]
    return labels, probabilities
