"""The network contract: :class:`NetworkConfig` (options every network has, validated), the
:class:`SegmentationNetwork` base class and the ``check_*`` option validators the networks share.

The networks (:mod:`.unet`, :mod:`.fcn`, :mod:`.segnet`, :mod:`.deeplab`) build on this module;
:mod:`.registry` turns plain configuration into one of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch
from torch import nn

from ..atomic import write_text_atomic
from ..errors import InputError
from ..records import record_from_dict
from ..runtime import user_cache_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkConfig:
    """Options every network has. Subclasses add theirs (with defaults) and validate in ``__post_init__``.

    ``spatial_dims``: 2 or 3; ``in_channels``: image channels; ``out_channels``: classes (logits per voxel).
    """

    name: str
    spatial_dims: int
    in_channels: int
    out_channels: int

    NAMES: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_choice(self.name, "name", self.name, self.NAMES)
        check_choice(self.name, "spatial_dims", self.spatial_dims, (2, 3))
        check_int(self.name, "in_channels", self.in_channels, minimum=1)
        check_int(self.name, "out_channels", self.out_channels, minimum=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Validate plain configuration data: unknown or missing options raise :class:`InputError`."""
        name = data.get("name", cls.NAMES[0]) if isinstance(data, Mapping) else cls.NAMES[0]
        return record_from_dict(cls, data, f"{name} configuration")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (lists, not tuples), every option included."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class SegmentationNetwork(nn.Module):
    """Base class of the networks: maps ``(B, in_channels, *spatial)`` images to logits
    ``(B, out_channels, *spatial)``, spatial axes in array order (``(z, y, x)`` or ``(y, x)``).

    Subclasses set ``self.encoder`` (the downsampling path, frozen for fine-tuning) and call
    :meth:`check_input` first thing in ``forward``.
    """

    encoder: nn.Module

    def __init__(self, settings: NetworkConfig, divisor: Sequence[int]) -> None:
        super().__init__()
        self.settings = settings
        self._divisor = tuple(int(d) for d in divisor)

    @property
    def config(self) -> dict[str, Any]:
        """The complete configuration, defaults included (plain JSON data)."""
        return self.settings.to_dict()

    @property
    def divisor(self) -> tuple[int, ...]:
        """Per spatial axis (array order): input sizes must be multiples of it."""
        return self._divisor

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is a float ``(B, in_channels, *spatial)`` tensor whose spatial
        sizes are multiples of :attr:`divisor`."""
        settings = self.settings
        dims = settings.spatial_dims
        axes = "(B, C, z, y, x)" if dims == 3 else "(B, C, y, x)"
        if not isinstance(x, torch.Tensor) or x.dim() != dims + 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"This {dims}D {settings.name} takes a {axes} tensor; got {shape}.")
        if not x.is_floating_point():
            raise InputError(f"The {settings.name} takes floating-point images; got {x.dtype}. Convert with .float().")
        if x.shape[1] != settings.in_channels:
            raise InputError(
                f"The {settings.name} was built for {settings.in_channels} input channel(s); the input has "
                f"{x.shape[1]} (shape {tuple(x.shape)}). Give images with {settings.in_channels} channel(s)."
            )
        size = tuple(x.shape[2:])
        if any(s % d for s, d in zip(size, self._divisor, strict=True)):
            padded = tuple(math.ceil(s / d) * d for s, d in zip(size, self._divisor, strict=True))
            raise InputError(
                f"The {settings.name}'s input spatial size must be a multiple of {self._divisor} per axis; got {size}. "
                f"Pad to a multiple of {self._divisor} (e.g. {padded})."
            )


# Validation of option values; each raises InputError naming the network, the option and what is allowed.


def feature_map_bytes(network: nn.Module, window: Sequence[int]) -> int:
    """Bytes of every leaf layer's output (float32) for one input of shape ``window`` (channels, then the spatial
    sizes), counted exactly by running ``network`` (built on torch's "meta" device: shapes only, nothing
    allocated). A window the network cannot take raises its own error (``RuntimeError``, ...)."""
    total = 0

    def add_output(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        for tensor in output if isinstance(output, list | tuple) else (output,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()

    hooks = [
        module.register_forward_hook(add_output)
        for module in network.modules()
        if next(module.children(), None) is None
    ]
    try:
        with torch.no_grad():
            network(torch.empty((1, *window), device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


#: The most characters of a cached feature-map count read (a network configuration is a few hundred).
_MAX_CACHED_RECORD_CHARS = 1_000_000


def cached_feature_map_bytes(network: nn.Module, config: Mapping[str, Any], window: Sequence[int]) -> int:
    """:func:`feature_map_bytes` of ``network``, built from ``config`` by
    :func:`~MedSegCNNLib.networks.build_network`, for one input of shape ``window``, kept in the user's cache
    folder keyed by the configuration, the window and torch's version: its first run in a process costs about a
    second of torch's own imports, so a network and window are measured once per machine (by the model loader and
    the training planner alike). An unreadable or unwritable cache costs the measurement, never the caller."""
    record = {"torch": torch.__version__, "network": dict(config), "window": [int(size) for size in window]}
    text = json.dumps(record, sort_keys=True)
    path = user_cache_folder() / "feature-map-bytes" / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stored = json.loads(path.read_text(encoding="utf-8")[:_MAX_CACHED_RECORD_CHARS])
        if json.dumps(stored["record"], sort_keys=True) == text and isinstance(stored["bytes"], int):
            return stored["bytes"]
    measured = feature_map_bytes(network, window)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"record": record, "bytes": measured}), overwrite=True)
    except (OSError, InputError) as error:
        logger.debug("Could not keep the network's size in %s (%s).", path, error)
    return measured


def check_choice(network: str, option: str, value: Any, choices: Sequence[Any]) -> None:
    if isinstance(value, bool) or value not in choices:
        raise InputError(f"{network} option {option!r} must be one of {list(choices)}; got {value!r}.")


def check_int(network: str, option: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{network} option {option!r} must be an integer >= {minimum}; got {value!r}.")
    return value


def check_int_range(network: str, option: str, value: Any, low: int, high: int) -> int:
    """An integer in ``low..high`` (both included)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{network} option {option!r} must be an integer in {low}..{high}; got {value!r}.")
    return value


def check_finite(network: str, option: str, value: Any) -> float:
    """A finite number, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{network} option {option!r} must be a finite number; got {value!r}.")
    return float(value)


def check_bool(network: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{network} option {option!r} must be true or false; got {value!r}.")
    return value


def check_fraction(network: str, option: str, value: Any) -> float:
    """A probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise InputError(f"{network} option {option!r} must be a number in [0, 1); got {value!r}.")
    return float(value)


def check_ints(network: str, option: str, value: Any, *, minimum: int, length: int | None = None) -> tuple[int, ...]:
    """A list of integers >= ``minimum`` (of ``length`` items when given)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise InputError(f"{network} option {option!r} must be a non-empty list of integers; got {value!r}.")
    items = tuple(check_int(network, option, v, minimum=minimum) for v in value)
    if length is not None and len(items) != length:
        raise InputError(f"{network} option {option!r} needs {length} values; got {len(items)} ({list(items)}).")
    return items


def check_per_level(
    network: str, option: str, value: Any, *, levels: int, dims: int, minimum: int
) -> tuple[tuple[int, ...], ...]:
    """Per-level, per-axis integers: one integer (every level and axis), or ``levels`` entries each an integer
    (every axis) or a list of ``dims`` integers in array order (anisotropic, e.g. ``[1, 3, 3]``)."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        value = [value] * levels
    if len(value) != levels:
        raise InputError(
            f"{network} option {option!r} needs {levels} entries (one per level), or a single value; "
            f"got {len(value)}: {value!r}."
        )
    result = []
    for entry in value:
        if isinstance(entry, Sequence) and not isinstance(entry, str | bytes):
            result.append(check_ints(network, option, entry, minimum=minimum, length=dims))
        else:
            result.append((check_int(network, option, entry, minimum=minimum),) * dims)
    return tuple(result)
