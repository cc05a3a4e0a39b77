"""The re-planning rule and time accounting of a budgeted run (:mod:`.budget`), and the card's validation
summary (:mod:`.card`), without training."""

from __future__ import annotations

import pytest

from MedSegCNNLib.progress import Event
from MedSegCNNLib.training.budget import REPLAN_EVERY, SKIPPED_STEPS, RunBudget, affordable_total
from MedSegCNNLib.training.card import validation_summary


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_budget(budget_seconds: float | None = 100.0) -> tuple[RunBudget, Clock, list[Event]]:
    clock, events = Clock(), []
    budget = RunBudget(
        budget_seconds=budget_seconds, planned_step_seconds=0.5, clock=clock, started=0.0, emit=events.append
    )
    return budget, clock, events


def timed_steps(budget: RunBudget, clock: Clock, count: int, seconds: float) -> None:
    for _ in range(count):
        started = clock.now
        clock.now += seconds
        budget.record_step(started, clock.now)


def test_affordable_total_keeps_the_plan_within_the_tolerance():
    assert affordable_total(50, 100, 25.0, 0.5) == 100  # exactly what is planned
    assert affordable_total(0, 1000, 499.0, 0.5) == 1000  # 2 steps fewer: within 1 % of the 1000 left
    assert affordable_total(50, 100, 10.0, 0.5) == 70
    assert affordable_total(50, 100, 40.0, 0.5) == 130


def test_the_first_steps_of_a_process_are_not_timed_and_the_mean_replaces_the_plan():
    budget, clock, _ = run_budget()
    assert budget.mean_step_seconds() == 0.5
    timed_steps(budget, clock, SKIPPED_STEPS, 5.0)
    assert budget.mean_step_seconds() == 0.5
    timed_steps(budget, clock, 4, 1.0)
    assert budget.mean_step_seconds() == pytest.approx(1.0)


def test_seconds_left_is_the_budget_left_or_the_steps_and_validations_left():
    budget, clock, _ = run_budget(100.0)
    clock.now = 30.0
    assert budget.seconds_left(steps_left=10, validations_left=2) == 70.0
    clock.now = 130.0
    assert budget.seconds_left(steps_left=10, validations_left=2) == 0.0
    unbudgeted, _, _ = run_budget(None)
    unbudgeted.validation_seconds = 3.0
    assert unbudgeted.seconds_left(steps_left=10, validations_left=2) == pytest.approx(11.0)


def test_a_slower_machine_is_replanned_and_announced():
    budget, clock, events = run_budget(100.0)
    timed_steps(budget, clock, SKIPPED_STEPS + REPLAN_EVERY, 1.0)  # twice the plan's 0.5 s
    done = SKIPPED_STEPS + REPLAN_EVERY
    total = budget.replanned_total(done, 200, validations_left=0)
    # 100 s less 12 s spent and the 10 s reserve leave 78 s: 78 steps of 1 s
    assert total == done + 78 and budget.replans == 1 and budget.last_replan_step == done
    assert [event.data["text"] for event in events] == [
        "Re-planned: steps take 1.000 s (planned 0.500 s); 90 steps instead of 200, the learning-rate schedule "
        "still ends at the 1.7 min budget."
    ]
    assert budget.replanned_total(done + 1, total, validations_left=0) == total  # not again within REPLAN_EVERY


def test_a_spent_budget_ends_the_schedule_at_the_steps_done():
    budget, clock, events = run_budget(100.0)
    clock.now = 95.0  # beyond the budget less its reserve
    assert budget.replanned_total(40, 100, validations_left=0) == 40
    assert budget.budget_cut and budget.replans == 1 and "the time budget is used up" in events[0].data["text"]
    unbudgeted, _, _ = run_budget(None)
    assert unbudgeted.replanned_total(40, 100, validations_left=0) == 100


def test_the_budget_state_goes_through_a_checkpoint():
    budget, clock, _ = run_budget()
    clock.now, budget.replans, budget.validation_seconds = 12.0, 2, 1.5
    resumed, _, _ = run_budget()
    resumed.load_state_dict(budget.state_dict(), steps_done=30)
    assert (resumed.elapsed(), resumed.replans, resumed.validation_seconds) == (12.0, 2, 1.5)
    assert resumed.last_replan_step == 30


def test_validation_summary_of_the_best_and_the_final_weights():
    kwargs = {"epoch": 5, "best_epoch": 3, "best_mean_dice": 0.8, "best_dice": {1: 0.8}, "last_dice": {1: 0.6}}
    assert validation_summary("best", **kwargs) == {
        "epoch": 3,
        "mean_dice": 0.8,
        "dice": {"1": 0.8},
        "best_epoch": 3,
        "best_mean_dice": 0.8,
    }
    assert validation_summary("final", **kwargs)["epoch"] == 5
    assert validation_summary("final", **kwargs)["mean_dice"] == pytest.approx(0.6)
    assert validation_summary("final", **{**kwargs, "best_epoch": None}) is None
