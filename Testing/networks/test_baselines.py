"""FCN-8s, SegNet and DeepLabV3(+): shapes in 2D and 3D, divisors, gradients to the first layer, and the parts
that make each of them what it is (bilinear-initialised upsampling, index unpooling, dilation and ASPP)."""

from __future__ import annotations

import pytest
import torch

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.networks import DeepLab, SegNet, build_network
from MedSegCNNLib.networks.deeplab import ASPP


def build(name: str, dims: int, **options):
    torch.manual_seed(0)
    config = {"name": name, "spatial_dims": dims, "in_channels": 2, "out_channels": 3}
    return build_network(config | options)


FCN_TINY = {"features": [4, 4, 8, 8, 8], "blocks_per_level": 1}
SEGNET_TINY = {"features": [4, 8, 8]}
DEEPLAB_TINY = {"features": [4, 4, 8, 8, 8], "aspp_channels": 8, "low_level_channels": 4, "aspp_rates": [1, 2, 3]}


@pytest.mark.parametrize(
    ("name", "options", "sizes", "divisor"),
    [
        ("fcn", FCN_TINY, {2: (32, 64), 3: (32, 32, 64)}, 32),
        ("segnet", SEGNET_TINY, {2: (8, 24), 3: (8, 16, 24)}, 8),
        ("deeplab", DEEPLAB_TINY, {2: (16, 48), 3: (16, 16, 32)}, 16),
        ("deeplab", DEEPLAB_TINY | {"output_stride": 8, "decoder": True}, {2: (8, 24), 3: (8, 16, 24)}, 8),
    ],
)
@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_divisors_and_gradients(name, options, sizes, divisor, dims):
    network = build(name, dims, **options)
    assert network.divisor == (divisor,) * dims
    size = sizes[dims]
    output = network(torch.randn(2, 2, *size))
    assert output.shape == (2, 3, *size)
    output.logsumexp(1).mean().backward()
    first = next(m for m in network.encoder.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    with pytest.raises(InputError, match=rf"multiple of \({divisor}, {divisor}"):
        network(torch.randn(1, 2, *(s + divisor // 2 for s in size)))


def test_fcn_upsampling_starts_bilinear():
    """The learned 8x upsampling is initialised to interpolation: a constant score map stays constant inside."""
    network = build("fcn", 2, **FCN_TINY)
    scores = torch.full((1, 3, 4, 4), 2.0)
    with torch.no_grad():
        upsampled = network.up8(scores)
    assert upsampled.shape == (1, 3, 32, 32)
    torch.testing.assert_close(upsampled[..., 8:-8, 8:-8], torch.full((1, 3, 16, 16), 2.0))
    weight = network.up8.weight
    assert weight[0, 1].abs().sum() == 0  # no mixing between classes at the start


def test_segnet_unpools_to_the_positions_of_the_maxima():
    network = build("segnet", 2, features=[2], blocks_per_level=1, in_channels=1)
    assert isinstance(network, SegNet)
    captured = {}
    network.decoder[0].register_forward_pre_hook(lambda module, args: captured.setdefault("unpooled", args[0]))
    network(torch.randn(1, 1, 8, 8))
    unpooled = captured["unpooled"]
    assert unpooled.shape == (1, 2, 8, 8)
    windows = unpooled.unfold(2, 2, 2).unfold(3, 2, 2)  # (1, C, 4, 4, 2, 2): one non-zero per 2x2 window at most
    assert ((windows != 0).sum((-1, -2)) <= 1).all()
    assert (unpooled != 0).any()


def test_deeplab_output_stride_and_dilation():
    network = build("deeplab", 3, **DEEPLAB_TINY | {"output_stride": 8, "features": [4, 4, 8, 8, 8, 8]})
    assert isinstance(network, DeepLab)
    dilations = [
        {m.dilation[0] for m in stage.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3)}
        for stage in network.encoder
    ]
    assert dilations == [{1}, {1}, {1}, {1}, {2}, {4}]  # the last stages dilate instead of striding
    strided = [
        any(m.stride[0] == 2 for m in stage.modules() if isinstance(m, torch.nn.Conv3d)) for stage in network.encoder
    ]
    assert strided == [False, True, True, True, False, False]
    captured = {}
    network.aspp.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
    network(torch.randn(1, 2, 16, 16, 16))
    assert captured["x"].shape[2:] == (2, 2, 2)  # output stride 8


def test_deeplab_default_rates_scale_with_output_stride():
    assert build("deeplab", 2, output_stride=16).config["aspp_rates"] == [6, 12, 18]
    assert build("deeplab", 2, output_stride=8, features=[4, 4, 8, 8]).config["aspp_rates"] == [12, 24, 36]


def test_aspp_has_five_branches_and_image_pooling():
    network = build("deeplab", 2, **DEEPLAB_TINY)
    aspp = network.aspp
    assert isinstance(aspp, ASPP)
    assert [branch.conv.dilation for branch in aspp.branches] == [(1, 1), (1, 1), (2, 2), (3, 3)]
    assert aspp.project.conv.in_channels == 5 * 8
    x = torch.randn(2, 8, 4, 4)
    shifted = x.clone()
    shifted[1] += 1.0  # a different mean only in sample 1: the image-pooling branch sees it
    aspp.eval()
    with torch.no_grad():
        assert not torch.allclose(aspp(x)[1], aspp(shifted)[1])
        torch.testing.assert_close(aspp(x)[0], aspp(shifted)[0])
