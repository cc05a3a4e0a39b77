"""The accuracy gate of reduced precision: a model runs at bf16 (or fp16) only where that keeps its segmentations.

The first time a model is asked to predict at a reduced precision with a backend on a machine, its *reference* is
segmented at fp32 and at the reduced precision: the central window of the first image that model segments there
(:func:`~.prediction.gate_sample`; the whole image when it fits in one window), so that the check costs two windows,
not a second prediction of a large volume (one, when the reduced precision is refused: the window is one of the
image's own, and the image's fp32 prediction reuses its fp32 output). The reduced precision is accepted when the
Dice between the two label maps is at least :data:`MIN_DICE` for every foreground label (a label absent from both
counts as 1: a label the central window does not hold is not checked). The decision is stored in the cache
(:mod:`.cache`), keyed by the weights' SHA-256 of every network, the backend and its version, the precision and the
CPU or GPU model, and reused by later runs and other processes. Both runs are timed, and a reduced precision that
``auto`` chose is used only where it was also faster (an explicit one whenever accepted).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..metrics.overlap import confusion_counts, overlap_scores
from ..runtime import cpu_info, openvino_version
from .cache import load_or_build, lookup, weights_sha256
from .model import SegmentationModel

logger = logging.getLogger(__name__)

#: The least Dice (per foreground label) between the reduced-precision and fp32 label maps for accepting it.
MIN_DICE = 0.99
DECISION_FILE = "decision.json"


@dataclass(frozen=True)
class GateDecision:
    """Whether ``precision`` was accepted, from the Dice per foreground label (value → Dice) on ``reference``, and
    the seconds the reference took (``reduced`` and ``fp32``: the first run of each, warm-up included)."""

    precision: str
    accepted: bool
    dice: dict[int, float]
    reference: str
    seconds: dict[str, float]

    @property
    def faster(self) -> bool:
        """Whether the reduced precision predicted the reference at least as fast as fp32."""
        return self.seconds["reduced"] <= self.seconds["fp32"]

    def use_reduced(self, only_if_faster: bool) -> bool:
        """Whether to predict at the reduced precision: accepted, and faster when ``only_if_faster``."""
        return self.accepted and (self.faster or not only_if_faster)

    def describe(self) -> str:
        worst = min(self.dice.values(), default=1.0)
        verdict = "accepted" if self.accepted else f"rejected (below {MIN_DICE}); using fp32"
        times = f"{self.seconds['reduced']:.2f} s vs {self.seconds['fp32']:.2f} s at fp32"
        return f"{self.precision} {verdict}: lowest Dice vs fp32 {worst:.4f}, {times}, on {self.reference}"


def gate_record(model: SegmentationModel, backend: str, precision: str) -> dict[str, Any]:
    """What a decision depends on: the key of its cache entry."""
    runtime = openvino_version() if backend == "openvino" else torch.__version__
    hardware = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else cpu_info().model
    if model.device.type == "cpu":
        hardware += " " + " ".join(sorted(cpu_info().flags & {"amx_bf16", "avx512_bf16", "avx512_fp16", "bf16"}))
    if "weights_sha256" not in model.engines:
        model.engines["weights_sha256"] = [weights_sha256(network) for network in model.networks]
    networks = model.engines["weights_sha256"]
    return {"kind": "precision-gate", "weights_sha256": networks, "backend": backend, "runtime": runtime,
            "precision": precision, "hardware": hardware.strip(), "min_dice": MIN_DICE}  # fmt: skip


def cached_decision(model: SegmentationModel, record: dict[str, Any], cache_folder: Path) -> GateDecision | None:
    """The decision stored for ``record`` (in this process, else in the cache), or None."""
    key = ("gate", json.dumps(record, sort_keys=True))
    if key in model.engines:
        return model.engines[key]
    entry = lookup(cache_folder / "precision", record)
    if entry is None:
        return None
    try:
        decision = _read(entry)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # unreadable: decided again and rewritten
    model.engines[key] = decision
    return decision


def decide(
    model: SegmentationModel,
    record: dict[str, Any],
    cache_folder: Path,
    fp32_labels: np.ndarray,
    reduced_labels: np.ndarray,
    *,
    reference: str,
    seconds: dict[str, float],
) -> GateDecision:
    """Compare the label maps of the reference, store the decision and return it."""
    values = [label.value for label in model.labels]
    dice = overlap_scores(confusion_counts(reduced_labels, fp32_labels, values)).dice
    per_label = {value: float(score) for value, score in zip(values, dice, strict=True)}
    decision = GateDecision(
        precision=record["precision"],
        accepted=all(score >= MIN_DICE for score in per_label.values()),
        dice=per_label,
        reference=reference,
        seconds={"reduced": float(seconds["reduced"]), "fp32": float(seconds["fp32"])},
    )

    def build(folder: Path) -> None:
        write_text_atomic(folder / DECISION_FILE, json.dumps(asdict(decision), indent=1))

    load_or_build(cache_folder / "precision", record, build, _read)
    model.engines[("gate", json.dumps(record, sort_keys=True))] = decision
    return decision


def _read(entry: Path) -> GateDecision:
    raw = json.loads((entry / DECISION_FILE).read_text(encoding="utf-8"))
    return GateDecision(
        precision=str(raw["precision"]),
        accepted=bool(raw["accepted"]),
        dice={int(value): float(score) for value, score in raw["dice"].items()},
        reference=str(raw["reference"]),
        seconds={"reduced": float(raw["seconds"]["reduced"]), "fp32": float(raw["seconds"]["fp32"])},
    )
