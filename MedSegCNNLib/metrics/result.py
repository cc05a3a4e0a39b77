"""Evaluation results: one row per (case, label), per-label summaries, CSV and JSON.

The row keys are a stable interface (the CLI's CSV/JSON and the Slicer table use them):
``case, label, name, dice, iou, precision, recall, specificity, accuracy, f1, hd, hd95, assd, nsd,
volume_pred_ml, volume_ref_ml, rvd, tp, fp, fn, tn, pred_empty, ref_empty, reference_resampled``.

Summaries keep infinite distances (a missed or spurious label) in the statistics instead of dropping
them: the mean, std and max of a metric with an infinite value are infinite, the median and min are the
order statistics, and ``n_pred_empty`` / ``n_ref_empty`` count such cases.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from .label_metrics import LabelMetrics

#: Metrics summarised over cases, in report order.
SUMMARY_METRICS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "accuracy",
    "f1",
    "hd",
    "hd95",
    "assd",
    "nsd",
    "volume_pred_ml",
    "volume_ref_ml",
    "rvd",
)
ROW_KEYS = (
    "case",
    "label",
    "name",
    *SUMMARY_METRICS,
    "tp",
    "fp",
    "fn",
    "tn",
    "pred_empty",
    "ref_empty",
    "reference_resampled",
    "distance_unit",
    "roi_mask",
)
DISTANCE_UNITS = ("mm", "pixel")
"""A case's distance unit: millimetres, or pixels for files without physical spacing."""
STATISTICS = ("mean", "std", "median", "min", "max")


@dataclass(frozen=True)
class CaseEvaluation:
    """The metrics of every evaluated label of one case; ``distance_unit`` (one of :data:`DISTANCE_UNITS`) and
    ``roi_mask`` as in the rows (module docstring)."""

    case: str
    metrics: dict[int, LabelMetrics]
    names: dict[int, str]
    reference_resampled: bool = False
    distance_unit: str = "mm"
    roi_mask: bool = False

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "case": self.case,
                "label": label,
                "name": self.names[label],
                **metrics.as_dict(),
                "reference_resampled": self.reference_resampled,
                "distance_unit": self.distance_unit,
                "roi_mask": self.roi_mask,
            }
            for label, metrics in sorted(self.metrics.items())
        ]


@dataclass(frozen=True)
class EvaluationResult:
    """Per-case, per-label metrics of one evaluation run. ``nsd_tolerance_mm`` is the NSD tolerance used."""

    cases: tuple[CaseEvaluation, ...]
    nsd_tolerance_mm: float

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per (case, label) with the keys :data:`ROW_KEYS`, in that order."""
        return [{key: row[key] for key in ROW_KEYS} for case in self.cases for row in case.rows()]

    @property
    def labels(self) -> list[int]:
        """All evaluated label values, sorted."""
        return sorted({label for case in self.cases for label in case.metrics})

    @property
    def distance_unit(self) -> str:
        """The cases' distance unit (:data:`DISTANCE_UNITS`), or ``mixed`` when cases differ in it."""
        units = {case.distance_unit for case in self.cases}
        return units.pop() if len(units) == 1 else "mixed"

    def summary(self) -> dict[int, dict[str, Any]]:
        """Per label: name, case counts and, per metric of :data:`SUMMARY_METRICS`, mean/std/median/min/max.

        ``n_cases`` counts cases where the label was evaluated; ``n_pred_empty`` / ``n_ref_empty`` /
        ``n_both_empty`` count cases where the label is missing from the prediction / reference / both.
        """
        result: dict[int, dict[str, Any]] = {}
        for label in self.labels:
            entries = [(case, case.metrics[label]) for case in self.cases if label in case.metrics]
            metrics = [m for _, m in entries]
            result[label] = {
                "name": entries[0][0].names[label],
                "n_cases": len(metrics),
                "n_pred_empty": sum(m.pred_empty and not m.ref_empty for m in metrics),
                "n_ref_empty": sum(m.ref_empty and not m.pred_empty for m in metrics),
                "n_both_empty": sum(m.pred_empty and m.ref_empty for m in metrics),
                **{name: describe([getattr(m, name) for m in metrics]) for name in SUMMARY_METRICS},
            }
        return result

    def to_json_dict(self) -> dict[str, Any]:
        """``{"rows": [...], "summary": {label: {...}}, "nsd_tolerance_mm": τ, "distance_unit": unit}`` with inf/nan
        as strings (``distance_unit``: :attr:`distance_unit`; τ is in that unit)."""
        summary = {str(label): stats for label, stats in self.summary().items()}
        return json_safe(
            {
                "rows": self.to_rows(),
                "summary": summary,
                "nsd_tolerance_mm": self.nsd_tolerance_mm,
                "distance_unit": self.distance_unit,
            }
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_json_dict(), **kwargs)

    def to_csv(self, path: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> str:
        """The rows as CSV text (inf written as ``inf``); also written atomically to ``path`` when given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=ROW_KEYS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.to_rows())
        text = buffer.getvalue()
        if path is not None:
            write_text_atomic(Path(path), text, overwrite=overwrite)
        return text


def describe(values: list[float]) -> dict[str, float]:
    """mean, std (population), median, min and max of ``values``, keeping infinities (see module doc).

    An empty list or a list with NaN (metric not computed) gives NaN for every statistic.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or np.isnan(array).any():
        return dict.fromkeys(STATISTICS, math.nan)
    finite = np.isfinite(array)
    if finite.all():
        mean, std = float(array.mean()), float(array.std())
    else:
        mean = float(array.sum())  # ±inf, or nan when both signs occur
        std = math.inf
    return {
        "mean": mean,
        "std": std,
        "median": float(np.median(array)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def json_safe(value: Any) -> Any:
    """Recursively replace non-finite floats by the strings ``"inf"``, ``"-inf"`` and ``"nan"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value
