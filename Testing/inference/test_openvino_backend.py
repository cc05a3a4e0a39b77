"""The OpenVINO backend against torch: every network family in 2D and 3D, the conversion cache (hit, miss,
corrupt entries, concurrent builders), the fallback for operations OpenVINO cannot convert, and the messages
when it is not installed."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from model_support import save_tiny_model

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference.cache import entry_key, weights_sha256
from MedSegCNNLib.inference.engine import engine_for
from MedSegCNNLib.inference.model import SegmentationModel, load_segmentation_model
from MedSegCNNLib.networks import build_network
from MedSegCNNLib.runtime import openvino_version, resolve_backend

pytestmark = pytest.mark.skipif(
    openvino_version() is None, reason='OpenVINO is not installed (pip install ".[openvino]")'
)

#: |OpenVINO fp32 − torch fp32| of the logits, relative to their largest magnitude (both compute in float32;
#: they differ in summation order and fused kernels).
FP32_TOLERANCE = 1e-4

FAMILIES = {
    "unet": {"name": "unet", "features": [4, 8, 16]},
    "attention-residual-unet": {"name": "unet", "features": [4, 8, 16], "attention": True, "residual": True},
    "unet-batchnorm": {"name": "unet", "features": [4, 8, 16], "norm": "batch"},
    "fcn": {"name": "fcn"},
    "segnet": {"name": "segnet"},
    "deeplab": {"name": "deeplab"},
}


def _network(family: str, dims: int, channels: int = 1, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {**FAMILIES[family], "spatial_dims": dims, "in_channels": channels, "out_channels": classes}
    network = build_network(config).eval()
    with torch.no_grad():  # non-trivial normalisation statistics for batch norm
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return network


def _compile(network: torch.nn.Module, shape: tuple[int, ...], cache: Path, precision: str = "fp32"):
    from MedSegCNNLib.inference.openvino_backend import compile_network

    return compile_network(network, shape, precision, cache)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_openvino_fp32_equals_torch_fp32(family: str, dims: int, tmp_path: Path) -> None:
    network = _network(family, dims, channels=2)
    window = (32,) * dims
    compiled = _compile(network, (1, 2, *window), tmp_path)
    windows = torch.randn(3, 2, *window)  # three windows through a batch-of-one network: chunked, not padded
    with torch.inference_mode():  # torch one window at a time too: its result can depend on the batch a window is
        # in (float rounding), and SegNet's pooling indices turn a near-tie's rounding into a different unpooling
        expected = torch.cat([network(windows[i : i + 1]) for i in range(len(windows))])
    got = compiled(windows)
    assert got.shape == expected.shape and got.dtype == torch.float32
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= FP32_TOLERANCE * scale


def test_a_partial_batch_is_padded_and_its_padding_dropped(tmp_path: Path) -> None:
    network = _network("unet", 3)
    compiled = _compile(network, (2, 1, 16, 16, 16), tmp_path)
    windows = torch.randn(3, 1, 16, 16, 16)
    with torch.inference_mode():
        expected = network(windows)
    got = compiled(windows)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= FP32_TOLERANCE * expected.abs().max().item()


def _entries(cache: Path) -> list[Path]:
    folder = cache / "openvino"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def test_the_cache_is_built_once_and_hit_afterwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from MedSegCNNLib.inference import openvino_backend

    network = _network("unet", 3)
    first = _compile(network, (1, 1, 16, 16, 16), tmp_path)
    (entry,) = _entries(tmp_path)
    assert {p.name for p in entry.iterdir()} == {"model.xml", "model.bin", "entry.json"}

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the network")

    monkeypatch.setattr(openvino_backend, "convert", no_conversion)
    second = _compile(network, (1, 1, 16, 16, 16), tmp_path)  # a hit: read, not converted
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(first(x), second(x))
    monkeypatch.undo()
    _compile(network, (1, 1, 24, 16, 16), tmp_path)  # another window: another entry
    with torch.no_grad():
        next(network.parameters()).add_(0.1)
    _compile(network, (1, 1, 16, 16, 16), tmp_path)  # other weights: another entry
    assert len(_entries(tmp_path)) == 3


@pytest.mark.parametrize("damage", ["truncated-weights", "garbage-xml", "no-record"])
def test_a_corrupt_cache_entry_is_rebuilt(damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    network = _network("unet", 3)
    x = torch.randn(1, 1, 16, 16, 16)
    expected = _compile(network, (1, 1, 16, 16, 16), tmp_path)(x)
    (entry,) = _entries(tmp_path)
    if damage == "truncated-weights":
        weights = entry / "model.bin"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage-xml":
        (entry / "model.xml").write_text("<net><layers><layer", encoding="utf-8")
    else:
        (entry / "entry.json").unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = _compile(network, (1, 1, 16, 16, 16), tmp_path)(x)
    assert torch.allclose(rebuilt, expected, atol=1e-6)
    (entry,) = _entries(tmp_path)
    assert (entry / "entry.json").is_file()
    assert not [p for p in (tmp_path / "openvino").iterdir() if p.name.startswith(".")], "temporaries left behind"
    if damage != "no-record":  # an entry without its record is simply incomplete, not worth a warning
        assert "could not be loaded" in caplog.text


def test_an_unwritable_cache_folder_costs_speed_not_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file where the cache folder should be (what a read-only or full disk also causes: the entry cannot be
    written): the network is converted into a temporary folder and used, with a warning naming the folder."""
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder", encoding="utf-8")
    network = _network("unet", 3)
    x = torch.randn(1, 1, 16, 16, 16)
    with caplog.at_level(logging.WARNING):
        compiled = _compile(network, (1, 1, 16, 16, 16), blocked)
    assert torch.allclose(compiled(x), network(x), atol=FP32_TOLERANCE * network(x).abs().max().item())
    assert "cannot be written" in caplog.text and str(blocked / "openvino") in caplog.text
    assert blocked.read_text(encoding="utf-8") == "not a folder"


def _build_in_child(cache: str) -> float:
    network = _network("unet", 3)
    compiled = _compile(network, (1, 1, 16, 16, 16), Path(cache))
    return compiled(torch.ones(1, 1, 16, 16, 16)).sum().item()


def test_concurrent_builders_leave_one_complete_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        sums = pool.map(_build_in_child, [str(tmp_path)] * 2)
    assert sums[0] == pytest.approx(sums[1], rel=1e-6)
    (entry,) = _entries(tmp_path)
    assert (entry / "entry.json").is_file()
    assert not [p for p in (tmp_path / "openvino").iterdir() if p.name.startswith(".")], "temporaries left behind"


class _UnconvertibleNetwork(torch.nn.Module):
    """A convolution followed by an operation OpenVINO has no conversion rule for (the scaled Bessel I0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i0e(self.conv(x))


def test_an_unconvertible_network_falls_back_to_torch_naming_the_operation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    card = load_segmentation_model(save_tiny_model(tmp_path / "model"), torch.device("cpu")).card
    model = SegmentationModel((_UnconvertibleNetwork().eval(),), card, torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        engine = engine_for(model, "openvino", "fp32", batch=1, cache_folder=tmp_path)
    assert engine.backend == "torch"
    assert engine.networks == model.networks
    assert "special_i0e" in caplog.text and "PyTorch instead" in caplog.text


def test_openvino_on_a_gpu_is_refused_with_what_to_do() -> None:
    with pytest.raises(InputError, match="runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))


def test_auto_picks_openvino_on_the_cpu_when_installed() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "openvino"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"


def test_a_backend_that_is_not_installed_says_how_to_install_it(tmp_path: Path) -> None:
    """A child process where ``import openvino`` fails, as on a machine without it: auto falls back to torch, and
    asking for OpenVINO explicitly is one line that says how to install it."""
    script = (
        "import sys; sys.modules['openvino'] = None\n"
        "import torch\n"
        "from MedSegCNNLib.runtime import resolve_backend\n"
        "print(resolve_backend('auto', torch.device('cpu')))\n"
        "from MedSegCNNLib.errors import InputError\n"
        "from MedSegCNNLib.inference.options import PredictOptions\n"
        "from MedSegCNNLib.inference.segment import segment\n"
        "from MedSegCNNLib.image import Image\n"
        "import numpy as np, sys\n"
        "image = Image(np.zeros((8, 8, 8), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))\n"
        "try:\n"
        f"    segment(image, {str(save_tiny_model(tmp_path / 'tiny'))!r}, PredictOptions(precision='int8'))\n"
        "except InputError as error:\n"
        "    print(error)\n"
        "resolve_backend('openvino', torch.device('cpu'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    auto, int8 = done.stdout.strip().splitlines()
    assert auto == "torch"
    assert "int8 runs on the OpenVINO backend, which is not installed" in int8 and "pip install" in int8
    assert "not installed" in done.stderr and "pip install" in done.stderr


def test_the_cache_key_covers_everything_the_ir_depends_on() -> None:
    record = {"kind": "openvino-ir", "openvino": "1", "input_shape": [1, 1, 8, 8, 8], "weights_sha256": "ab"}
    keys = {entry_key(record)}
    for field, other in (("openvino", "2"), ("input_shape", [2, 1, 8, 8, 8]), ("weights_sha256", "cd")):
        keys.add(entry_key({**record, field: other}))
    assert len(keys) == 4
    assert entry_key(dict(reversed(list(record.items())))) == entry_key(record)  # order does not matter
    assert np.all([len(key) == 64 for key in keys])


def test_the_weights_digest_follows_every_change_of_the_weights() -> None:
    """The digest is kept per network between calls, and taken again after any change: in place, a new tensor,
    loaded weights."""
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    first = weights_sha256(network)
    assert weights_sha256(network) == first
    digests = {first}
    with torch.no_grad():
        network[0].weight.add_(1.0)  # in place
    digests.add(weights_sha256(network))
    network[0].bias = torch.nn.Parameter(torch.ones(2))  # a new tensor
    digests.add(weights_sha256(network))
    network.train()(torch.randn(2, 1, 5, 5, 5))  # batch norm's running statistics, updated in place
    digests.add(weights_sha256(network))
    other = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    network.load_state_dict(other.state_dict())
    digests.add(weights_sha256(network))
    assert len(digests) == 5
    assert weights_sha256(network) == weights_sha256(other)  # the same values, another network


def test_conversion_sends_no_telemetry(tmp_path: Path) -> None:
    """OpenVINO's converter would report usage over the network from forked processes; it is given its no-op
    stand-in, so converting starts no process."""
    import openvino.tools.ovc.convert_impl as convert_impl
    import openvino.tools.ovc.telemetry_utils as telemetry_utils
    from openvino.tools.ovc import telemetry_stub

    _compile(_network("unet", 3), (1, 1, 16, 16, 16), tmp_path)
    assert convert_impl.tm is telemetry_stub and telemetry_utils.tm is telemetry_stub
    assert not multiprocessing.active_children()


def test_tta_ensembles_and_probabilities_agree_on_both_backends(tmp_path: Path) -> None:
    """The sliding window, mirroring, ensemble averaging and the probabilities are the backend's callers: OpenVINO
    fp32 gives torch fp32's results up to float rounding."""
    from MedSegCNNLib.image import Image
    from MedSegCNNLib.inference.options import PredictOptions
    from MedSegCNNLib.inference.segment import segment

    models = [save_tiny_model(tmp_path / name) for name in ("a", "b")]
    rng = np.random.default_rng(0)
    image = Image(array=rng.normal(size=(20, 26, 18)).astype(np.float32), spacing=(1.0, 1.2, 0.9),
                  origin=(0.0, 0.0, 0.0), direction=np.eye(3))  # fmt: skip
    results = {}
    for backend in ("torch", "openvino"):
        options = PredictOptions(backend=backend, precision="fp32", tta=True, probabilities=True,
                                 cache_dir=str(tmp_path / "cache"))  # fmt: skip
        results[backend] = segment(image, models, options)
    torch_result, openvino_result = results["torch"], results["openvino"]
    np.testing.assert_allclose(openvino_result.probabilities.array, torch_result.probabilities.array, atol=1e-4)
    agreement = (openvino_result.labels.array == torch_result.labels.array).mean()
    assert agreement > 0.999


def test_ctrl_c_after_conversions_is_an_interrupt_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO's CPU plugin sets an alternate signal stack when a Core is created. With a Core per call, after the
    conversions and cache hits of the cache test (in a pytest process, whose faulthandler had set its own stack
    first) that stack pointed at freed memory and the next signal crashed the process. If this regresses, the
    test session dies (exit status 139)."""
    test_the_cache_is_built_once_and_hit_afterwards(tmp_path, monkeypatch)
    monkeypatch.undo()
    gc.collect()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is in place
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        # a process-directed signal may land on another thread (OpenVINO's, torch's): Python then raises it in the
        # main thread at its next check, which short sleeps in a loop give it promptly
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            time.sleep(0.01)
