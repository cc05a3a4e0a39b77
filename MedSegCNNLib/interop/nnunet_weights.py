"""nnU-Net v2 checkpoints' ``network_weights`` → the state dict of MedSegCNN's native rebuild
(:mod:`MedSegCNNLib.networks.nnunet_unet`): the same tensors under MedSegCNN's names
(:func:`state_dict_from_nnunet`), and the channels the weights show (:func:`nnunet_weights_channels`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError
from ..networks.nnunet_unet import PLAIN_UNET, RESIDUAL_UNET, NNUNetUNet, NNUNetUNetConfig

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes of the names of a network wrapped by DistributedDataParallel or torch.compile."""

_ALIASES = (
    (re.compile(r"^decoder\.encoder\."), "encoder."),  # nnU-Net's decoder holds the encoder as a submodule
    (re.compile(r"\.all_modules\.0\."), ".conv."),  # a conv-norm-act layer lists its modules again
    (re.compile(r"\.all_modules\.[1-9]\d*\."), ".norm."),  # its only other module with state (dropout, act: none)
)
"""Second names nnU-Net's modules give the same tensors, and their first names."""

_DECODER_NAMES = (
    ("decoder.transpconvs.{j}.", "decoder.{j}.up."),
    ("decoder.stages.{j}.convs.{k}.", "decoder.{j}.block.{k}."),
)
_ENCODER_NAMES = {
    PLAIN_UNET: (("encoder.stages.{i}.0.convs.{k}.", "encoder.stages.{i}.{k}."),),
    RESIDUAL_UNET: (
        ("encoder.stem.convs.0.", "encoder.stem."),
        ("encoder.stages.{i}.blocks.{b}.conv1.", "encoder.stages.{i}.{b}.layers.0."),
        ("encoder.stages.{i}.blocks.{b}.conv2.", "encoder.stages.{i}.{b}.layers.1."),
        ("encoder.stages.{i}.blocks.{b}.skip.", "encoder.stages.{i}.{b}.shortcut."),
    ),
}
"""nnU-Net name prefix -> MedSegCNN name prefix (``{x}``: a number, kept); the rest of a name is the same."""
_TRAINING_HEAD = re.compile(r"^decoder\.seg_layers\.(\d+)\.")
"""nnU-Net's logits of decoder stage k; all but the last serve deep supervision in training."""
_FIRST_CONVOLUTIONS = ("encoder.stages.0.0.convs.0.conv.weight", "encoder.stem.convs.0.conv.weight")
"""The weights of the first convolution of nnU-Net's PlainConvUNet and ResidualEncoderUNet (its input channels)."""


def state_dict_from_nnunet(
    network_weights: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The state dict of the network ``config`` describes (an ``"nnunet-plain-unet"`` or
    ``"nnunet-residual-unet"``) from nnU-Net's ``network_weights`` of that architecture (the same tensors).

    The names are mapped thus: a ``module.`` or ``_orig_mod.`` prefix on every name is removed; second names of
    one tensor (``decoder.encoder.*`` = ``encoder.*``, ``*.all_modules.0.*`` = ``*.conv.*``,
    ``*.all_modules.k.*`` = ``*.norm.*``) must hold equal values and are dropped; the deep-supervision heads
    ``decoder.seg_layers.0..n-3`` are dropped and ``decoder.seg_layers.{n-2}.*`` becomes ``head.*``; the other
    prefixes are renamed by the table in this module (e.g. ``decoder.transpconvs.{j}.`` -> ``decoder.{j}.up.``).
    Missing or unexpected names and shape mismatches raise :class:`InputError` naming them (in nnU-Net's names).
    """
    name = config.get("name") if isinstance(config, Mapping) else None
    if name not in NNUNetUNetConfig.NAMES:
        raise InputError(f"state_dict_from_nnunet converts {list(NNUNetUNetConfig.NAMES)}; the config is {name!r}.")
    settings = NNUNetUNetConfig.from_dict(config)
    with torch.device("meta"):  # names and shapes only, nothing allocated
        expected = {key: tensor.shape for key, tensor in NNUNetUNet(settings).state_dict().items()}
    weights = _unwrapped(network_weights)
    last = len(settings.features) - 2  # the decoder stage of the logits
    renames = [(_template_pattern(old), new) for old, new in (*_ENCODER_NAMES[name], *_DECODER_NAMES)]
    renames.append((_template_pattern(f"decoder.seg_layers.{last}."), "head."))

    converted: dict[str, tuple[str, torch.Tensor]] = {}  # own name -> (nnU-Net name, tensor)
    unexpected = []
    for key, tensor in _deduplicated(weights).items():
        head = _TRAINING_HEAD.match(key)
        if head and int(head[1]) < last:
            continue
        own = _renamed(key, renames)
        if own in expected and own not in converted:
            converted[own] = (key, tensor)
        else:
            unexpected.append(key)
    inverse = [(_template_pattern(new), old) for old, new in (*_ENCODER_NAMES[name], *_DECODER_NAMES)]
    inverse.append((_template_pattern("head."), f"decoder.seg_layers.{last}."))
    missing = [_renamed(own, inverse) or own for own in expected if own not in converted]
    wrong = [
        f"{key} {tuple(tensor.shape)} (expected {tuple(expected[own])})"
        for own, (key, tensor) in converted.items()
        if tensor.shape != expected[own]
    ]
    problems = "; ".join(
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    )
    if problems:
        raise InputError(f"The nnU-Net weights do not fit the {name} of the plans: {problems}.")
    return {own: converted[own][1] for own in expected}


def nnunet_weights_channels(network_weights: Mapping[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """``(input channels, outputs)`` of the nnU-Net network whose ``network_weights`` these are: the input
    channels of its first convolution (PlainConvUNet's first stage, ResidualEncoderUNet's stem) and the outputs of
    its logit heads (``decoder.seg_layers.k``); None for either that the weights do not show."""
    weights = _unwrapped(network_weights)
    first = next((weights[key] for key in _FIRST_CONVOLUTIONS if key in weights), None)
    heads = [tensor for key, tensor in weights.items() if _TRAINING_HEAD.match(key) and key.endswith(".weight")]
    inputs = int(first.shape[1]) if first is not None and first.ndim > 1 else None
    return inputs, int(heads[0].shape[0]) if heads and heads[0].ndim > 0 else None


def _unwrapped(network_weights: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``network_weights`` checked (names to tensors) and without DDP / torch.compile prefixes."""
    if not isinstance(network_weights, Mapping) or not network_weights:
        raise InputError("nnU-Net network_weights must be a non-empty mapping of names to tensors.")
    bad = [
        repr(key)
        for key, value in network_weights.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad:
        raise InputError(f"nnU-Net network_weights must map names to tensors; not so for {', '.join(bad[:5])}.")
    weights = dict(network_weights)
    while prefix := next((p for p in _WRAPPER_PREFIXES if all(key.startswith(p) for key in weights)), None):
        weights = {key.removeprefix(prefix): value for key, value in weights.items()}
    return weights


def _deduplicated(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` under first names only (see :data:`_ALIASES`); every second name must hold the same values."""
    first: dict[str, tuple[str, torch.Tensor]] = {}
    for key in sorted(weights, key=lambda key: _dealiased(key) != key):  # first names first
        tensor = weights[key]
        name = _dealiased(key)
        if name not in first:
            first[name] = (key, tensor)
            continue
        other, value = first[name]
        if not _same(value, tensor):
            raise InputError(
                f"The nnU-Net weights hold different values under {other} and {key}, two names of one tensor; "
                "the checkpoint is damaged."
            )
    return {name: tensor for name, (_, tensor) in first.items()}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same values (views of the same memory are not compared)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return (a.data_ptr() == b.data_ptr() and a.stride() == b.stride()) or torch.equal(a, b)


def _dealiased(key: str) -> str:
    for pattern, replacement in _ALIASES:
        key = pattern.sub(replacement, key, count=1)
    return key


def _template_pattern(template: str) -> re.Pattern[str]:
    """A pattern matching names that start with ``template``, whose ``{x}`` fields are numbers (group ``x``)."""
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "^" + "".join(re.escape(part) if n % 2 == 0 else rf"(?P<{part}>\d+)" for n, part in enumerate(parts))
    )


def _renamed(key: str, renames: Sequence[tuple[re.Pattern[str], str]]) -> str | None:
    """``key`` with its prefix replaced by the first matching rule (fields kept); None when none matches."""
    for pattern, template in renames:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict()) + key[match.end() :]
    return None
