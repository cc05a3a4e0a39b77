"""build_network: names, option validation, config round trips, input checks and encoder freezing, for every
network in 2D and 3D."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.networks import (
    NETWORK_NAMES,
    DeepLabConfig,
    FCNConfig,
    SegmentationNetwork,
    SegNetConfig,
    UNetConfig,
    build_network,
)

TINY = {
    "unet": {"features": [4, 8, 16]},
    "resunet": {"features": [4, 8, 16]},
    "fcn": {"features": [4, 4, 8, 8, 8], "blocks_per_level": 1},
    "segnet": {"features": [4, 8]},
    "deeplab": {
        "features": [4, 4, 8, 8],
        "output_stride": 8,
        "aspp_channels": 8,
        "aspp_rates": [1, 2, 3],
        "low_level_channels": 4,
        "decoder": True,
    },
}
CONFIG_CLASSES = {
    "unet": UNetConfig,
    "resunet": UNetConfig,
    "fcn": FCNConfig,
    "segnet": SegNetConfig,
    "deeplab": DeepLabConfig,
}
CASES = [(name, dims) for name in NETWORK_NAMES for dims in (2, 3)]


def tiny(name: str, dims: int, **options) -> dict:
    return {"name": name, "spatial_dims": dims, "in_channels": 2, "out_channels": 3, **TINY[name], **options}


def smallest_input(network: SegmentationNetwork, batch: int = 2) -> torch.Tensor:
    size = [max(d, 4) for d in network.divisor]
    return torch.randn(batch, network.config["in_channels"], *size)


def test_names():
    assert NETWORK_NAMES == ("unet", "resunet", "fcn", "segnet", "deeplab")


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_config_round_trip(name, dims):
    torch.manual_seed(0)
    network = build_network(tiny(name, dims))
    assert isinstance(network, SegmentationNetwork)
    config = network.config
    assert json.loads(json.dumps(config)) == config  # plain JSON data: lists, not tuples
    assert set(config) == {f.name for f in dataclasses.fields(CONFIG_CLASSES[name])}  # defaults included
    rebuilt = build_network(config)
    assert rebuilt.config == config
    shapes = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    assert shapes == {key: tuple(value.shape) for key, value in rebuilt.state_dict().items()}
    rebuilt.load_state_dict(network.state_dict())
    x = smallest_input(network)
    network.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), network(x))


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_divisor_and_input_checks(name, dims):
    network = build_network(tiny(name, dims)).eval()
    divisor = network.divisor
    assert len(divisor) == dims and all(isinstance(d, int) and d >= 1 for d in divisor)
    good = smallest_input(network)
    bad_size = torch.randn(1, 2, *(s + 1 if d > 1 else s for s, d in zip(good.shape[2:], divisor, strict=True)))
    with pytest.raises(InputError, match=rf"multiple of \({divisor[0]}, {divisor[1]}"):
        network(bad_size)
    with pytest.raises(InputError, match="2 input channel"):
        network(good[:, :1])
    with pytest.raises(InputError, match=f"{dims}D"):
        network(good[0])
    with pytest.raises(InputError, match="floating-point"):
        network(good.to(torch.int64))


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_encoder_is_a_strict_subset_and_can_be_frozen(name, dims):
    torch.manual_seed(0)
    network = build_network(tiny(name, dims))
    encoder = {id(p) for p in network.encoder.parameters()}
    everything = {id(p) for p in network.parameters()}
    assert encoder and encoder < everything
    network.encoder.requires_grad_(False)
    output = network(smallest_input(network))
    (output[0] if isinstance(output, list) else output).square().mean().backward()
    assert all(p.grad is None for p in network.encoder.parameters())
    trainable = [p for p in network.parameters() if id(p) not in encoder]
    assert all(p.grad is not None for p in trainable)


def test_unknown_name_lists_the_names():
    with pytest.raises(InputError, match=r"unet.*resunet.*fcn.*segnet.*deeplab"):
        build_network({"name": "vnet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2})
    with pytest.raises(InputError, match="mapping"):
        build_network(["unet"])


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_unknown_option_lists_the_options(name):
    with pytest.raises(InputError, match=r"Unknown field\(s\) in the \w+ configuration: featurs; known: .*features"):
        build_network({**tiny(name, 2), "featurs": [4, 8]})


def test_missing_required_option():
    with pytest.raises(InputError, match="in_channels"):
        build_network({"name": "unet", "spatial_dims": 3, "out_channels": 2})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"spatial_dims": 4}, "spatial_dims.*2, 3"),
        ({"spatial_dims": True}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels.*>= 1"),
        ({"out_channels": 2.5}, "out_channels"),
        ({"features": []}, "features"),
        ({"features": [8]}, "at least 2 levels"),
        ({"features": [4, 0, 8]}, "features"),
        ({"norm": "layer"}, "norm.*instance.*batch.*group"),
        ({"activation": "gelu"}, "activation.*leakyrelu.*relu"),
        ({"dropout": 1.0}, r"dropout.*\[0, 1\)"),
        ({"downsample": "avgpool"}, "downsample.*conv.*maxpool"),
        ({"upsample": "nearest"}, "upsample.*transpose.*interpolate"),
        ({"deep_supervision": "yes"}, "deep_supervision.*true or false"),
        ({"kernel_sizes": 4}, "odd"),
        ({"kernel_sizes": [3, 3]}, "3 entries"),
        ({"kernel_sizes": [[3, 3], 3, 3]}, "needs 3 values"),
        ({"strides": [2, 2, 2, 2]}, "strides.*2 entries"),
        ({"strides": [2, 2, 2]}, "start with 1"),
        ({"blocks_per_level": 0}, "blocks_per_level"),
        ({"norm": "group", "norm_groups": 3}, "norm_groups=3 must divide"),
    ],
)
def test_invalid_unet_options(options, message):
    with pytest.raises(InputError, match=message):
        build_network(
            {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "features": [4, 8, 16]} | options
        )


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("fcn", {"features": [4, 8, 16]}, "needs 5 values"),
        ("segnet", {"activation": "tanh"}, "activation"),
        ("deeplab", {"output_stride": 32}, "output_stride.*8, 16"),
        ("deeplab", {"features": [4, 8, 16]}, "at least 4 stages"),
        ("deeplab", {"aspp_rates": [1, 2]}, "needs 3 values"),
    ],
)
def test_invalid_baseline_options(name, options, message):
    with pytest.raises(InputError, match=message):
        build_network(tiny(name, 3, **options))


def test_defaults_depend_on_dimension():
    config_2d = build_network({"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}).config
    config_3d = build_network({"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2}).config
    assert config_2d["features"] == [32, 64, 128, 256, 512]
    assert config_3d["features"] == [32, 64, 128, 256, 320]
    assert config_3d["kernel_sizes"] == [[3, 3, 3]] * 5
    assert config_3d["strides"] == [[2, 2, 2]] * 4
    assert config_3d["residual"] is False
    resunet = build_network({"name": "resunet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}).config
    assert resunet["residual"] is True
