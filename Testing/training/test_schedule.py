"""The learning-rate schedule: warm-up, poly/cosine decay to zero at the planned step, re-planning without a jump."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.training.schedule import LearningRateSchedule


def optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def rates(schedule: LearningRateSchedule, steps: int) -> list[float]:
    """The rate used by each of the next ``steps`` steps."""
    out = []
    for _ in range(steps):
        out.append(schedule.get_last_lr()[0])
        schedule.step()
    return out


def test_poly_without_warmup_equals_torch_polynomial_lr():
    ours = LearningRateSchedule(optimizer(), total_steps=20, kind="poly", power=0.9)
    reference_optimizer = optimizer()
    reference = torch.optim.lr_scheduler.PolynomialLR(reference_optimizer, total_iters=20, power=0.9)
    expected = []
    for _ in range(20):
        expected.append(reference_optimizer.param_groups[0]["lr"])
        reference_optimizer.step()
        reference.step()
    assert rates(ours, 20) == pytest.approx(expected, rel=1e-12)
    assert ours.get_last_lr()[0] == 0.0


def test_warmup_is_linear_and_cosine_reaches_zero_at_the_last_step():
    schedule = LearningRateSchedule(optimizer(0.1), total_steps=30, kind="cosine", warmup_steps=10)
    used = rates(schedule, 30)
    assert used[:10] == pytest.approx([0.1 * (k + 1) / 10 for k in range(10)])
    assert used[10] == pytest.approx(0.1)  # decay starts from the full rate
    assert all(a >= b for a, b in itertools.pairwise(used[10:]))
    assert used[29] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("kind", ["poly", "cosine"])
@pytest.mark.parametrize("new_total", [60, 140])
def test_replanning_continues_from_the_current_rate_and_still_ends_at_zero(kind, new_total):
    schedule = LearningRateSchedule(optimizer(0.01), total_steps=100, kind=kind, warmup_steps=5)
    rates(schedule, 40)
    before = schedule.get_last_lr()[0]
    schedule.replan(new_total)
    assert schedule.get_last_lr()[0] == pytest.approx(before)  # no jump
    used = rates(schedule, new_total - 40)
    assert all(a >= b for a, b in itertools.pairwise(used))
    assert schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-15)


def test_replanning_below_the_steps_done_ends_the_schedule_now():
    schedule = LearningRateSchedule(optimizer(), total_steps=50)
    rates(schedule, 20)
    schedule.replan(10)
    assert schedule.total_steps == 20 and schedule.get_last_lr()[0] == 0.0


def test_state_dict_round_trip_resumes_the_same_rates():
    schedule = LearningRateSchedule(optimizer(), total_steps=80, kind="cosine", warmup_steps=8)
    rates(schedule, 30)
    schedule.replan(70)
    rates(schedule, 5)
    restored = LearningRateSchedule(optimizer(), total_steps=1)
    restored.load_state_dict(schedule.state_dict())
    assert rates(restored, 35) == pytest.approx(rates(schedule, 35))


def test_bad_schedules_are_refused():
    with pytest.raises(InputError, match="lr_schedule"):
        LearningRateSchedule(optimizer(), total_steps=10, kind="step")
    with pytest.raises(InputError, match="warmup_steps"):
        LearningRateSchedule(optimizer(), total_steps=10, warmup_steps=11)
