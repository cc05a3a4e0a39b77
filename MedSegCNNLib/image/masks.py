"""Masks to label maps: the one rule (:func:`label_map_from_mask`) for the mask files 2D datasets ship.

Masks come as label maps (0, 1, 2, ...), as binary pictures saved white on black (0/255 PNGs), as colour
pictures, or with values a painting program chose ({0, 128, 255}). The rule, the same for every mask:

1. With ``mask_values``, raw value ``mask_values[i]`` becomes label ``i`` (``(0, 128, 255)``: 0 -> 0, 128 -> 1,
   255 -> 2); a value not listed is refused.
2. A colour mask whose channels are all equal is read as that one channel; one with real colours is refused
   (convert it to one integer per structure first).
3. The values must be whole numbers >= 0 (``bool`` is 0/1; whole floats are accepted).
4. A binary mask saved white on black, whose only non-zero value is 255 or 65535 (the white of an 8- or 16-bit
   picture), becomes 0/1.
5. Other values are kept as labels when the largest is at most :data:`LARGEST_PLAIN_LABEL`: label maps 0..N,
   also when a case lacks some labels (a mask holding only {0, 2} keeps label 2; it is not taken for a binary
   mask, since in a multi-label dataset it is label 2).
6. Anything else is refused with the values found and the ``mask_values`` option that maps them: grey levels
   such as {0, 128, 255} or {0, 128}, many values (anti-aliased edges, JPEG noise), or labels above
   :data:`LARGEST_PLAIN_LABEL`.

A mask read from a JPEG file (``source`` ending in ``.jpg``/``.jpeg``) is refused: JPEG compression changes the
values along every edge, and a noisy 0/1 mask would look like labels 0..3. Save masks as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .core import Image
from .labels import as_label_array, label_dtype

LARGEST_PLAIN_LABEL = 63
"""The largest mask value taken as a label without ``mask_values`` (rule 5 of the module docstring)."""

_WHITE = (255, 65535)  # the only non-zero value of a binary mask saved white on black (8- or 16-bit)
_SHOWN = 8  # values listed in a refusal


def label_map_from_mask(
    image: Image, *, mask_values: Sequence[float] | None = None, source: str | os.PathLike[str] = ""
) -> Image:
    """The label map of the mask ``image`` by the rule of the module docstring: same geometry, one channel,
    :func:`~MedSegCNNLib.image.labels.label_dtype` values. ``source`` names the mask (e.g. its file) in messages.

    Label names of ``image`` are kept when its values are kept (rule 5) and dropped when they are mapped.
    """
    what = f"Mask {source}" if str(source) else "The mask"
    if str(source).lower().endswith((".jpg", ".jpeg")):
        raise InputError(
            f"{what} is a JPEG file: JPEG compression changes the values along every edge, so its labels cannot be "
            "trusted; save the masks as PNG (threshold or map them from the originals)."
        )
    array = _single_channel(image, what)
    if mask_values is not None:
        return image.with_array(_mapped(array, mask_values, what), labels=())
    labels = as_label_array(array, allow_whole_floats=True, what=what)
    present = _values(labels)
    nonzero = present[present != 0]
    if nonzero.size == 1 and int(nonzero[0]) in _WHITE:
        return image.with_array((labels != 0).astype(np.uint8), labels=())
    if nonzero.size and int(nonzero[-1]) > LARGEST_PLAIN_LABEL:
        shown = ", ".join(f"{v:g}" for v in present[:_SHOWN]) + (", ..." if present.size > _SHOWN else "")
        raise InputError(
            f"{what} holds {present.size} distinct values ({shown}), not a known label set: label values 0..N (N <= "
            f"{LARGEST_PLAIN_LABEL}) or a binary mask saved as 0/255 or 0/65535. If these values stand for "
            f"structures, map them to labels 0, 1, 2, ... in order with --mask-values {_listing(present, ',')} "
            f"(Python: mask_values=({_listing(present)})); if the mask has blurred or lossy edges, threshold it first."
        )
    return image.with_array(labels.astype(label_dtype(int(present[-1]) if present.size else 0), copy=False))


def _single_channel(image: Image, what: str) -> np.ndarray:
    """The mask's array; a colour mask with equal channels gives its first channel, others are refused."""
    channels = image.array.view(np.uint8) if image.array.dtype == np.bool_ else image.array
    if not image.is_multichannel:
        return channels
    if all(np.array_equal(channels[0], channel) for channel in channels[1:]):
        return channels[0]
    raise InputError(
        f"{what} is a colour picture with {image.num_channels} different channels, not a label map; convert it to "
        "one integer label per structure (e.g. 0 background, 1, 2, ... one per colour) and save it as a grayscale PNG."
    )


def _values(array: np.ndarray) -> np.ndarray:
    """The distinct values of ``array``, ascending (counted for 8- and 16-bit integers, which is faster)."""
    if array.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(array.ravel(), minlength=1)).astype(array.dtype)
    return np.unique(array)


def _mapped(array: np.ndarray, mask_values: Sequence[float], what: str) -> np.ndarray:
    """``array`` with ``mask_values[i]`` replaced by ``i``; a value not listed is refused."""
    try:
        listed = np.array([float(v) for v in mask_values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"mask_values must be numbers (the raw mask values in label order), got {mask_values!r}."
        ) from None
    if listed.size == 0 or np.unique(listed).size != listed.size or not np.all(np.isfinite(listed)):
        raise InputError(f"mask_values must list distinct finite values (at least one), got {tuple(mask_values)!r}.")
    present = _values(array)
    order = np.argsort(listed)
    position = np.clip(np.searchsorted(listed[order], present), 0, listed.size - 1)
    unlisted = present[listed[order][position] != present]
    if unlisted.size:
        shown = ", ".join(f"{v:g}" for v in unlisted[:_SHOWN]) + (", ..." if unlisted.size > _SHOWN else "")
        raise InputError(
            f"{what} holds values that mask_values does not list ({shown}); list every value the masks hold, in "
            f"label order (they hold {_listing(present)})."
        )
    table = order.astype(label_dtype(listed.size - 1))  # sorted position -> label
    return table[np.searchsorted(listed[order], array)]


def _listing(values: np.ndarray, separator: str = ", ") -> str:
    """Values for a ``mask_values=(...)`` suggestion (Python literals) or, with ``separator=","``, a
    ``--mask-values`` one; at most :data:`_SHOWN`, then ``...``."""
    parts = [f"{v:g}" for v in values[:_SHOWN]] + (["..."] if values.size > _SHOWN else [])
    return separator.join(parts) + ("," if values.size == 1 and separator == ", " else "")
