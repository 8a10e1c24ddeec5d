"""How long a trial trains: a step count, or a FLOPs budget divided by the measured FLOPs per step.

Exactly one of ``train.steps`` and ``train.compute_budget`` may be set; with neither, the trial runs
``train.epochs`` epochs (Style-Bert-VITS2's own stopping rule). With a budget, ``steps = floor(budget /
flops_per_step)`` (at least 1), so the compute actually spent, ``steps * flops_per_step``, never exceeds the
budget by more than nothing and falls short of it by less than one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.config import ConfigError, TrialConfig


@dataclass(frozen=True)
class Budget:
    steps: int
    flops_per_step: int
    source: str  # "steps" | "compute_budget" | "epochs"
    compute_budget: float | None = None

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


def plan_budget(cfg: TrialConfig, flops_per_step: int, batches_per_epoch: int) -> Budget:
    t = cfg.train
    if t.steps is not None and t.compute_budget is not None:
        raise ConfigError(
            f"train.steps ({t.steps}) and train.compute_budget ({t.compute_budget:g}) are both set; set one"
        )
    if flops_per_step <= 0:
        raise ValueError(f"flops_per_step must be positive, got {flops_per_step}")
    if t.steps is not None:
        if t.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {t.steps}")
        return Budget(int(t.steps), int(flops_per_step), "steps")
    if t.compute_budget is not None:
        if not t.compute_budget > 0 or math.isinf(t.compute_budget):
            raise ConfigError(
                f"train.compute_budget must be a positive number of FLOPs, got {t.compute_budget}"
            )
        steps = steps_for_budget(t.compute_budget, flops_per_step)
        return Budget(steps, int(flops_per_step), "compute_budget", float(t.compute_budget))
    if t.epochs < 1:
        raise ConfigError(
            "train.epochs must be >= 1 when neither train.steps nor train.compute_budget is set"
        )
    return Budget(int(t.epochs) * max(1, batches_per_epoch), int(flops_per_step), "epochs")
