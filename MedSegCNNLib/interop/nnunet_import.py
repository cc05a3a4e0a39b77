"""``import_nnunet``: an nnU-Net v2 results folder → a MedSegCNN model folder (safetensors + model card) that
``predict``, ``segment()``, the registry and the Slicer panel use like a native model.

The folds chosen become one network that averages their logits (``"folds"`` in the card's network
configuration), rebuilt natively (:mod:`MedSegCNNLib.networks.nnunet_unet`; its configuration from the plans by
:mod:`.nnunet_plans`, its weights renamed by :mod:`.nnunet_weights`); the plans' preprocessing becomes an
:class:`~.plan.NnUNetPlan`. Supported: ``3d_fullres`` and ``2d`` configurations of PlainConvUNet and
ResidualEncoderUNet, softmax and region-based label sets. Cascades (``3d_lowres``, ``3d_cascade_fullres``) are
refused with a message. Nothing is written unless everything checks out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import occupied
from ..checkpoint import save_model
from ..checkpoint.model_card import MAX_LICENCE_TEXT_CHARS, MAX_SPDX_CHARS, Licence
from ..data.nnunet.plan import CONFIGURATIONS, NORMALIZATIONS, ChannelNormalization, NnUNetPlan, Resampling
from ..errors import InputError, OutputExistsError
from ..networks import build_network
from .nnunet_plans import network_config_from_plans
from .nnunet_results import (
    ARCHITECTURE_TRAINERS,
    CHECKPOINTS,
    Checkpoint,
    ResultsFolder,
    check_trainer,
    fold_names,
    open_results_folder,
    read_checkpoint,
)
from .nnunet_weights import nnunet_weights_channels, state_dict_from_nnunet

logger = logging.getLogger(__name__)

#: The most folds imported into one model (nnU-Net trains 5).
MAX_FOLDS = 10
#: nnU-Net's image readers that give the network the voxels in file order (z, y, x), as MedSegCNN reads them.
#: Its 2D/TIFF readers are not reproduced yet.
SAME_VOXEL_ORDER_READERS = ("SimpleITKIO", "NibabelIO")
#: nnU-Net's readers that reorient images to the closest canonical RAS voxel order first.
RAS_READERS = ("SimpleITKIOWithReorient", "NibabelIOWithReorient")


def import_nnunet(
    results_folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    folds: Sequence[str | int] | str | None = None,
    checkpoint: str = "final",
    overwrite: bool = False,
    reorient_to_ras: bool = False,
) -> Path:
    """Import ``results_folder`` (``<Trainer>__<Plans>__<configuration>``) into the model folder ``output``.

    ``folds``: nnU-Net fold names (``0``..``4``; ``"all"`` is the fold trained on all cases, ``fold_all``), default
    every numbered fold trained (nnU-Net's ensemble), else ``all``; ``checkpoint``: ``"final"`` or ``"best"``.
    An existing ``output`` is refused unless ``overwrite``. ``reorient_to_ras``: the network was trained on images
    in the closest canonical RAS voxel order although its plans read them as stored (TotalSegmentator reorients
    its inputs so before nnU-Net sees them); models whose plans name a reorienting reader get it anyway.
    Returns the model folder.
    """
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}; got {checkpoint!r}.")
    target = Path(output).expanduser()
    if occupied(target) and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise OutputExistsError(f"{target} exists; choose another output folder or pass --overwrite.")
    folder = open_results_folder(results_folder)
    _check_supported(folder)
    chosen = _chosen_folds(folder, folds, checkpoint)
    checkpoints = [read_checkpoint(folder, fold, checkpoint) for fold in chosen]
    _check_checkpoints(folder, checkpoints)
    plan = plan_of(folder, checkpoints[0].mirror_axes, reorient_to_ras=reorient_to_ras)
    labels = _labels(folder)
    channels = _channels(folder)
    outputs = len(labels) if plan.regions_class_order is None else len(plan.regions_class_order)
    _check_against_weights(folder, len(channels), outputs, plan.regions_class_order is not None, checkpoints)
    _check_channels_against_plans(folder, channels)
    architecture = folder.configuration["architecture"]
    member = network_config_from_plans(
        str(architecture["network_class_name"]),
        _arch_kwargs(architecture["arch_kwargs"], checkpoints[0].trainer, plan.spatial_dims),
        architecture.get("_kw_requires_import", ()),
        len(channels),
        outputs,
    )
    config = {**member, "folds": len(checkpoints)} if len(checkpoints) > 1 else member
    network = build_network(config)
    state = _state_dict(checkpoints, member)
    network.load_state_dict(state, strict=True)
    card = _card(folder, plan, config, labels, channels, checkpoints, checkpoint)
    written = save_model(target, network.eval(), card, overwrite=overwrite)
    logger.info("Imported %s (folds %s) into %s.", folder.path, ", ".join(chosen), written)
    return written


def _check_supported(folder: ResultsFolder) -> None:
    """Refuse configurations and label sets that MedSegCNN does not reproduce yet."""
    name = folder.configuration_name
    if name not in CONFIGURATIONS:
        extra = " (a cascade stage)" if folder.configuration.get("previous_stage") or "lowres" in name else ""
        raise InputError(
            f"The nnU-Net configuration {name!r}{extra} is not supported yet; import a "
            f"{' or '.join(CONFIGURATIONS)} configuration."
        )
    if _reader(folder) not in (*SAME_VOXEL_ORDER_READERS, *RAS_READERS):
        raise InputError(
            f"{folder.path} reads its images with {_reader(folder)}, which MedSegCNN does not reproduce yet "
            f"(supported: {', '.join((*SAME_VOXEL_ORDER_READERS, *RAS_READERS))})."
        )


def _reader(folder: ResultsFolder) -> str | None:
    """The name of nnU-Net's image reader for the folder (dataset.json may override the plans')."""
    return folder.dataset.get("overwrite_image_reader_writer") or folder.plans.get("image_reader_writer")


def model_name(results_folder: str | os.PathLike[str]) -> str:
    """A registry name for the model of ``results_folder``: ``<DatasetXXX_Name>-<configuration>``."""
    folder = open_results_folder(results_folder)
    return f"{folder.dataset_name}-{folder.configuration_name}"


def plan_of(folder: ResultsFolder, mirror_axes: Sequence[int], *, reorient_to_ras: bool = False) -> NnUNetPlan:
    """The :class:`NnUNetPlan` of ``folder``'s configuration (``mirror_axes`` from its checkpoints; RAS input
    orientation for reorienting readers or when asked)."""
    configuration, plans = folder.configuration, folder.plans
    name = folder.configuration_name
    schemes = _required(configuration, "normalization_schemes", folder)
    masks = _required(configuration, "use_mask_for_norm", folder)
    statistics = plans.get("foreground_intensity_properties_per_channel") or {}
    normalization = []
    for index, scheme in enumerate(schemes):
        if scheme not in NORMALIZATIONS:
            raise InputError(f"{folder.path}: normalisation {scheme!r} is not supported ({', '.join(NORMALIZATIONS)}).")
        kind = NORMALIZATIONS[scheme]
        numbers: dict[str, Any] = {}
        if kind == "ct":
            stats = statistics.get(str(index))
            if not isinstance(stats, Mapping):
                raise InputError(
                    f"{folder.path}: CT normalisation of channel {index} without its intensity statistics."
                )
            numbers = {key: stats.get(key) for key in ("mean", "std", "percentile_00_5", "percentile_99_5")}
        use_mask = bool(masks[index]) if index < len(masks) else False
        normalization.append(_made(ChannelNormalization, folder, scheme=kind, use_mask=use_mask, **numbers))
    return _made(
        NnUNetPlan,
        folder,
        configuration=name,
        transpose_forward=tuple(plans.get("transpose_forward", (0, 1, 2))),
        spacing=tuple(_required(configuration, "spacing", folder)),
        normalization=tuple(normalization),
        resampling_data=_resampling(configuration, "resampling_fn_data", folder),
        resampling_probabilities=_resampling(configuration, "resampling_fn_probabilities", folder),
        mirror_axes=tuple(mirror_axes),
        regions_class_order=_regions_class_order(folder),
        input_orientation="RAS" if reorient_to_ras or _reader(folder) in RAS_READERS else None,
    )


def _made(kind: type, folder: ResultsFolder, **fields: Any) -> Any:
    try:
        return kind(**fields)
    except InputError as error:
        raise InputError(f"{folder.path / 'plans.json'}: {error}; this model cannot be imported.") from None


def _resampling(configuration: Mapping[str, Any], key: str, folder: ResultsFolder) -> Resampling:
    kwargs = configuration.get(f"{key}_kwargs") or {}
    return _made(
        Resampling,
        folder,
        function=str(_required(configuration, key, folder)),
        order=kwargs.get("order", 3 if key == "resampling_fn_data" else 1),
        order_z=kwargs.get("order_z", 0),
        force_separate_z=kwargs.get("force_separate_z"),
    )


def _required(mapping: Mapping[str, Any], key: str, folder: ResultsFolder) -> Any:
    if key not in mapping:
        raise InputError(f"{folder.path / 'plans.json'} lacks {key} in configuration {folder.configuration_name!r}.")
    return mapping[key]


def _chosen_folds(folder: ResultsFolder, folds: Sequence[str | int] | str | None, checkpoint: str) -> list[str]:
    available = fold_names(folder, checkpoint)
    if not available:
        raise InputError(f"{folder.path} has no fold_K/{CHECKPOINTS[checkpoint]}; no trained fold to import.")
    if folds is None:  # every numbered fold (nnU-Net's ensemble), else the one trained on all cases
        chosen = [fold for fold in available if fold != "all"] or ["all"]
    else:
        chosen = [str(f) for f in ([folds] if isinstance(folds, str | int) else folds)]
    missing = [fold for fold in chosen if fold not in available]
    if missing:
        raise InputError(
            f"{folder.path} has no {CHECKPOINTS[checkpoint]} for fold(s) {', '.join(missing)} (trained: "
            f"{', '.join(available)})."
        )
    if not 1 <= len(chosen) <= MAX_FOLDS or len(set(chosen)) < len(chosen):
        raise InputError(f"Choose 1 to {MAX_FOLDS} distinct folds; got {', '.join(chosen)}.")
    return chosen


def _arch_kwargs(arch_kwargs: Mapping[str, Any], trainer: str, dims: int) -> dict[str, Any]:
    """The plans' arch_kwargs as ``trainer`` builds its network (:data:`ARCHITECTURE_TRAINERS`)."""
    changes = ARCHITECTURE_TRAINERS.get(trainer, {})
    replaced = {key: value.format(dims=dims) if isinstance(value, str) else value for key, value in changes.items()}
    return {**arch_kwargs, **replaced}


def _check_checkpoints(folder: ResultsFolder, checkpoints: list[Checkpoint]) -> None:
    for entry in checkpoints:
        check_trainer(entry.trainer, entry.path)
        if entry.configuration != folder.configuration_name:
            raise InputError(
                f"{entry.path} was trained for configuration {entry.configuration!r}, but the folder is "
                f"{folder.configuration_name!r}: the plans and the checkpoint do not belong together."
            )
    if len({entry.trainer for entry in checkpoints}) > 1:
        raise InputError(f"The folds of {folder.path} were trained with different trainers; import them separately.")
    if len({entry.mirror_axes for entry in checkpoints}) > 1:
        raise InputError(f"The folds of {folder.path} allow different mirror axes; import them separately.")


def _regions_class_order(folder: ResultsFolder) -> tuple[int, ...] | None:
    """``regions_class_order`` of a region-based model (one painted label per region), or None."""
    order = folder.dataset.get("regions_class_order")
    if order is None:
        return None
    regions = [name for name in folder.dataset["labels"] if name not in ("background", "ignore")]
    if not isinstance(order, list) or len(order) != len(regions):
        raise InputError(
            f"{folder.path / 'dataset.json'}: regions_class_order must give one label per region ({len(regions)})."
        )
    return tuple(order)


def _labels(folder: ResultsFolder) -> dict[int, str]:
    """Label value → name from dataset.json (``{"background": 0, "liver": 1}``; ``ignore`` dropped), which must
    be consecutive from 0 as nnU-Net requires. A region-based model's labels are the values it paints
    (``regions_class_order``), each named after its region (``{"background": 0, "whole tumor": [1, 2, 3], ...}``:
    value 1, painted first where the whole tumour is, is "whole tumor")."""
    raw = {name: value for name, value in folder.dataset["labels"].items() if name != "ignore"}
    order = _regions_class_order(folder)
    if order is not None:
        regions = [name for name in raw if name != "background"]
        raw = {"background": 0} | {name: value for name, value in zip(regions, order, strict=True)}
    elif any(isinstance(value, list | tuple) for value in raw.values()):
        raise InputError(f"{folder.path / 'dataset.json'}: labels are regions but regions_class_order is missing.")
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in raw.values()):
        raise InputError(f"{folder.path / 'dataset.json'}: labels must map names to integers.")
    by_value = {int(value): str(name) for name, value in raw.items()}
    if sorted(by_value) != list(range(len(by_value))) or len(by_value) < 2:
        raise InputError(f"{folder.path / 'dataset.json'}: labels must be consecutive from 0 (background).")
    return by_value


def _channels(folder: ResultsFolder) -> list[str]:
    """The input channel names of dataset.json (``channel_names``, or ``modality``), in channel order."""
    names = folder.dataset.get("channel_names", folder.dataset.get("modality"))
    order = sorted(names, key=lambda key: int(key) if str(key).isdigit() else 0)
    return [str(names[key]) for key in order]


def _check_channels_against_plans(folder: ResultsFolder, channels: list[str]) -> None:
    if len(channels) != len(folder.configuration.get("normalization_schemes", channels)):
        raise InputError(
            f"dataset.json names {len(channels)} channel(s) but the plans normalise "
            f"{len(folder.configuration['normalization_schemes'])}: the plans and dataset.json do not match."
        )


def _check_against_weights(
    folder: ResultsFolder, channels: int, outputs: int, regions: bool, checkpoints: list[Checkpoint]
) -> None:
    """dataset.json's ``channels`` and ``outputs`` (labels, or ``regions``) must be the network's input channels and
    outputs as its weights show them: a dataset.json of another dataset is named as such, not as a plans mismatch."""
    path = folder.path / "dataset.json"
    fix = "restore the dataset.json the model was trained with (from its nnU-Net results folder)"
    for entry in checkpoints:
        inputs, heads = nnunet_weights_channels(entry.network_weights)
        if heads is not None and heads != outputs:
            what = "regions" if regions else "labels (background included)"
            raise InputError(
                f"{path} lists {outputs} {what} but the network in {entry.path} has {heads} outputs: they do not "
                f"belong together; {fix}."
            )
        if inputs is not None and inputs != channels:
            raise InputError(
                f"{path} names {channels} input channel(s) (channel_names) but the network in {entry.path} takes "
                f"{inputs}: they do not belong together; {fix}."
            )


def _state_dict(checkpoints: list[Checkpoint], member: dict[str, Any]) -> dict[str, torch.Tensor]:
    if len(checkpoints) == 1:
        return state_dict_from_nnunet(checkpoints[0].network_weights, member)
    state = {}
    for index, entry in enumerate(checkpoints):
        for name, tensor in state_dict_from_nnunet(entry.network_weights, member).items():
            state[f"members.{index}.{name}"] = tensor
    return state


def _card(
    folder: ResultsFolder,
    plan: NnUNetPlan,
    config: dict[str, Any],
    labels: dict[int, str],
    channels: list[str],
    checkpoints: list[Checkpoint],
    checkpoint: str,
) -> dict[str, Any]:
    trainer = checkpoints[0].trainer
    folds = [entry.fold for entry in checkpoints]
    postprocessing = "not imported (postprocessing.pkl is a pickle; nnU-Net's postprocessing is not applied)"
    return {
        "name": folder.dataset_name,
        "title": f"{folder.dataset_name} (nnU-Net {plan.configuration}, {len(folds)} fold(s))",
        "description": (
            f"Imported from the nnU-Net v2 results folder {folder.path.name} ({trainer}, "
            f"{folder.plans.get('plans_name', 'plans')}, folds {', '.join(folds)}, checkpoint_{checkpoint})."
        ),
        "network": config,
        "spatial_dims": plan.spatial_dims,
        "patch_size": list(folder.configuration["patch_size"]),
        "channels": channels,
        "labels": {value: {"name": name, "color": None} for value, name in labels.items()},
        "preprocessing": plan.to_dict(),
        "licence": _licence(folder),
        "training": {
            "dataset": folder.dataset_name,
            "source": "nnU-Net v2",
            "trainer": trainer,
            "plans": folder.plans.get("plans_name"),
            "configuration": plan.configuration,
            "folds": folds,
            "checkpoint": checkpoint,
            "postprocessing": postprocessing,
        },
    }


def _licence(folder: ResultsFolder) -> dict[str, Any] | None:
    """The card's licence from what ``dataset.json`` says (its ``licence`` or ``license``, with its ``reference``),
    or ``None`` with a warning that the licence is unknown."""
    given, reference = (_one_line(folder.dataset.get(key)) for key in ("licence", "reference"))
    given = given or _one_line(folder.dataset.get("license"))
    if not given:
        logger.warning(
            "The dataset.json of %s names no licence, so the imported model's licence is unknown; check the terms "
            "of the source of these weights before using them (some published weights, e.g. TotalSegmentator's "
            "licensed tasks, are for non-commercial use only).",
            folder.path,
        )
        return None
    text = f"As the nnU-Net dataset.json says: {given}" + (f"; reference: {reference}" if reference else "")
    spdx = (Licence.parse(given[:MAX_SPDX_CHARS]) or Licence()).spdx
    return Licence(spdx=spdx, text=text[:MAX_LICENCE_TEXT_CHARS]).to_dict()


def _one_line(value: Any) -> str:
    """A ``dataset.json`` text as one printable line (``""`` for anything but a string)."""
    if not isinstance(value, str):
        return ""
    return " ".join("".join(char for char in value if char.isprintable() or char.isspace()).split())
