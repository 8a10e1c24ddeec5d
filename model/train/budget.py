"""How long a trial trains: a step count, or a FLOPs budget divided by the measured FLOPs per step.

Exactly one of ``train.steps`` and ``train.compute_budget`` may be set; with neither, the trial runs
``train.epochs`` epochs (Style-Bert-VITS2's own stopping rule). With a budget, ``steps = floor(budget /
flops_per_step)`` (at least 1), so the compute actually spent, ``steps * flops_per_step``, never exceeds the
budget by more than nothing and falls short of it by less than one step.

WSD trunk and branches (docs/recipe.md): for each budget ``b`` of a trunk's ``train.branch_budgets``,
``T_b = steps_for_budget(b, flops_per_step)`` and its branch point ``s_b = decay_start(T_b,
cooldown_frac)``; the trunk plans ``max(s_b)`` steps at constant lr. A branch (``train.branch_from``)
plans ``T_b`` of its own budget and starts at ``s_b`` from the trunk's checkpoint there.

The plan also fixes the lr schedule (``Budget.schedule``, ``model.train.schedule.plan_schedule``), so a
bad schedule (a warm-up longer than the plan) is refused here, before the first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.config import ConfigError, TrialConfig
from model.train.schedule import SchedulePlan, decay_start, plan_schedule


@dataclass(frozen=True)
class Budget:
    steps: int
    flops_per_step: int
    source: str  # "steps" | "compute_budget" | "epochs" | "branch_budgets" (a WSD trunk)
    compute_budget: float | None = None
    schedule: SchedulePlan | None = None  # the lr curve over these steps
    branch_points: dict[float, tuple[int, int]] | None = None  # a trunk: budget -> (T_b, s_b)
    branch_step: int | None = None  # a branch: s_b, the trunk step it starts from

    @property
    def total_flops(self) -> float:
        """Planned compute: steps x FLOPs per step."""
        return float(self.steps) * float(self.flops_per_step)


def steps_for_budget(compute_budget: float, flops_per_step: float) -> int:
    """Optimizer steps a FLOPs budget buys: ``floor(budget / flops_per_step)``, at least 1.

    The one home of the rule: the trainer (``plan_budget``) and the sweep's pre-launch estimate
    (``orchestrator.plan.estimate``) both call it, so the steps a sweep table shows are the steps a trial runs.
    """
    return max(1, int(compute_budget // flops_per_step))


def branch_point(compute_budget: float, flops_per_step: float, cooldown_frac: float) -> tuple[int, int]:
    """``(T_b, s_b)`` of a WSD budget: its steps and the first step of its cooldown (the branch point)."""
    total = steps_for_budget(compute_budget, flops_per_step)
    return total, decay_start(total, cooldown_frac)


def plan_budget(cfg: TrialConfig, flops_per_step: int, batches_per_epoch: int) -> Budget:
    """Steps and lr schedule of a trial (see the module docstring); ``ConfigError`` names the field."""
    steps, source, budget, points, branch_step = _steps(cfg, flops_per_step, batches_per_epoch)
    schedule = plan_schedule(
        cfg.train,
        steps,
        batches_per_epoch=batches_per_epoch,
        branch_points=tuple(s for _, s in points.values()) if points else (),
    )
    return Budget(steps, int(flops_per_step), source, budget, schedule, points, branch_step)


def _steps(cfg: TrialConfig, flops_per_step: int, batches_per_epoch: int):
    t = cfg.train
    if t.steps is not None and t.compute_budget is not None:
        raise ConfigError(
            f"train.steps ({t.steps}) and train.compute_budget ({t.compute_budget:g}) are both set; set one"
        )
    if flops_per_step <= 0:
        raise ValueError(f"flops_per_step must be positive, got {flops_per_step}")
    if t.branch_budgets:
        points = {b: branch_point(b, flops_per_step, t.cooldown_frac) for b in t.branch_budgets}
        for i, b in enumerate(t.branch_budgets):
            if points[b][1] < 1:
                raise ConfigError(
                    f"train.branch_budgets[{i}]: {b:g} FLOPs buy {points[b][0]} step(s) of "
                    f"{flops_per_step:g} FLOPs; its cooldown would start at step 0 (no trunk to share)"
                )
        return max(s for _, s in points.values()), "branch_budgets", None, points, None
    if t.steps is not None:
        if t.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {t.steps}")
        return int(t.steps), "steps", None, None, None
    if t.compute_budget is not None:
        if not t.compute_budget > 0 or math.isinf(t.compute_budget):
            raise ConfigError(
                f"train.compute_budget must be a positive number of FLOPs, got {t.compute_budget}"
            )
        steps, start = branch_point(t.compute_budget, flops_per_step, t.cooldown_frac)
        branch_step = start if t.branch_from is not None else None
        return steps, "compute_budget", float(t.compute_budget), None, branch_step
    if t.epochs < 1:
        raise ConfigError(
            "train.epochs must be >= 1 when neither train.steps nor train.compute_budget is set"
        )
    return int(t.epochs) * max(1, batches_per_epoch), "epochs", None, None, None
