"""U-Net family: shapes (anisotropic, odd-but-divisible sizes), gradients, deep supervision, variants, and the
fused CPU instance norm + activation against PyTorch's InstanceNorm."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.networks import UNet, build_network
from MedSegCNNLib.networks.blocks import ConvNormAct, InstanceNorm, ResidualUnit, norm_act

CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def unet(dims: int = 3, **options) -> UNet:
    torch.manual_seed(0)
    config = {"name": "unet", "spatial_dims": dims, "in_channels": 1, "out_channels": 3, "features": [4, 8, 16]}
    return build_network(config | options)


def first_conv(network: UNet) -> torch.nn.Module:
    return next(m for m in network.encoder.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d))


@pytest.mark.parametrize(
    ("dims", "options", "size", "divisor"),
    [
        (3, {}, (16, 16, 16), (4, 4, 4)),
        (2, {}, (16, 20), (4, 4)),
        (3, {"strides": [[1, 2, 2], [1, 2, 2]]}, (5, 12, 8), (1, 4, 4)),  # odd but divisible
        (3, {"strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}, (6, 12, 8), (2, 4, 4)),  # nnU-Net layout
        (3, {"kernel_sizes": [[1, 3, 3], [3, 3, 3], 3], "strides": [[1, 2, 2], 2]}, (6, 12, 16), (2, 4, 4)),
        (2, {"strides": [[2, 1], [2, 3]]}, (12, 9), (4, 3)),
        (3, {"features": [4, 8, 8, 16], "blocks_per_level": 1}, (8, 16, 24), (8, 8, 8)),
    ],
)
def test_output_shape(dims, options, size, divisor):
    network = unet(dims, **options)
    assert network.divisor == divisor
    output = network(torch.randn(2, 1, *size))
    assert output.shape == (2, 3, *size)


def test_indivisible_size_names_the_needed_multiple():
    network = unet(3, strides=[[1, 2, 2], [2, 2, 2]])
    with pytest.raises(InputError, match=r"multiple of \(2, 4, 4\).*\(6, 12, 16\)"):
        network(torch.randn(1, 1, 5, 12, 14))


def test_wrong_channel_count():
    with pytest.raises(InputError, match=r"1 input channel.*has 2"):
        unet(2)(torch.randn(1, 2, 16, 16))


def test_gradients_reach_the_first_layer():
    network = unet(3)
    network(torch.randn(2, 1, 16, 16, 16)).logsumexp(1).mean().backward()
    grad = first_conv(network).weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_deep_supervision_list_in_training_tensor_in_eval():
    network = unet(3, features=[4, 8, 16, 16], deep_supervision=True)
    x = torch.randn(2, 1, 16, 16, 16)
    outputs = network.train()(x)
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 16, 16), (2, 3, 8, 8, 8), (2, 3, 4, 4, 4)]
    sum(o.mean() for o in outputs).backward()
    assert all(head.weight.grad is not None for head in network.heads)
    with torch.no_grad():
        single = network.eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 3, 16, 16, 16)


def test_deep_supervision_probe_of_divisor_size():
    """The trainer counts outputs with a (1, C, *divisor) input in training mode: one voxel at the bottom."""
    network = unet(3, deep_supervision=True).train()
    with torch.no_grad():
        outputs = network(torch.zeros(1, 1, *network.divisor))
    assert len(outputs) == 2


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "options",
    [
        {"residual": True},
        {"attention": True},
        {"residual": True, "attention": True, "downsample": "maxpool", "upsample": "interpolate"},
        {"norm": "batch", "activation": "relu", "dropout": 0.2},
        {"norm": "group", "norm_groups": 2, "blocks_per_level": 3},
    ],
)
def test_variants_run_forward_and_backward(dims, options):
    network = unet(dims, **options).train()
    size = (16,) * dims
    output = network(torch.randn(2, 1, *size))
    assert output.shape == (2, 3, *size)
    output.logsumexp(1).mean().backward()
    assert first_conv(network).weight.grad.abs().sum() > 0
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d) and module.bias is not None:
            assert module.bias.grad is not None


def test_resunet_has_residual_encoder_units_with_projection_shortcuts():
    network = build_network(
        {"name": "resunet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": [4, 8]}
    )
    units = [m for m in network.encoder if isinstance(m, ResidualUnit)]
    assert len(units) == 2 and all(u.shortcut is not None for u in units)  # channel change / stride
    assert network(torch.randn(1, 1, 8, 8)).shape == (1, 2, 8, 8)


def test_attention_gates_exist_only_when_asked():
    assert all(stage.gate is None for stage in unet(2).decoder)
    assert all(stage.gate is not None for stage in unet(2, attention=True).decoder)


def test_no_bias_before_instance_or_batch_norm():
    for norm, has_bias in (("instance", False), ("batch", False), ("group", True)):
        blocks = [m for m in unet(3, norm=norm, norm_groups=4).modules() if isinstance(m, ConvNormAct)]
        assert blocks and all((b.conv.bias is not None) == has_bias for b in blocks)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("offset", [0.0, 20.0])
@pytest.mark.parametrize("slope", [0.01, 0.0])
def test_instance_norm_act_matches_torch(dims, offset, slope):
    """The fused channels-last path and the native path both equal InstanceNorm(affine) + LeakyReLU/ReLU."""
    torch.manual_seed(0)
    channels, size = 5, (6, 7, 8)[:dims] if dims == 3 else (9, 10)
    norm = InstanceNorm(channels)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    reference_norm = (torch.nn.InstanceNorm2d if dims == 2 else torch.nn.InstanceNorm3d)(channels, affine=True)
    reference_norm.load_state_dict(norm.state_dict())
    x = torch.randn(3, channels, *size) * 2 + offset + torch.arange(channels).view(1, -1, *(1,) * dims)
    grad = torch.randn_like(x)

    def run(module, layout, fused):
        inp = x.clone().contiguous(memory_format=layout).requires_grad_()
        module.zero_grad()
        out = norm_act(module, inp, slope) if fused else F.leaky_relu(module(inp), slope)
        out.backward(grad)
        return out, inp.grad, module.weight.grad.clone(), module.bias.grad.clone()

    expected = run(reference_norm, torch.contiguous_format, fused=False)
    for layout in (CHANNELS_LAST[dims], torch.contiguous_format):
        for got, want in zip(run(norm, layout, fused=True), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * (1 + offset))


@pytest.mark.parametrize("fused", [False, True])
def test_channels_last_instance_norm_is_exact_where_the_mean_is_large(fused):
    """torch's native group norm in channels-last layout on the CPU takes E[x^2] - E[x]^2 in float32: at a mean of
    100 standard deviations its output is off by about 0.3. The norm here stays within 1e-4 of float64."""
    torch.manual_seed(0)
    norm = InstanceNorm(8)
    x = (torch.randn(2, 8, 32, 32, 32) + 100.0).contiguous(memory_format=torch.channels_last_3d)
    expected = F.leaky_relu(F.instance_norm(x.double(), eps=norm.eps), 0.01)
    with torch.no_grad():
        got = norm_act(norm, x.clone(), 0.01) if fused else F.leaky_relu(norm(x), 0.01)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    assert (got.double() - expected).abs().max() < 1e-4
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 activations: measured in float32
        reduced = x.bfloat16()
        got = norm_act(norm, reduced.clone(), 0.01) if fused else F.leaky_relu(norm(reduced), 0.01)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last_3d)
    exact = F.leaky_relu(F.instance_norm(reduced.double(), eps=norm.eps), 0.01)  # of the bf16 input itself
    assert (got.double() - exact).abs().max() < 0.02  # bf16 output rounding (8 bits) of values up to ~4


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Torch picks oneDNN's channels-last kernels for convolutions this small only with more than one thread (the
    suite runs single-threaded: conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_channels_last_network_matches_contiguous(two_threads):
    network = unet(3, residual=True, deep_supervision=True)
    x = torch.randn(2, 1, 8, 12, 16)
    outputs = network(x)
    sum(o.square().mean() for o in outputs).backward()
    grads = [p.grad.clone() for p in network.parameters()]
    network.zero_grad()
    network.to(memory_format=torch.channels_last_3d)
    outputs_cl = network(x.contiguous(memory_format=torch.channels_last_3d))
    assert outputs_cl[0].is_contiguous(memory_format=torch.channels_last_3d)  # the fused path ran
    sum(o.square().mean() for o in outputs_cl).backward()
    for got, want in zip(outputs_cl, outputs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for p, want in zip(network.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=1e-3, atol=1e-5)
