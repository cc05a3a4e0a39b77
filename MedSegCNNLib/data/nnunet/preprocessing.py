"""nnU-Net v2's inference around the network, step for step (nnunetv2 2.x ``DefaultPreprocessor.run_case_npy``
and ``convert_predicted_logits_to_segmentation_with_correct_shape``), on arrays in file voxel order (z, y, x):

1. transpose the axes by ``transpose_forward`` (the spacing with them);
2. crop to the bounding box of the non-zero mask (voxels non-zero in any channel, holes filled);
3. normalise each channel (:class:`~.plan.ChannelNormalization`), in float32;
4. resample to the network's spacing (:mod:`.resampling`; a 2D model keeps axis 0);
5. (the caller) sliding window with Gaussian weights and step 0.5 of the patch, logits averaged over the mirror
   flips and the folds;
6. resample the logits back to the cropped shape (order 1) and take the argmax (softmax models) or paint each
   region whose sigmoid exceeds 0.5 (logit > 0) in ``regions_class_order``;
7. put the crop back (background outside) and undo the transpose.

Step 6 runs one channel at a time with a running maximum, so it never holds the resampled logits of all labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ...image.labels import label_dtype
from .plan import ChannelNormalization, NnUNetPlan
from .resampling import new_shape, resample

_EPSILON = 1e-8


@dataclass(frozen=True)
class NnUNetCase:
    """One image ready for the network: ``data`` (C, *S) float32 on the network's grid, and what step 6 and 7
    need to map logits back (shapes and spacing in transposed order)."""

    data: np.ndarray
    box: tuple[slice, ...]
    shape_before_cropping: tuple[int, ...]
    shape_after_cropping: tuple[int, ...]
    spacing: tuple[float, ...]
    network_spacing: tuple[float, ...]


@dataclass(frozen=True)
class VoxelOrder:
    """How an image's voxel array (z, y, x) is permuted and flipped into the closest canonical RAS order
    (nnU-Net's reorienting readers, ``nibabel.as_closest_canonical``): array axis ``j`` of the result is axis
    ``axes[j]`` of the image's array, reversed where ``flips[j]``."""

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def closest_ras(cls, direction: np.ndarray) -> VoxelOrder:
        """The order for an image whose ITK axis ``a`` (x, y, z) points along column ``a`` of ``direction``
        (LPS): each RAS world axis gets the voxel axis most parallel to it (largest |cosine| first)."""
        cosines = np.asarray(direction, dtype=float).reshape(3, 3) * np.array([-1.0, -1.0, 1.0])[:, None]
        world_of: dict[int, int] = {}  # ITK voxel axis -> RAS world axis
        for flat in np.argsort(-np.abs(cosines), axis=None):
            world, axis = divmod(int(flat), 3)
            if world not in world_of.values() and axis not in world_of:
                world_of[axis] = world
        itk_axis_of = {world: axis for axis, world in world_of.items()}
        # array axis j is ITK axis 2 - j, in the result as in the image
        axes = tuple(2 - itk_axis_of[2 - j] for j in range(3))
        flips = tuple(bool(cosines[2 - j, itk_axis_of[2 - j]] < 0) for j in range(3))
        return cls(axes, flips)  # type: ignore[arg-type]

    def forward(self, array: np.ndarray) -> np.ndarray:
        """``array`` (..., z, y, x) in RAS order (a view)."""
        lead = array.ndim - 3
        moved = array.transpose(*range(lead), *(lead + a for a in self.axes))
        return np.flip(moved, axis=[lead + j for j in range(3) if self.flips[j]]) if any(self.flips) else moved

    def backward(self, array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`forward` (a view)."""
        lead = array.ndim - 3
        if any(self.flips):
            array = np.flip(array, axis=[lead + j for j in range(3) if self.flips[j]])
        inverse = [self.axes.index(a) for a in range(3)]
        return array.transpose(*range(lead), *(lead + a for a in inverse))

    def spacing(self, spacing: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(spacing[a] for a in self.axes)


def preprocess(channels: np.ndarray, spacing: tuple[float, ...], plan: NnUNetPlan) -> NnUNetCase:
    """Steps 1–4 for ``channels`` (C, z, y, x) with voxel ``spacing`` (z, y, x), mm."""
    transpose = plan.transpose_forward
    transposed = channels.transpose(0, *(a + 1 for a in transpose))  # a view: cropped before the float32 copy
    spacing = tuple(float(spacing[a]) for a in transpose)
    shape_before = tuple(transposed.shape[1:])
    mask = _filled_nonzero_mask(transposed)
    box = _bounding_box(mask)
    data, mask = np.ascontiguousarray(transposed[(slice(None), *box)], dtype=np.float32), mask[box]
    for channel, how in zip(data, plan.normalization, strict=True):
        _normalize(channel, how, mask)
    network_spacing = plan.spacing if plan.spatial_dims == 3 else (spacing[0], *plan.spacing)
    target = new_shape(data.shape[1:], spacing, network_spacing)
    data = resample(data, target, spacing, network_spacing, plan.resampling_data)
    return NnUNetCase(
        data=np.ascontiguousarray(data, dtype=np.float32),
        box=box,
        shape_before_cropping=shape_before,
        shape_after_cropping=tuple(mask.shape),
        spacing=spacing,
        network_spacing=tuple(network_spacing),
    )


def labels_from_logits(logits: np.ndarray, case: NnUNetCase, plan: NnUNetPlan, num_labels: int) -> np.ndarray:
    """Steps 6–7: the label map (z, y, x) in file voxel order from the averaged ``logits`` (K, *S) on the
    network's grid."""
    cropped = np.zeros(case.shape_after_cropping, dtype=label_dtype(num_labels - 1))
    best: np.ndarray | None = None
    for index in range(logits.shape[0]):
        channel = resample(logits[index : index + 1], case.shape_after_cropping, case.network_spacing, case.spacing,
                           plan.resampling_probabilities)[0]  # fmt: skip
        if plan.regions_class_order is not None:
            cropped[channel > 0] = plan.regions_class_order[index]
        elif best is None:
            best = channel.astype(np.float32, copy=True)
        else:
            higher = channel > best
            cropped[higher] = index
            np.maximum(best, channel, out=best)
    labels = np.zeros(case.shape_before_cropping, dtype=cropped.dtype)
    labels[case.box] = cropped
    return np.ascontiguousarray(labels.transpose(plan.transpose_backward))


def probabilities_from_logits(logits: np.ndarray, case: NnUNetCase, plan: NnUNetPlan) -> np.ndarray:
    """nnU-Net's probabilities (K, z, y, x) float32 in file voxel order: the logits resampled back (step 6), then
    softmax (sigmoid per region for region-based models); outside the crop the background has probability 1
    (regions 0)."""
    resampled = np.stack([
        resample(logits[index : index + 1], case.shape_after_cropping, case.network_spacing, case.spacing,
                 plan.resampling_probabilities)[0]
        for index in range(logits.shape[0])
    ])  # fmt: skip
    if plan.regions_class_order is not None:
        cropped = 1.0 / (1.0 + np.exp(-resampled))
    else:
        cropped = np.exp(resampled - resampled.max(axis=0, keepdims=True))
        cropped /= cropped.sum(axis=0, keepdims=True)
    probabilities = np.zeros((logits.shape[0], *case.shape_before_cropping), dtype=np.float32)
    if plan.regions_class_order is None:
        probabilities[0] = 1.0
    probabilities[(slice(None), *case.box)] = cropped
    return np.ascontiguousarray(probabilities.transpose(0, *(a + 1 for a in plan.transpose_backward)))


def _filled_nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels non-zero in any channel, with enclosed holes filled (face connectivity, as SciPy's
    ``binary_fill_holes``)."""
    mask = np.any(data != 0, axis=0)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    filled = sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayFromImage(filled).astype(bool)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding the mask (nnU-Net's ``get_bbox_from_mask``); the whole array when it is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        box.append(slice(int(present[0]), int(present[-1]) + 1) if present.size else slice(0, mask.shape[axis]))
    return tuple(box)


def _normalize(channel: np.ndarray, how: ChannelNormalization, mask: np.ndarray) -> None:
    """Normalise one float32 channel in place (nnU-Net's normalisation classes, the same float32 operations)."""
    if how.scheme == "zscore":
        if how.use_mask:
            values = channel[mask]
            channel[mask] = (values - values.mean()) / max(values.std(), _EPSILON)
        else:
            mean, std = channel.mean(), channel.std()
            channel -= mean
            channel /= max(std, _EPSILON)
    elif how.scheme == "ct":
        np.clip(channel, how.percentile_00_5, how.percentile_99_5, out=channel)
        channel -= how.mean
        channel /= max(how.std, _EPSILON)
    elif how.scheme == "rescale_to_0_1":
        channel -= channel.min()
        channel /= np.clip(channel.max(), _EPSILON, None)
    elif how.scheme == "rgb_to_0_1":
        channel /= 255.0
