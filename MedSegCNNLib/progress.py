"""Progress of long work as a stream of events, rendered for a terminal or as JSON lines.

Long-running work (training; prediction through :class:`MedSegCNNLib.inference.progress.PredictionProgress`)
reports to an ``on_event`` callable (an :data:`EventSink`) with :class:`Event` objects; it never prints. A
terminal renders them with :class:`TqdmProgress`; the Slicer panel starts the CLI with ``--progress json`` and
reads one JSON object per line (:class:`JsonLinesProgress`).

Training events (``kind``: fields):
- ``plan``: the training plan (:meth:`MedSegCNNLib.training.planner.TrainingPlan.to_dict`), before loading ends
- ``start``: total_steps (planned), epochs, steps_per_epoch, train_cases, val_cases, device, precision, output,
  patch_size, budget_s (``null`` without a budget), expected_s (the plan's estimate), plan (its description)
- ``step``: epoch, step (global, 1-based), total_steps (changes when a budgeted run re-plans), loss, lr, eta_s
  (with a budget: the time left of it)
- ``epoch``: epoch, train_loss, lr, seconds (since the run began), steps, eta_s
- ``validation``: epoch, mean_dice, dice ({label: value}), best_epoch, best_mean_dice
- ``checkpoint``: epoch, path
- ``message``: level, text
- ``end``: status ("completed", "cancelled", "early_stopped", "time_budget"), epochs_done, steps_done,
  best_epoch, best_mean_dice, model, elapsed_s

Prediction events (``medsegcnn predict --progress json``; built by ``PredictionProgress``):
- ``progress``: stage ("segmenting <case>"), case (1-based index), cases, done and total (sliding windows of
  this case), fraction (of the whole run, 0..1), eta_s (``null`` until known); at most ~5 per second, and
  always for each case's last window
- ``case``: case (name), index (1-based), total, output (the label map written)
- ``metrics``: the evaluation against ``--ref`` (``EvaluationResult.to_json_dict()``), once at the end

:class:`MedSegCNNLib.jobs.BackgroundRun` reads these events from a separate process, and stops it by
writing :data:`STOP_LINE` to its standard input (the CLI answers with :data:`STOP_ACKNOWLEDGED` on stderr).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass(frozen=True)
class Event:
    """One progress event: a ``kind`` and its JSON-serialisable fields."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"event": self.kind, **_finite(self.data)}, separators=(",", ":"))


EventSink = Callable[[Event], None]

STOP_LINE = "stop"
"""The line that stops a command run with ``--stop-on-stdin`` (the parent's side of the channel)."""
STOP_ACKNOWLEDGED = "Stop requested on standard input."
"""Logged (stderr) when :data:`STOP_LINE` arrives: how a parent knows that the request got through."""


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class JsonLinesProgress:
    """Writes each event as one JSON object per line (flushed at once) to ``stream`` (stdout by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


class TqdmProgress:
    """A tqdm bar on stderr: over training steps (validation results and messages are printed above it), or
    over the images of a prediction (from its ``progress`` and ``case`` events)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None

    def __call__(self, event: Event) -> None:
        from tqdm import tqdm

        data = event.data
        if event.kind == "start":
            self.bar = tqdm(total=data["total_steps"], unit="step", file=self.stream, dynamic_ncols=True)
            self._write(
                f"Training on {data['device']} ({data['precision']}): {data['train_cases']} training and "
                f"{data['val_cases']} validation cases, {data['epochs']} epochs x {data['steps_per_epoch']} steps."
            )
        elif event.kind == "step" and self.bar is not None:
            if data.get("total_steps", self.bar.total) != self.bar.total:  # re-planned
                self.bar.total = data["total_steps"]
            self.bar.update(data["step"] - self.bar.n)
            self.bar.set_postfix(epoch=data["epoch"], loss=f"{data['loss']:.4f}", lr=f"{data['lr']:.2e}", refresh=False)
        elif event.kind == "validation":
            dice = ", ".join(f"{label}: {value:.3f}" for label, value in data["dice"].items())
            self._write(
                f"epoch {data['epoch']}: validation mean Dice {data['mean_dice']:.4f} ({dice}); "
                f"best {data['best_mean_dice']:.4f} at epoch {data['best_epoch']}"
            )
        elif event.kind == "progress" and self.bar is None:  # a prediction's first window
            self.bar = tqdm(total=data["cases"], unit="image", file=self.stream, desc="segmenting")
        elif event.kind == "case" and self.bar is not None:
            self.bar.update(data["index"] - self.bar.n)
            if data["index"] == data["total"]:
                self.bar.close()
        elif event.kind == "message":
            self._write(data["text"])
        elif event.kind == "end":
            if self.bar is not None:
                self.bar.close()
            self._write(f"Training {data['status']} after {data['epochs_done']} epochs; model: {data['model']}")

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)
