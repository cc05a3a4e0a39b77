"""Evaluation results as plain-text tables for a terminal or a Markdown code block.

:func:`format_report` renders an :class:`~.result.EvaluationResult` (per-case rows and the per-label summary);
:func:`render_table` and :func:`format_number` are the column layout and number format it uses, also used for
other terminal tables (e.g. ``medsegcnn models``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .result import EvaluationResult

TABLE_METRICS = ("dice", "iou", "precision", "recall", "hd95", "assd", "nsd", "volume_pred_ml", "volume_ref_ml")
"""The metrics a report shows, in column order (keys of :meth:`EvaluationResult.to_rows`)."""
TABLE_TITLES = ("Dice", "IoU", "Prec", "Recall", "HD95", "ASSD", "NSD", "Vpred mL", "Vref mL")
"""Column titles of :data:`TABLE_METRICS`."""


def format_report(result: EvaluationResult, *, per_case: bool) -> str:
    """Per-(case, label) rows when ``per_case``, then the per-label summary over cases (means)."""
    parts = []
    if per_case:
        rows = [
            [row["case"], f"{row['label']} {row['name']}", *(format_number(row[m]) for m in TABLE_METRICS)]
            for row in result.to_rows()
        ]
        parts.append(render_table(["case", "label", *TABLE_TITLES], rows))
    if len(result.cases) > 1 or not per_case:
        summary = result.summary()
        rows = [
            [
                str(label),
                stats["name"],
                str(stats["n_cases"]),
                f"{format_number(stats['dice']['mean'])} ± {format_number(stats['dice']['std'])}",
                *(format_number(stats[m]["mean"]) for m in TABLE_METRICS[1:]),
                str(stats["n_pred_empty"]),
                str(stats["n_ref_empty"]),
            ]
            for label, stats in summary.items()
        ]
        header = ["label", "name", "cases", "Dice mean ± std", *TABLE_TITLES[1:], "missed", "spurious"]
        parts.append(f"Mean over {len(result.cases)} cases:\n" + render_table(header, rows))
    parts.append(
        f"{_units_text(result)} (HD95: larger directed 95th percentile; NSD tolerance {result.nsd_tolerance_mm:g} "
        f"{_unit_name(result.distance_unit, result.nsd_tolerance_mm)}). 'inf': label missing from prediction or "
        "reference; 'missed'/'spurious' count such cases."
        + (" Metrics counted inside the ROI mask only." if any(case.roi_mask for case in result.cases) else "")
    )
    return "\n\n".join(parts)


def _units_text(result: EvaluationResult) -> str:
    """Which unit the distances are in: mm, pixels (files without physical spacing; no volumes then), or which
    cases are in which."""
    if result.distance_unit == "mm":
        return "Distances in mm"
    if result.distance_unit == "pixel":
        return "Distances in pixels (the files have no pixel spacing; volumes not computed)"
    pixel = [case.case for case in result.cases if case.distance_unit == "pixel"]
    return f"Distances in mm, except in pixels for {len(pixel)} case(s) without pixel spacing (e.g. {pixel[0]})"


def _unit_name(unit: str, amount: float) -> str:
    """The name of the unit of ``amount`` distance units: ``mm``, ``pixel(s)``, or for a mixed result ``mm or
    pixels (the case's unit)``."""
    return {"mm": "mm", "pixel": "pixel" if amount == 1 else "pixels"}.get(unit, "mm or pixels (the case's unit)")


def format_number(value: float | int | str, digits: int = 3) -> str:
    """``0.912`` for floats, ``inf`` spelled out, ``-`` for NaN (not computed), integers as they are."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first two columns (ids, names) and right-align the rest."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if index < 2 else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
