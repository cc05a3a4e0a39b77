"""nnU-Net's PlainConvUNet and ResidualEncoderUNet rebuilt natively ("nnunet-plain-unet", "nnunet-residual-unet"):
outputs equal to dynamic_network_architectures' networks with the converted weights (2D and 3D, isotropic and
anisotropic, instance, batch and no norm, dropout, ReLU, a stem of its own), plans' arch_kwargs as nnunetv2's planners
write them, model-card validation, meta-device loading, OpenVINO, older plans, and the refusals."""

from __future__ import annotations

import json
import pydoc
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from MedSegCNNLib.checkpoint import load_model, save_model
from MedSegCNNLib.checkpoint.model_card import ModelCard
from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessingPlan
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.interop.nnunet_plans import NNUNET_NETWORK_CLASSES, network_config_from_plans
from MedSegCNNLib.interop.nnunet_weights import state_dict_from_nnunet
from MedSegCNNLib.networks import build_network
from MedSegCNNLib.runtime import openvino_version

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

FP32_TOLERANCE = 1e-5
"""|MedSegCNN − nnU-Net| of the logits (both fp32), relative to their largest magnitude: the same operations, but
instance norm through group norm's kernel and other summation orders. Measured: at most 2.7e-6 (batch norm:
identical)."""
OPENVINO_TOLERANCE = 1e-4
"""|OpenVINO fp32 − torch fp32|, relative, as in the OpenVINO backend's tests."""


def architecture(
    class_name: str,
    dims: int,
    features: list[int],
    kernels: list[list[int]],
    strides: list[list[int]],
    encoder: list[int],
    decoder: list[int],
    norm: str = "InstanceNorm",
    **changes: Any,
) -> dict[str, Any]:
    """A plans configuration's ``architecture`` entry as nnunetv2's planners write it (read back from JSON);
    ``changes`` replace arch_kwargs (the BN trainer's batch norm, dropout, ...)."""
    module = "instancenorm" if norm == "InstanceNorm" else "batchnorm"
    arch_kwargs = {
        "n_stages": len(features),
        "features_per_stage": features,
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": kernels,
        "strides": strides,
        "n_conv_per_stage" if class_name == PLAIN else "n_blocks_per_stage": encoder,
        "n_conv_per_stage_decoder": decoder,
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.{module}.{norm}{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    entry = {
        "network_class_name": class_name,
        "arch_kwargs": arch_kwargs | changes,
        "_kw_requires_import": ("conv_op", "norm_op", "dropout_op", "nonlin"),
    }
    return json.loads(json.dumps(entry))


ISO_3D = {"kernels": [[3, 3, 3]] * 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]}
ANISO_3D = {  # nnU-Net's plans for thick slices: in-plane kernels and strides first
    "kernels": [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]],
}
PLANE = {"kernels": [[3, 3]] * 5, "strides": [[1, 1], [2, 2], [2, 2], [2, 2], [1, 2]]}
FEATURES_3D, FEATURES_2D = [4, 8, 16, 16], [4, 8, 16, 32, 32]  # capped like nnU-Net's 320 / 512
DROPOUT_RELU = {  # dropout shifts nnU-Net's module indices; instance norm without affine (torch's default)
    "dropout_op": "torch.nn.modules.dropout.Dropout3d",
    "dropout_op_kwargs": {"p": 0.2, "inplace": True},
    "nonlin": "torch.nn.ReLU",
    "nonlin_kwargs": {"inplace": True},
    "norm_op_kwargs": None,
    "conv_bias": False,
}

CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    # name: (architecture entry, input size)
    "plain-2d-instance": (architecture(PLAIN, 2, FEATURES_2D, **PLANE, encoder=[2] * 5, decoder=[2] * 4), (24, 48)),
    "plain-2d-no-norm": (
        architecture(PLAIN, 2, FEATURES_2D, **PLANE, encoder=[2] * 5, decoder=[2] * 4, norm_op=None),
        (16, 32),
    ),
    "plain-2d-batch": (
        architecture(PLAIN, 2, FEATURES_2D, **PLANE, encoder=[2] * 5, decoder=[2] * 4, norm="BatchNorm"),
        (16, 32),
    ),
    "plain-3d-instance": (architecture(PLAIN, 3, FEATURES_3D, **ISO_3D, encoder=[2] * 4, decoder=[2] * 3), (16,) * 3),
    "plain-3d-anisotropic": (
        architecture(PLAIN, 3, FEATURES_3D, **ANISO_3D, encoder=[2] * 4, decoder=[2] * 3),
        (6, 16, 24),
    ),
    "plain-3d-dropout-relu": (
        architecture(PLAIN, 3, FEATURES_3D, **ANISO_3D, encoder=[2, 1, 2, 1], decoder=[1, 2, 1], **DROPOUT_RELU),
        (4, 8, 16),
    ),
    "residual-2d-instance": (
        architecture(RESIDUAL, 2, FEATURES_2D, **PLANE, encoder=[1, 2, 3, 2, 2], decoder=[1] * 4),
        (24, 48),
    ),
    "residual-2d-batch": (
        architecture(RESIDUAL, 2, FEATURES_2D, **PLANE, encoder=[1, 2, 2, 2, 2], decoder=[1] * 4, norm="BatchNorm"),
        (16, 32),
    ),
    "residual-3d-instance": (
        architecture(RESIDUAL, 3, FEATURES_3D, **ISO_3D, encoder=[1, 2, 3, 2], decoder=[1] * 3),
        (16,) * 3,
    ),
    "residual-3d-anisotropic": (
        architecture(RESIDUAL, 3, FEATURES_3D, **ANISO_3D, encoder=[1, 2, 2, 2], decoder=[1, 2, 1], stem_channels=6),
        (6, 16, 24),
    ),
    "residual-3d-batch": (
        architecture(RESIDUAL, 3, FEATURES_3D, **ISO_3D, encoder=[1, 2, 2, 2], decoder=[1] * 3, norm="BatchNorm"),
        (8, 16, 16),
    ),
}
IN_CHANNELS, OUT_CHANNELS = 2, 3


def config_of(case: str) -> dict[str, Any]:
    entry = CASES[case][0]
    return network_config_from_plans(
        entry["network_class_name"], entry["arch_kwargs"], entry["_kw_requires_import"], IN_CHANNELS, OUT_CHANNELS
    )


def nnunet_network(case: str) -> torch.nn.Module:
    """dynamic_network_architectures' network of ``case``, built as nnunetv2's get_network_from_plans builds it
    for training (deep supervision on), with random weights and norm statistics (biases and norm weights
    too, which nnU-Net initialises to constants), in eval mode."""
    pytest.importorskip("dynamic_network_architectures", reason="dynamic_network_architectures is not installed")
    entry = CASES[case][0]
    kwargs = dict(entry["arch_kwargs"])
    for key in entry["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    torch.manual_seed(0)
    network_class = pydoc.locate(entry["network_class_name"])
    network = network_class(input_channels=IN_CHANNELS, num_classes=OUT_CHANNELS, deep_supervision=True, **kwargs)
    network.apply(network.initialize)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.2)
            elif parameter.dim() == 1:  # norm weights
                parameter.uniform_(0.5, 1.5)
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(250)
    return network.eval()


def nnunet_logits(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        outputs = network(x)
    assert isinstance(outputs, list)  # deep supervision: full resolution first
    return outputs[0]


def relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape and got.dtype == expected.dtype == torch.float32
    return ((got - expected).abs().max() / expected.abs().max()).item()


def loaded_like_the_model_loader(config: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    with torch.device("meta"):
        network = build_network(config)
    assert all(p.is_meta for p in network.parameters())
    network = network.to_empty(device="cpu")
    network.load_state_dict(state, strict=True)
    return network.eval()


def card_data(config: dict[str, Any], patch_size: tuple[int, ...]) -> dict[str, Any]:
    dims = config["spatial_dims"]
    plan = PreprocessingPlan(
        target_spacing=(1.0,) * dims,
        crop_to_nonzero=True,
        normalization=(NormalizationSpec(scheme="zscore"),) * IN_CHANNELS,
        image_interpolation="linear",
        spatial_dims=dims,
    )
    return {
        "network": config,
        "spatial_dims": dims,
        "patch_size": list(patch_size),
        "channels": ["T1", "T2"],
        "labels": {str(v): {"name": n, "color": None} for v, n in enumerate(("background", "liver", "tumour"))},
        "preprocessing": plan.to_dict(),
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_nnunet(case: str) -> None:
    reference = nnunet_network(case)
    config = config_of(case)
    state = state_dict_from_nnunet(reference.state_dict(), config)
    network = loaded_like_the_model_loader(config, state)
    x = torch.randn(2, IN_CHANNELS, *CASES[case][1])
    with torch.no_grad():
        got = network(x)
    assert relative_difference(got, nnunet_logits(reference, x)) <= FP32_TOLERANCE
    head = reference.decoder.seg_layers[-1]
    assert torch.equal(network.head.weight, head.weight) and torch.equal(network.head.bias, head.bias)
    assert not any("seg_layers" in name for name in state)  # the deep-supervision heads are dropped


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_is_a_valid_model_card_network_and_rebuilds(case: str) -> None:
    config = config_of(case)
    assert json.loads(json.dumps(config)) == config
    card = ModelCard.new(card_data(config, CASES[case][1]))
    assert card.network_config() == config
    assert build_network(config).config == config
    assert config["name"] == ("nnunet-plain-unet" if case.startswith("plain") else "nnunet-residual-unet")


def test_config_keys_and_values() -> None:
    config = config_of("residual-3d-anisotropic")
    assert config == {
        "name": "nnunet-residual-unet",
        "spatial_dims": 3,
        "in_channels": 2,
        "out_channels": 3,
        "features": [4, 8, 16, 16],
        "kernel_sizes": [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]],
        "encoder_blocks": [1, 2, 2, 2],
        "decoder_convs": [1, 2, 1],
        "conv_bias": True,
        "norm": "instance",
        "norm_eps": 1e-05,
        "norm_affine": True,
        "negative_slope": 0.01,
        "stem_channels": 6,
    }
    relu = config_of("plain-3d-dropout-relu")
    assert (relu["negative_slope"], relu["norm_affine"], relu["conv_bias"]) == (0.0, False, False)
    assert build_network(config).divisor == (2, 8, 8)


@pytest.mark.parametrize("case", ["plain-3d-anisotropic", "residual-2d-batch"])
def test_saved_and_loaded_as_a_model_folder(case: str, tmp_path: Path) -> None:
    reference = nnunet_network(case)
    config = config_of(case)
    network = loaded_like_the_model_loader(config, state_dict_from_nnunet(reference.state_dict(), config))
    save_model(tmp_path / "model", network, card_data(config, CASES[case][1]))
    loaded, card = load_model(tmp_path / "model")
    assert card.network_config() == config
    x = torch.randn(1, IN_CHANNELS, *CASES[case][1])
    with torch.no_grad():
        got = loaded(x)
    assert relative_difference(got, nnunet_logits(reference, x)) <= FP32_TOLERANCE


OPENVINO_CHILD = """
import sys
from pathlib import Path
import numpy as np
import torch
from MedSegCNNLib.checkpoint import load_model
from MedSegCNNLib.inference.openvino_backend import compile_network
folder = Path(sys.argv[1])
network, _ = load_model(folder / "model")
x = torch.from_numpy(np.load(folder / "input.npy"))
compiled = compile_network(network, (1, *x.shape[1:]), "fp32", folder / "cache")
np.save(folder / "output.npy", compiled(x).numpy())
"""
"""Loads a model folder and runs an input through the OpenVINO backend, in a child process: OpenVINO's CPU plugin
can crash the process (see test_openvino_equals_torch)."""


@pytest.mark.skipif(openvino_version() is None, reason='OpenVINO is not installed (pip install ".[openvino]")')
@pytest.mark.parametrize(
    "case", ["plain-3d-anisotropic", "residual-2d-batch", "residual-3d-anisotropic", "residual-3d-instance"]
)
def test_openvino_equals_torch(case: str, tmp_path: Path) -> None:
    """A model folder of the converted network through the OpenVINO backend. With its generated element-wise
    kernels on, OpenVINO 2026.4's CPU plugin crashes (segmentation fault) compiling a group norm whose output is
    added to another group norm's activated output, as the residual network with instance norm has them in its
    identity-shortcut blocks; the backend turns them off (SNIPPETS_MODE), and a crash fails this test."""
    reference = nnunet_network(case)
    config = config_of(case)
    network = loaded_like_the_model_loader(config, state_dict_from_nnunet(reference.state_dict(), config))
    save_model(tmp_path / "model", network, card_data(config, CASES[case][1]))
    x = torch.randn(2, IN_CHANNELS, *CASES[case][1])
    np.save(tmp_path / "input.npy", x.numpy())
    child = subprocess.run(
        [sys.executable, "-c", OPENVINO_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert child.returncode == 0, f"exit status {child.returncode}: {child.stderr[-2000:]}"
    with torch.inference_mode():
        expected = network(x)
    got = torch.from_numpy(np.load(tmp_path / "output.npy"))
    assert relative_difference(got, expected) <= OPENVINO_TOLERANCE


@pytest.mark.parametrize(
    ("class_name", "dims", "stages", "features", "encoder"),
    [  # nnunetv2's own plans at full size: 3d_fullres of a CT dataset (default, ResEnc M) and 2d
        (PLAIN, 3, 6, [32, 64, 128, 256, 320, 320], [2] * 6),
        (RESIDUAL, 3, 6, [32, 64, 128, 256, 320, 320], [1, 3, 4, 6, 6, 6]),
        (PLAIN, 2, 8, [32, 64, 128, 256, 512, 512, 512, 512], [2] * 8),
    ],
)
def test_full_size_plans_map_every_name_and_shape(class_name, dims, stages, features, encoder) -> None:
    """Names and shapes only: both networks on the "meta" device (nothing allocated)."""
    pytest.importorskip("dynamic_network_architectures", reason="dynamic_network_architectures is not installed")
    kernels = [[1, 3, 3], *[[3] * dims] * (stages - 1)] if dims == 3 else [[3, 3]] * stages
    strides = [[1] * dims, [1, 2, 2], *[[2] * dims] * (stages - 2)] if dims == 3 else [[1, 1]] + [[2, 2]] * (stages - 1)
    decoder = [2 if class_name == PLAIN else 1] * (stages - 1)
    entry = architecture(class_name, dims, features, kernels, strides, encoder, decoder)
    kwargs = {k: pydoc.locate(v) if k in REQUIRES_IMPORT and v else v for k, v in entry["arch_kwargs"].items()}
    config = network_config_from_plans(class_name, entry["arch_kwargs"], entry["_kw_requires_import"], 1, 105)
    with torch.device("meta"):
        reference = pydoc.locate(class_name)(input_channels=1, num_classes=105, deep_supervision=True, **kwargs)
        network = build_network(config)
    state = state_dict_from_nnunet(reference.state_dict(), config)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in network.state_dict().items()}
    heads = sum(p.numel() for p in reference.decoder.seg_layers[:-1].parameters())
    own = sum(p.numel() for p in reference.parameters()) - heads
    assert sum(p.numel() for p in network.parameters()) == own


def test_network_class_names() -> None:
    assert NNUNET_NETWORK_CLASSES == {
        PLAIN: "nnunet-plain-unet",
        RESIDUAL: "nnunet-residual-unet",
        "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet": "nnunet-residual-unet",
        "PlainConvUNet": "nnunet-plain-unet",
        "ResidualEncoderUNet": "nnunet-residual-unet",
    }
    pytest.importorskip("dynamic_network_architectures", reason="dynamic_network_architectures is not installed")
    for dotted in (PLAIN, RESIDUAL):
        assert pydoc.locate(dotted).__name__ == dotted.rsplit(".", 1)[1]
    # nnunetv2's conversion of older plans names a module that does not exist (it then searches by class name)
    assert pydoc.locate("dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet") is None


@pytest.mark.parametrize("unet_class", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_older_plans_as_nnunetv2_converts_them(unet_class: str) -> None:
    plans_handler = pytest.importorskip(
        "nnunetv2.utilities.plans_handling.plans_handler", reason="nnunetv2 is not installed"
    )
    older = {  # a 3d_fullres configuration of nnunetv2 2.1's plans (TotalSegmentator's models are of that time)
        "patch_size": [128, 128, 128],
        "UNet_class_name": unet_class,
        "UNet_base_num_features": 32,
        "n_conv_per_stage_encoder": [2, 2, 2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2, 2, 2],
        "num_pool_per_axis": [5, 5, 5],
        "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "conv_kernel_sizes": [[3, 3, 3]] * 6,
        "unet_max_num_features": 320,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Detected old nnU-Net plans format"
        entry = plans_handler.ConfigurationManager(older).configuration["architecture"]
    config = network_config_from_plans(
        entry["network_class_name"], entry["arch_kwargs"], entry["_kw_requires_import"], 1, 118
    )
    assert config["name"] == NNUNET_NETWORK_CLASSES[unet_class]
    assert config["features"] == [32, 64, 128, 256, 320, 320]
    assert config["encoder_blocks"] == [2] * 6 and config["decoder_convs"] == [2] * 5


# Refusals: one line each, naming what is unsupported.


def refused(match: str, class_name: str = PLAIN, requires_import: Any = REQUIRES_IMPORT, **changes: Any) -> str:
    arch_kwargs = {**CASES["plain-3d-instance"][0]["arch_kwargs"], **changes}
    if class_name == RESIDUAL:
        arch_kwargs["n_blocks_per_stage"] = arch_kwargs.pop("n_conv_per_stage")
    with pytest.raises(InputError, match=match) as caught:
        network_config_from_plans(class_name, arch_kwargs, requires_import, IN_CHANNELS, OUT_CHANNELS)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "class_name",
    ["dynamic_network_architectures.architectures.unet.ResidualUNet", "Primus", "os.system", None],
)
def test_unknown_network_class(class_name: Any) -> None:
    refused(rf"Unsupported nnU-Net network class {class_name!r}.*PlainConvUNet", class_name=class_name)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("conv_op", "torch.nn.modules.conv.Conv1d"),
        ("conv_op", "medsegcnn_never_imported.Conv3d"),
        ("norm_op", "torch.nn.GroupNorm"),
        ("nonlin", "torch.nn.PReLU"),  # has parameters
        ("nonlin", None),
        ("dropout_op", "torch.nn.AlphaDropout"),
        ("conv_op", 3),
    ],
)
def test_unknown_operation(key: str, value: Any) -> None:
    message = refused(rf"unsupported {key} {value!r}; supported: \[", **{key: value})
    assert "torch.nn.modules" in message
    assert "medsegcnn_never_imported" not in sys.modules


@pytest.mark.parametrize(
    ("changes", "requires_import", "match"),
    [
        ({"pool": "max"}, REQUIRES_IMPORT, r"unsupported arch_kwargs \['pool'\]"),
        ({"input_channels": 1}, REQUIRES_IMPORT, r"unsupported arch_kwargs \['input_channels'\]"),
        ({}, [*REQUIRES_IMPORT, "kernel_sizes"], r"_kw_requires_import names \['kernel_sizes'\].*never imports"),
        ({}, ["conv_op", "dropout_op", "nonlin"], r"\['norm_op'\] name classes but _kw_requires_import"),
        ({}, "conv_op", "_kw_requires_import must be a list"),
        ({"n_stages": 17}, REQUIRES_IMPORT, r"'n_stages' must be an integer in 2..16; got 17"),
        ({"n_stages": 1}, REQUIRES_IMPORT, r"'n_stages' must be an integer in 2..16"),
        ({"n_stages": True}, REQUIRES_IMPORT, r"'n_stages' must be an integer"),
        ({"n_stages": 5}, REQUIRES_IMPORT, r"'features_per_stage' needs 5 entries \(one per stage\); got 4"),
        ({"features_per_stage": [4, 8, 16, 65537]}, REQUIRES_IMPORT, r"'features' must be an integer in 1..65536"),
        ({"features_per_stage": [4, 8, 0, 16]}, REQUIRES_IMPORT, r"'features'"),
        ({"features_per_stage": "32"}, REQUIRES_IMPORT, r"'features_per_stage' must be an integer or a list"),
        ({"kernel_sizes": [[3, 3, 3]] * 3 + [[2, 3, 3]]}, REQUIRES_IMPORT, r"'kernel_sizes' must be odd"),
        ({"kernel_sizes": [[3, 3]] * 4}, REQUIRES_IMPORT, r"'kernel_sizes' needs 3 values"),
        ({"strides": [[2, 2, 2]] * 4}, REQUIRES_IMPORT, r"'strides' must be 1 to 16, and all ones for stage 0"),
        ({"strides": 2}, REQUIRES_IMPORT, r"all ones for stage 0"),
        ({"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [0, 2, 2]]}, REQUIRES_IMPORT, r"'strides'"),
        ({"n_conv_per_stage": [2, 2, -1, 2]}, REQUIRES_IMPORT, r"'encoder_blocks'"),
        ({"n_conv_per_stage_decoder": [2, 2, 2, 2]}, REQUIRES_IMPORT, r"'n_conv_per_stage_decoder' needs 3"),
        ({"conv_bias": "yes"}, REQUIRES_IMPORT, r"'conv_bias' must be true or false"),
        ({"norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d"}, REQUIRES_IMPORT, r"does not match conv_op"),
        ({"norm_op_kwargs": {"eps": -1.0, "affine": True}}, REQUIRES_IMPORT, r"'norm_eps' must be positive"),
        ({"norm_op_kwargs": {"eps": 1e-5, "num_groups": 8}}, REQUIRES_IMPORT, r"norm_op_kwargs \['num_groups'\]"),
        ({"norm_op_kwargs": {"track_running_stats": True}}, REQUIRES_IMPORT, r"track_running_stats=True"),
        (
            {"nonlin_kwargs": {"negative_slope": float("nan")}},
            REQUIRES_IMPORT,
            r"'negative_slope' must be a finite number",
        ),
        ({"dropout_op": "torch.nn.Dropout3d", "dropout_op_kwargs": {"p": 1.5}}, REQUIRES_IMPORT, r"'p' \(dropout\)"),
        ({"nonlin_first": True}, REQUIRES_IMPORT, r"nonlin_first=True is not supported"),
        ({"deep_supervision": "on"}, REQUIRES_IMPORT, r"'deep_supervision' must be true or false"),
    ],
)
def test_invalid_arch_kwargs(changes: dict[str, Any], requires_import: Any, match: str) -> None:
    refused(match, requires_import=requires_import, **changes)


def test_missing_arch_kwargs_and_channels() -> None:
    arch_kwargs = dict(CASES["plain-3d-instance"][0]["arch_kwargs"])
    del arch_kwargs["strides"], arch_kwargs["n_conv_per_stage"]
    with pytest.raises(InputError, match=r"arch_kwargs lack \['strides', 'n_conv_per_stage'\]"):
        network_config_from_plans(PLAIN, arch_kwargs, REQUIRES_IMPORT, 1, 2)
    with pytest.raises(InputError, match=r"'out_channels' must be an integer in 1..65536"):
        network_config_from_plans(PLAIN, CASES["plain-3d-instance"][0]["arch_kwargs"], REQUIRES_IMPORT, 1, 70000)


def test_residual_refusals() -> None:
    block = "dynamic_network_architectures.building_blocks.residual.BottleneckD"
    refused(rf"unsupported block '{block}'", RESIDUAL, [*REQUIRES_IMPORT, "block"], block=block)
    refused("bottleneck_channels must be null", RESIDUAL, bottleneck_channels=[8] * 4)
    refused(r"'stem_channels' must be an integer in 1..65536", RESIDUAL, stem_channels=0)
    refused(r"unsupported arch_kwargs \['stem_channels'\]", PLAIN, stem_channels=8)
    basic = "dynamic_network_architectures.building_blocks.residual.BasicBlockD"
    arch_kwargs = {**CASES["residual-3d-instance"][0]["arch_kwargs"], "block": basic}
    assert network_config_from_plans(RESIDUAL, arch_kwargs, [*REQUIRES_IMPORT, "block"], 1, 2)["stem_channels"] is None


# The state dict.


def test_wrapper_prefixes_are_removed() -> None:
    reference = nnunet_network("residual-3d-instance")
    config = config_of("residual-3d-instance")
    expected = state_dict_from_nnunet(reference.state_dict(), config)
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        wrapped = {prefix + key: value for key, value in reference.state_dict().items()}
        assert state_dict_from_nnunet(wrapped, config).keys() == expected.keys()


def test_second_names_may_be_absent_but_must_agree() -> None:
    reference = nnunet_network("plain-3d-anisotropic")
    config = config_of("plain-3d-anisotropic")
    weights = reference.state_dict()
    first_only = {k: v for k, v in weights.items() if "all_modules" not in k and not k.startswith("decoder.encoder.")}
    assert state_dict_from_nnunet(first_only, config).keys() == state_dict_from_nnunet(weights, config).keys()
    damaged = {**weights, "decoder.encoder.stages.1.0.convs.0.all_modules.0.weight": torch.zeros(8, 4, 1, 3, 3)}
    with pytest.raises(InputError, match=r"different values under encoder\.stages\.1\.0\.convs\.0\.conv\.weight and"):
        state_dict_from_nnunet(damaged, config)


def test_missing_unexpected_and_misshapen_weights() -> None:
    reference = nnunet_network("residual-3d-anisotropic")
    config = config_of("residual-3d-anisotropic")
    weights = {k: v for k, v in reference.state_dict().items() if "all_modules" not in k}
    missing = {k: v for k, v in weights.items() if not k.endswith("skip.1.norm.bias")}
    with pytest.raises(
        InputError, match=r"missing \(2\): encoder\.stages\.1\.blocks\.0\.skip\.1\.norm\.bias"
    ) as caught:
        state_dict_from_nnunet(missing, config)
    assert "encoder.stages.2.blocks.0.skip.1.norm.bias" in str(caught.value)
    extra = {**weights, "decoder.seg_layers.3.weight": torch.zeros(3, 4, 1, 1, 1), "encoder.stem.se.fc1": torch.ones(1)}
    with pytest.raises(InputError, match=r"unexpected \(2\): decoder\.seg_layers\.3\.weight, encoder\.stem\.se\.fc1"):
        state_dict_from_nnunet(extra, config)
    misshapen = {**weights, "decoder.transpconvs.0.weight": torch.zeros(16, 16, 3, 3, 3)}
    shapes = r"\(16, 16, 3, 3, 3\) \(expected \(16, 16, 2, 2, 2\)\)"
    with pytest.raises(InputError, match=r"wrong shape \(1\): decoder\.transpconvs\.0\.weight " + shapes):
        state_dict_from_nnunet(misshapen, config)
    other = config_of("residual-3d-instance")  # the same weights, another architecture
    with pytest.raises(InputError, match="do not fit the nnunet-residual-unet"):
        state_dict_from_nnunet(weights, other)
    plain = config_of("plain-3d-anisotropic")
    with pytest.raises(InputError, match=r"missing.*encoder\.stages\.0\.0\.convs\.0\.conv\.weight.*unexpected"):
        state_dict_from_nnunet(weights, plain)


def test_own_names_are_not_accepted_as_nnunet_names() -> None:
    reference = nnunet_network("plain-3d-instance")
    config = config_of("plain-3d-instance")
    own = state_dict_from_nnunet(reference.state_dict(), config)
    with pytest.raises(InputError, match=r"missing.*unexpected \(\d+\): encoder\.stages\.0\.0\.conv\.weight"):
        state_dict_from_nnunet(own, config)


@pytest.mark.parametrize(
    ("weights", "config", "match"),
    [
        ({}, None, "non-empty mapping"),
        ({"encoder.stages.0.0.convs.0.conv.weight": [1.0]}, None, "must map names to tensors"),
        ({1: torch.ones(1)}, None, "must map names to tensors"),
        ({"head.weight": torch.ones(1)}, {"name": "unet"}, r"converts \['nnunet-plain-unet'"),
    ],
)
def test_malformed_inputs(weights: Any, config: Any, match: str) -> None:
    with pytest.raises(InputError, match=match):
        state_dict_from_nnunet(weights, config or config_of("plain-3d-instance"))
