"""Random training patches from preprocessed cases, with foreground oversampling.

Each sample of a batch picks a case uniformly at random. A ``foreground_fraction`` of the samples (on
average; each batch gets ``floor(B * f)`` or ``ceil(B * f)``, the extra one with the fractional
probability) is *foreground*: a label is chosen uniformly among the non-zero labels present in the case,
then one of its voxels (from :attr:`PreprocessedCase.foreground_locations`), and the patch is placed so that
the voxel lies at a uniformly random position inside it. The other samples, and foreground samples of
cases without labelled voxels, are placed uniformly at random inside the case. A case smaller than the
patch along an axis is placed at a random offset inside the patch and padded with 0 (image, after
normalisation) and 0 (label).

A 2D patch size on 3D cases gives 2D slices across ``slice_axis`` (0, the axial axis of (z, y, x), by
default). Patches are copied straight from views of the case arrays into the batch; nothing else is
copied. The random stream comes from ``(seed, rank)``, so DDP ranks draw different patches, and
:meth:`PatchSampler.state_dict` captures it for an exact resume.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import InputError
from .preprocessing import PreprocessedCase


class PatchSampler(IterableDataset):
    """Batches ``(images float32 (B, C, *patch), labels int64 (B, 1, *patch))`` drawn from ``cases``.

    ``patch_size`` is in array order: 3 sizes for a 3D model, 2 for a 2D one. Iterating yields batches
    forever; with a :class:`torch.utils.data.DataLoader` use ``batch_size=None``: each worker then draws
    from its own stream (derived from seed, rank and worker id), and exact resuming holds only for
    :meth:`next_batch` called in the main process.
    """

    def __init__(
        self,
        cases: Sequence[PreprocessedCase],
        patch_size: Sequence[int],
        batch_size: int,
        *,
        foreground_fraction: float = 0.33,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        slice_axis: int = 0,
    ) -> None:
        super().__init__()
        self._cases = tuple(cases)
        if not self._cases:
            raise InputError("The patch sampler needs at least one preprocessed case.")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise InputError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"rank must be in [0, world_size); got rank {rank}, world_size {world_size}.")
        self.patch_size = tuple(int(size) for size in patch_size)
        self.batch_size = int(batch_size)
        self.foreground_fraction = float(foreground_fraction)
        self.seed, self.rank = int(seed), int(rank)
        self._num_channels = _check_cases(self._cases)
        case_dims = self._cases[0].image.ndim - 1
        if any(size < 1 for size in self.patch_size) or len(self.patch_size) not in (2, 3):
            raise InputError(f"patch_size must be 2 or 3 positive sizes, got {tuple(patch_size)}.")
        if len(self.patch_size) == case_dims:
            self._sampled_size, self._slice_axis = self.patch_size, None
        elif len(self.patch_size) == 2 and case_dims == 3:
            if slice_axis not in (0, 1, 2):
                raise InputError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
            sampled = list(self.patch_size)
            sampled.insert(slice_axis, 1)
            self._sampled_size, self._slice_axis = tuple(sampled), slice_axis
        else:
            raise InputError(
                f"A {len(self.patch_size)}D patch size {self.patch_size} cannot be cut from {case_dims}D cases."
            )
        self._labels = [_label_groups(case) for case in self._cases]
        self._rng = np.random.default_rng((self.seed, self.rank))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: images float32 ``(B, C, *patch_size)``, labels int64 ``(B, 1, *patch_size)``."""
        rng = self._rng
        wanted = self.batch_size * self.foreground_fraction
        foreground = int(wanted) + int(rng.random() < wanted - int(wanted))
        images = np.zeros((self.batch_size, self._num_channels, *self._sampled_size), dtype=np.float32)
        labels = np.zeros((self.batch_size, 1, *self._sampled_size), dtype=np.int64)
        for sample in range(self.batch_size):
            index = int(rng.integers(len(self._cases)))
            case = self._cases[index]
            start = self._start(case, self._labels[index], force_foreground=sample < foreground)
            source, target = _windows(case.shape, start, self._sampled_size)
            images[(sample, slice(None), *target)] = case.image[(slice(None), *source)]
            labels[(sample, 0, *target)] = case.label[source]
        if self._slice_axis is not None:
            images = images.squeeze(2 + self._slice_axis)
            labels = labels.squeeze(2 + self._slice_axis)
        return torch.from_numpy(images), torch.from_numpy(labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        if worker is not None:  # this is the worker's own copy of the sampler
            self._rng = np.random.default_rng((self.seed, self.rank, worker.id + 1))
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """The random stream's state as plain JSON data (large integers as decimal strings)."""
        state = self._rng.bit_generator.state
        return {
            "bit_generator": state["bit_generator"],
            "state": str(state["state"]["state"]),
            "inc": str(state["state"]["inc"]),
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the random stream from a :meth:`state_dict`."""
        try:
            if state["bit_generator"] != "PCG64":
                raise ValueError(f"bit generator {state['bit_generator']!r}")
            self._rng.bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": int(state["state"]), "inc": int(state["inc"])},
                "has_uint32": int(state["has_uint32"]),
                "uinteger": int(state["uinteger"]),
            }
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"Not a patch sampler state ({error}); give what PatchSampler.state_dict returned."
            ) from None

    def _start(self, case: PreprocessedCase, groups: list[np.ndarray], *, force_foreground: bool) -> list[int]:
        """Patch start per axis (negative or beyond the case where it is padded)."""
        rng = self._rng
        low = [min(0, n - p) for n, p in zip(case.shape, self._sampled_size, strict=True)]
        high = [max(0, n - p) for n, p in zip(case.shape, self._sampled_size, strict=True)]
        if force_foreground and groups:
            rows = groups[int(rng.integers(len(groups)))]
            voxel = case.foreground_locations[rows[int(rng.integers(len(rows)))]]
            offsets = rng.integers(0, self._sampled_size)
            return [int(np.clip(v - o, lo, hi)) for v, o, lo, hi in zip(voxel, offsets, low, high, strict=True)]
        return [int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high, strict=True)]


def _check_cases(cases: Sequence[PreprocessedCase]) -> int:
    """The common channel count; every case needs a label map on its image's grid."""
    channels = {case.image.shape[0] for case in cases}
    dims = {case.image.ndim for case in cases}
    if len(channels) != 1 or len(dims) != 1:
        raise InputError(
            f"All cases need the same channels and dimension; got channel counts {sorted(channels)} and "
            f"{sorted(d - 1 for d in dims)}D cases."
        )
    for case in cases:
        if case.label is None or case.label.shape != case.shape:
            raise InputError(f"Case {case.name or '?'} has no label map on its image's grid; training needs one.")
    return channels.pop()


def _label_groups(case: PreprocessedCase) -> list[np.ndarray]:
    """Rows of ``case.foreground_locations`` for each non-zero label present (one array per label)."""
    values = case.foreground_labels
    return [np.flatnonzero(values == value) for value in np.unique(values[values != 0])]


def _windows(
    shape: Sequence[int], start: Sequence[int], size: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of the case (source) and of the patch (target) that a patch at ``start`` shares with the case."""
    source, target = [], []
    for n, first, p in zip(shape, start, size, strict=True):
        low, high = max(first, 0), min(first + p, n)
        source.append(slice(low, high))
        target.append(slice(low - first, high - first))
    return tuple(source), tuple(target)
