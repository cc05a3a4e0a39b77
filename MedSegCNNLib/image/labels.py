"""Label maps: the one rule for what counts as one, and the one integer type chosen for label values.

The rule (:func:`as_label_array`): a label map is a single-channel image whose voxels are integers >= 0.

- ``bool`` voxels are read as ``uint8`` 0/1 (a view, no copy); integer arrays are kept as they are.
- Floating-point voxels are accepted only where the caller allows it (files such as MSD NIfTI label maps store
  labels as floats) and only when every voxel is finite and whole; they become :func:`label_dtype` of the largest.
- Anything else (fractional, NaN/inf, negative values, other types, several channels) raises :class:`InputError`.

The type (:func:`label_dtype`): ``uint8`` for label values up to 255, else ``int16`` up to 32767, else ``int32``
up to 2**31 - 1 (signed above ``uint8`` because torch has no ``uint16``/``uint32`` arithmetic).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .core import Image

LARGEST_LABEL = int(np.iinfo(np.int32).max)
"""The largest label value the library stores (2**31 - 1)."""


def label_dtype(largest: int) -> np.dtype:
    """The integer type of a label array whose values lie in ``0..largest`` (see the module docstring)."""
    if largest > LARGEST_LABEL:
        raise InputError(f"Label value {largest:g} is above the supported maximum 2**31 - 1.")
    if largest <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    return np.dtype(np.int16) if largest <= np.iinfo(np.int16).max else np.dtype(np.int32)


def as_label_array(
    image: Image | np.ndarray,
    *,
    allow_whole_floats: bool,
    compact: bool = False,
    what: str = "The label map",
    retry: str = "try again",
) -> np.ndarray:
    """The voxels of the label map ``image`` as an integer array, by the rule of the module docstring.

    An ``ndarray`` is taken as the voxels of a single-channel map. ``allow_whole_floats`` accepts float voxels
    that are all finite and whole. ``compact`` casts the result to :func:`label_dtype` of its largest value
    (training data and exported files; otherwise integer arrays keep their type). ``what`` names the label map
    at the start of the error messages (e.g. ``"Case c: label map c.nii.gz"``); ``retry`` ends the message
    about non-finite voxels (what the user does after fixing the map).
    """
    if isinstance(image, Image):
        if image.is_multichannel:
            raise InputError(
                f"{what} has {image.num_channels} channels (or a 4th dimension); a label map must be a single 2D or "
                "3D volume: a single-channel image with one integer value per structure (take the argmax over the "
                "channels, or one channel, first)."
            )
        array = image.array
    else:
        array = np.asarray(image)
    if allow_whole_floats and np.issubdtype(array.dtype, np.floating):
        _check_whole(array, what, retry)
    else:
        array = integer_label_values(array, what=what)
    if array.size and not np.issubdtype(array.dtype, np.unsignedinteger):
        low = array.min()
        if low < 0:
            raise InputError(f"{what} holds negative values (min {low:g}); label values must be non-negative (>= 0).")
    if compact or not np.issubdtype(array.dtype, np.integer):
        array = array.astype(label_dtype(int(array.max(initial=0))), copy=False)
    return array


def integer_label_values(array: np.ndarray, *, what: str) -> np.ndarray:
    """``array`` with ``bool`` viewed as ``uint8``; :class:`InputError` naming ``what`` unless its type is then an
    integer one. The values are not checked: :func:`~MedSegCNNLib.metrics.label_metrics.compute_label_metrics`
    compares any integer labels, negative ones too; label maps go through :func:`as_label_array`.
    """
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"{what} has values of type {array.dtype}; a label map needs an integer dtype (round and cast it "
            "first, e.g. np.rint(array).astype(np.int32))."
        )
    return array


def _check_whole(array: np.ndarray, what: str, retry: str) -> None:
    """:class:`InputError` unless every voxel of the float ``array`` is finite and whole."""
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(
            f"{what} has {bad} non-finite voxel(s) (NaN or infinite); a label map holds integers >= 0. Fix the "
            f"label map (every voxel needs a label) and {retry}."
        )
    fractional = array[array != np.rint(array)]
    if fractional.size:
        raise InputError(
            f"{what} holds non-integer values (e.g. {float(fractional[0]):g}); a label map holds integers. Is this "
            "an intensity image or a probability map? Give the label map instead."
        )
