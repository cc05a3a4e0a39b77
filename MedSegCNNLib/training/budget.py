"""A run against its time budget: elapsed time, the measured step time, the time left, and re-planning.

While a budgeted run trains, the mean of the last ``REPLAN_WINDOW`` step times (the first ``SKIPPED_STEPS``
of a process warm kernels up and are not counted) sets the number of steps that still fit: the time left is
the budget less the time elapsed (earlier processes of a resumed run included), the reserve
(:func:`.planner.reserve_seconds`) and the validations still to come (each as long as the last one). The
schedule is re-planned at most every ``REPLAN_EVERY`` steps, when the new total differs by more than
``REPLAN_TOLERANCE`` of the steps left (:func:`affordable_total`); when the budget is used up the total
becomes the steps done, and the run ends with its schedule cut (:attr:`RunBudget.budget_cut`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..progress import Event, EventSink
from .planner import reserve_seconds

logger = logging.getLogger(__name__)

#: Steps averaged, steps skipped per process, steps between re-plans, and the change (a fraction of the steps
#: left) below which the plan stands; see the module docstring.
REPLAN_WINDOW, SKIPPED_STEPS, REPLAN_EVERY, REPLAN_TOLERANCE = 20, 2, 10, 0.01


def affordable_total(steps_done: int, total_steps: int, time_left: float, step_seconds: float) -> int:
    """The total number of steps when ``time_left`` seconds at ``step_seconds`` per step follow ``steps_done``;
    ``total_steps`` itself when that differs by at most ``REPLAN_TOLERANCE`` of the steps left (at least 1)."""
    affordable = steps_done + math.floor(time_left / step_seconds)
    if abs(affordable - total_steps) <= max(1, REPLAN_TOLERANCE * (total_steps - steps_done)):
        return total_steps
    return affordable


@dataclass
class RunBudget:
    """The time of one run (seconds on ``clock``, from ``started`` in this process) against its budget
    (``budget_seconds``, ``None`` without one); re-plans are announced to ``emit``."""

    budget_seconds: float | None
    planned_step_seconds: float  # the plan's step time
    clock: Callable[[], float]
    started: float
    emit: EventSink
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run (resume)
    replans: int = 0
    budget_cut: bool = False  # the budget ran out before the schedule ended
    validation_seconds: float = 0.0  # duration of the last validation
    last_replan_step: int = 0
    steps_timed: int = 0  # steps this process has timed (the first SKIPPED_STEPS are not counted)
    step_durations: deque = field(default_factory=lambda: deque(maxlen=REPLAN_WINDOW))

    def elapsed(self) -> float:
        """Seconds this run has taken so far, earlier processes (before a resume) included."""
        return self.elapsed_before + self.clock() - self.started

    def record_step(self, started: float, ended: float) -> None:
        """Count a step that ran from ``started`` to ``ended`` (clock seconds)."""
        self.steps_timed += 1
        if self.steps_timed > SKIPPED_STEPS:
            self.step_durations.append(ended - started)

    def mean_step_seconds(self) -> float:
        """The mean measured step time (the plan's before any is measured)."""
        if self.step_durations:
            return float(np.mean(self.step_durations))
        return self.planned_step_seconds

    def seconds_left(self, steps_left: int, validations_left: int) -> float:
        """The expected time to the end: what is left of the budget, else the steps and validations left."""
        if self.budget_seconds is not None:
            return max(0.0, self.budget_seconds - self.elapsed())
        return steps_left * self.mean_step_seconds() + self.validation_seconds * validations_left

    def replanned_total(self, steps_done: int, total_steps: int, validations_left: int) -> int:
        """The total number of steps that ends the schedule at the budget, measured so far (module docstring)."""
        budget = self.budget_seconds
        if budget is None:
            return total_steps
        time_left = budget - self.elapsed() - reserve_seconds(budget) - self.validation_seconds * validations_left
        if time_left <= 0:
            if steps_done < total_steps:
                self.budget_cut = True
                self._announce(steps_done, total_steps, "the time budget is used up")
            return steps_done
        if len(self.step_durations) < REPLAN_EVERY or steps_done - self.last_replan_step < REPLAN_EVERY:
            return total_steps
        affordable = affordable_total(steps_done, total_steps, time_left, self.mean_step_seconds())
        if affordable == total_steps:
            return total_steps
        self.last_replan_step = steps_done
        self._announce(affordable, total_steps, f"steps take {self.mean_step_seconds():.3f} s")
        return affordable

    def _announce(self, total: int, planned: int, reason: str) -> None:
        self.replans += 1
        text = (
            f"Re-planned: {reason} (planned {self.planned_step_seconds:.3f} s); {total} steps instead of "
            f"{planned}, the learning-rate schedule still ends at the {self.budget_seconds / 60:.1f} min budget."
        )
        if abs(total - planned) > 0.1 * planned:
            logger.info("%s", text)
            self.emit(Event("message", {"level": "info", "text": text}))
        else:
            logger.debug("%s", text)

    def state_dict(self) -> dict[str, Any]:
        """The fields a checkpoint keeps (``elapsed_seconds`` as of now)."""
        return {
            "elapsed_seconds": self.elapsed(),
            "replans": self.replans,
            "validation_seconds": self.validation_seconds,
        }

    def load_state_dict(self, state: Mapping[str, Any], steps_done: int) -> None:
        """Continue from a checkpoint's fields, saved at ``steps_done`` steps."""
        self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
        self.replans = int(state.get("replans", 0))
        self.validation_seconds = float(state.get("validation_seconds", 0.0))
        self.last_replan_step = steps_done
