"""The accuracy gate of reduced precision: a reduced precision that changes the segmentation is rejected (fp32 is
used and the decision kept), one that does not is accepted, and decisions are reused from the cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from model_support import save_tiny_model

from MedSegCNNLib.image import Image
from MedSegCNNLib.inference.model import SegmentationModel, load_segmentation_model
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.runtime import cpu_has_bf16, inference_precision


def _pointwise(weights: tuple[float, float, float], biases: tuple[float, float, float]) -> torch.nn.Module:
    """A 1×1×1 convolution: class k's logit is ``weights[k] · x + biases[k]``."""
    conv = torch.nn.Conv3d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).reshape(3, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor(biases))
    return conv.eval()


#: fp32 separates the classes by 0.001·x on logits near 256, where bf16's spacing is 2: in bf16 every class ties,
#: argmax picks the background, and labels 1 and 2 vanish.
BROKEN_IN_BF16 = ((0.0, 0.001, -0.001), (256.0, 256.0, 256.0))
#: Logits ±10·x − 5: bf16 changes at most a few voxels at the borders.
ROBUST = ((0.0, 10.0, -10.0), (0.0, -5.0, -5.0))


@pytest.fixture
def card(tmp_path: Path):
    return load_segmentation_model(save_tiny_model(tmp_path / "tiny"), torch.device("cpu")).card


def _model(card, network: torch.nn.Module) -> SegmentationModel:
    return SegmentationModel((network,), card, torch.device("cpu"))


def _image() -> Image:
    rng = np.random.default_rng(3)
    array = rng.normal(size=(20, 24, 18)).astype(np.float32)
    return Image(array=array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))


def _decisions(cache: Path) -> list[dict]:
    folder = cache / "precision"
    return [json.loads((entry / "decision.json").read_text()) for entry in sorted(folder.iterdir())]


def test_a_precision_that_changes_the_segmentation_is_rejected(
    card, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    model = _model(card, _pointwise(*BROKEN_IN_BF16))
    bf16 = PredictOptions(backend="torch", precision="bf16", cache_dir=str(cache))
    fp32 = PredictOptions(backend="torch", precision="fp32", cache_dir=str(cache))
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        gated = segment(_image(), model, bf16).labels.array
    expected = segment(_image(), _model(card, _pointwise(*BROKEN_IN_BF16)), fp32).labels.array
    assert set(np.unique(expected)) == {0, 1, 2}  # the fp32 segmentation is not trivial
    np.testing.assert_array_equal(gated, expected)  # the gate returned fp32's segmentation
    assert "bf16 rejected" in caplog.text
    (decision,) = _decisions(cache)
    assert decision["accepted"] is False and decision["precision"] == "bf16"
    assert max(decision["dice"].values()) < 0.99


def test_a_precision_that_keeps_the_segmentation_is_accepted_and_reused(card, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(cache))
    first = _model(card, _pointwise(*ROBUST))
    segment(_image(), first, options)
    (decision,) = _decisions(cache)
    assert decision["accepted"] is True and min(decision["dice"].values()) >= 0.99
    assert ("torch", "fp32", 2) in first.engines  # the gate ran fp32 once

    again = _model(card, _pointwise(*ROBUST))  # the same weights, loaded anew (as in another process)
    segment(_image(), again, options)
    assert ("torch", "fp32", 2) not in again.engines  # the stored decision was used: no fp32 run
    assert len(_decisions(cache)) == 1


def test_a_rejected_precision_is_not_built_again(card, tmp_path: Path) -> None:
    """Once the gate refused bf16 (stored in the cache), a later run builds and runs only the fp32 engine."""
    cache = tmp_path / "cache"
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(cache))
    segment(_image(), _model(card, _pointwise(*BROKEN_IN_BF16)), options)
    assert _decisions(cache)[0]["accepted"] is False
    again = _model(card, _pointwise(*BROKEN_IN_BF16))  # as in another process
    labels = segment(_image(), again, options).labels.array
    built = [key for key in again.engines if isinstance(key, tuple) and key[0] == "torch"]
    assert built == [("torch", "fp32", 2)]
    assert set(np.unique(labels)) == {0, 1, 2}  # fp32's segmentation, not bf16's ties


def test_other_weights_are_checked_again(card, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(cache))
    segment(_image(), _model(card, _pointwise(*ROBUST)), options)
    segment(_image(), _model(card, _pointwise(*BROKEN_IN_BF16)), options)
    assert sorted(d["accepted"] for d in _decisions(cache)) == [False, True]


def test_an_unreadable_decision_is_taken_again(card, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(cache))
    segment(_image(), _model(card, _pointwise(*ROBUST)), options)
    (entry,) = sorted((cache / "precision").iterdir())
    (entry / "decision.json").write_text("{not json", encoding="utf-8")
    model = _model(card, _pointwise(*ROBUST))
    segment(_image(), model, options)
    assert ("torch", "fp32", 2) in model.engines
    assert _decisions(cache)[0]["accepted"] is True


def test_fp32_is_never_gated(card, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    segment(_image(), _model(card, _pointwise(*ROBUST)), PredictOptions(backend="torch", precision="fp32",
                                                                         cache_dir=str(cache)))  # fmt: skip
    assert not (cache / "precision").exists()


def test_auto_precision_on_the_cpu_follows_its_bf16_units() -> None:
    assert inference_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_bf16() else "fp32")
    assert inference_precision("fp32", torch.device("cpu")) == "fp32"


def test_auto_keeps_a_reduced_precision_only_where_it_was_faster() -> None:
    from MedSegCNNLib.inference.precision_gate import GateDecision

    slower = GateDecision("bf16", True, {1: 0.999}, "case", {"reduced": 2.0, "fp32": 1.0})
    faster = GateDecision("bf16", True, {1: 0.999}, "case", {"reduced": 0.5, "fp32": 1.0})
    rejected = GateDecision("bf16", False, {1: 0.9}, "case", {"reduced": 0.5, "fp32": 1.0})
    assert not slower.use_reduced(only_if_faster=True) and slower.use_reduced(only_if_faster=False)
    assert faster.use_reduced(only_if_faster=True)
    assert not rejected.use_reduced(only_if_faster=False)
    assert "2.00 s vs 1.00 s at fp32" in slower.describe()


class _CountingWindows(torch.nn.Module):
    """``network`` that counts the windows it is given (its batches' sizes added up)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.windows = network, 0

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        self.windows += windows.shape[0]
        return self.network(windows)


def _cube(size: int) -> Image:
    array = np.random.default_rng(5).normal(size=(size,) * 3).astype(np.float32)
    return Image(array=array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))


def test_the_gate_checks_a_large_image_on_its_central_window_only(card, tmp_path: Path) -> None:
    """An image of 27 windows is predicted once; the gate adds one window at bf16 and one at fp32, not a second
    prediction of the whole image (the tiny model's patch is 16³; 32³ with overlap 0.5 gives 3 windows per axis)."""
    counting = _CountingWindows(_pointwise(*ROBUST))
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(tmp_path / "cache"))
    labels = segment(_cube(32), _model(card, counting), options).labels.array
    assert counting.windows == 27 + 2
    (decision,) = _decisions(tmp_path / "cache")
    assert decision["accepted"] is True and decision["reference"].startswith("the central window of")
    fp32 = segment(_cube(32), _model(card, _pointwise(*ROBUST)), PredictOptions(backend="torch", precision="fp32"))
    assert (labels == fp32.labels.array).mean() > 0.99  # bf16 was kept and segments as fp32 does


def test_a_precision_rejected_on_the_central_window_predicts_the_image_at_fp32(card, tmp_path: Path) -> None:
    """The image's fp32 prediction takes the gate's fp32 window instead of computing it again: 27 windows and the
    gate's bf16 one."""
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(tmp_path / "cache"))
    counting = _CountingWindows(_pointwise(*BROKEN_IN_BF16))
    gated = segment(_cube(32), _model(card, counting), options).labels.array
    assert counting.windows == 27 + 1
    fp32 = PredictOptions(backend="torch", precision="fp32")
    np.testing.assert_array_equal(
        gated, segment(_cube(32), _model(card, _pointwise(*BROKEN_IN_BF16)), fp32).labels.array
    )
    (decision,) = _decisions(tmp_path / "cache")
    assert decision["accepted"] is False


def test_a_remembering_predictor_computes_only_windows_it_has_not_seen() -> None:
    from MedSegCNNLib.inference.predictor import Predictor, RememberedWindows, RememberingPredictor

    counting = _CountingWindows(_pointwise(*ROBUST))
    predictor = Predictor([counting])
    windows = torch.randn(3, 1, 4, 5, 6)
    memory = RememberedWindows()
    recorded = RememberingPredictor(predictor, memory, record=True)(windows[1:2])
    assert counting.windows == 1 and len(memory.entries) == 1
    mixed = RememberingPredictor(predictor, memory)(windows.contiguous(memory_format=torch.channels_last_3d))
    assert counting.windows == 1 + 2  # the remembered window (any layout) is not computed again
    assert len(memory.entries) == 1  # nothing recorded without record
    torch.testing.assert_close(mixed, predictor(windows), rtol=0, atol=1e-6)  # in the batch's order
    torch.testing.assert_close(mixed[1], recorded[0], rtol=0, atol=0)


def test_an_image_of_one_window_is_predicted_once_per_precision(card, tmp_path: Path) -> None:
    counting = _CountingWindows(_pointwise(*ROBUST))
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(tmp_path / "cache"))
    segment(_cube(16), _model(card, counting), options)
    assert counting.windows == 2  # bf16 and fp32 on the whole image; the chosen output is kept, not recomputed


def test_the_gate_sample_is_the_sliding_window_nearest_the_centre() -> None:
    from MedSegCNNLib.inference.prediction import gate_sample

    image = np.arange(2 * 40 * 10 * 33, dtype=np.float32).reshape(2, 40, 10, 33)
    sample = gate_sample(image, (16, 16, 16))
    assert sample is not None and sample.shape == (2, 16, 10, 16)
    # windows start at 0, 8, 16, 24 along 40 (centre 12: 8 and 16 are as near, the first is taken) and at 0, 6,
    # 11, 17 along 33 (centre 8.5: 6 is nearest); the axis of 10 is shorter than the patch and taken whole
    np.testing.assert_array_equal(sample, image[:, 8:24, :, 6:22])
    np.testing.assert_array_equal(gate_sample(image, (16, 16, 16), overlap=0.0), image[:, 12:28, :, 8:24])
    assert gate_sample(image[:, :16, :, :16], (16, 16, 16)) is None


def test_a_2d_model_on_a_volume_is_checked_on_the_central_slice(tmp_path: Path) -> None:
    from MedSegCNNLib.inference.prediction import gate_sample

    volume = np.arange(7 * 40 * 50, dtype=np.float32).reshape(1, 7, 40, 50)
    sample = gate_sample(volume, (32, 32))
    assert sample is not None and sample.shape == (1, 1, 32, 32)
    np.testing.assert_array_equal(sample, volume[:, 3:4, 0:32, 9:41])  # in-plane windows at 0, 8 and 0, 9, 18
    assert gate_sample(volume[:, :1, :32, :32], (32, 32)) is None
    model = load_segmentation_model(save_tiny_model(tmp_path / "tiny2d", spatial_dims=2), torch.device("cpu"))
    image = Image(array=np.random.default_rng(2).normal(size=(7, 40, 50)).astype(np.float32), spacing=(1.0, 1.0, 1.0),
                  origin=(0.0, 0.0, 0.0), direction=np.eye(3))  # fmt: skip
    options = PredictOptions(backend="torch", precision="bf16", cache_dir=str(tmp_path / "cache"))
    assert segment(image, model, options).labels.array.shape == (7, 40, 50)
    (decision,) = _decisions(tmp_path / "cache")
    assert decision["reference"].startswith("the central window of")
