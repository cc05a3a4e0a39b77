"""Segmentation metrics: overlap, surface distances, per-case evaluation and summaries.

See :mod:`MedSegCNNLib.metrics.label_metrics` for the exact definitions and the empty-mask policy.
"""

from .evaluate import evaluate
from .label_metrics import LabelMetrics, compute_label_metrics
from .result import CaseEvaluation, EvaluationResult

__all__ = ["CaseEvaluation", "EvaluationResult", "LabelMetrics", "compute_label_metrics", "evaluate"]
