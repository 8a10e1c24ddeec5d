"""Learning-rate schedules: the one home of the lr curve a trial follows (formulas in docs/recipe.md).

A schedule is a multiplicative factor on each parameter group's own base lr (``torch`` ``LambdaLR``), so
per-group lrs (muP) keep their ratios, and the generator's and every discriminator's optimizer follow the
same factor. The factor is a pure function of the optimizer step and the trial's plan:
``lr_factor(step, plan)`` is the factor of update number ``step + 1`` (``step`` updates already taken);
``model.step.train_step`` advances the schedulers after each update, so ``TrainState.step`` is always the
step the next update uses.

``train.lr_schedule``:

- ``sbv2``: ``lr_decay ** (step // decay_every)`` with ``decay_every`` = batches per epoch
  (``scheduler_per: epoch``, Style-Bert-VITS2's ExponentialLR stepped once per epoch) or 1
  (``scheduler_per: step``). No warm-up.
- ``cosine``: linear warm-up over ``W`` steps, then cosine from the peak to ``min_lr_frac`` at the
  planned last update (step ``T - 1``).
- ``wsd``: warm-up, constant, then decay over the last ``K = round(cooldown_frac * T)`` planned steps
  (first decayed update: ``decay_start(T, cooldown_frac) = T - K``) to ``min_lr_frac``, linear or 1-sqrt.
- ``constant``: warm-up, then the peak (the WSD trunk: a trial with ``train.branch_budgets`` runs this).

Warm-up: ``factor = (step + 1) / W`` for ``step < W`` (the last warm-up update is at the peak), ``W`` =
``train.warmup_steps`` or ``round(train.warmup_frac * T)``. Decay: with ``D`` the first decayed step,
``p = (step - D + 1) / (T - D)`` clipped to [0, 1] and ``factor = m + (1 - m) * shape(p)``, ``shape`` =
``(1 + cos(pi p)) / 2`` (cosine, ``D = W``), ``1 - p`` (linear) or ``1 - sqrt(p)`` (1-sqrt).

The orchestrator calls ``decay_start`` (branch points of a WSD sweep) and ``lr_factor`` (curves).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from model.config import ConfigError, TrainConfig, check_train


@dataclass(frozen=True)
class SchedulePlan:
    """Everything the lr curve of one trial depends on: its settings and its planned steps.

    ``kind`` is the schedule as run (a trunk, configured ``wsd``, runs ``constant``); fields a kind does not
    use are None, so two plans compare equal exactly when their curves (and branch points) are the same.
    Stored in every checkpoint: a resume whose plan differs is refused (``checkpoint.check_compatible``).
    """

    kind: str  # sbv2 | cosine | wsd | constant
    total_steps: int  # planned optimizer steps (a trunk: its last branch point)
    learning_rate: float  # the peak (the factor multiplies each group's base lr; this is the default one)
    warmup_steps: int = 0
    min_lr_frac: float | None = None  # cosine, wsd
    cooldown_frac: float | None = None  # wsd
    cooldown_shape: str | None = None  # wsd
    lr_decay: float | None = None  # sbv2
    decay_every: int | None = None  # sbv2: steps per lr_decay (batches per epoch, or 1)
    branch_points: tuple[int, ...] = ()  # a trunk: decay_start of each branch budget, sorted

    def to_dict(self) -> dict:
        d = asdict(self)
        d["branch_points"] = list(self.branch_points)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SchedulePlan:
        return cls(**{**d, "branch_points": tuple(d.get("branch_points", ()))})


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def cooldown_steps(total_steps: int, cooldown_frac: float) -> int:
    """``K``: the number of decayed steps at the end of a WSD run of ``total_steps`` (1 <= K <= total)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return min(total_steps, max(1, round_half_up(cooldown_frac * total_steps)))


def decay_start(total_steps: int, cooldown_frac: float) -> int:
    """The first step of the WSD cooldown of a run of ``total_steps``: ``T - round(cooldown_frac * T)``.

    Steps ``0 .. decay_start - 1`` run at warm-up + constant lr; a trunk's checkpoint after exactly
    ``decay_start`` updates is where the cooldown branch of that budget starts."""
    return total_steps - cooldown_steps(total_steps, cooldown_frac)


def _shape(p: float, shape: str) -> float:
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if shape == "linear":
        return 1.0 - p
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(p)
    raise ValueError(f"unknown decay shape {shape!r}")


def lr_factor(step: int, plan: SchedulePlan) -> float:
    """The lr factor of the update taken after ``step`` updates (see the module docstring)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if plan.kind == "sbv2":
        return float(plan.lr_decay) ** (step // int(plan.decay_every))
    w = plan.warmup_steps
    if step < w:
        return (step + 1) / w
    if plan.kind == "constant":
        return 1.0
    if plan.kind == "cosine":
        start, shape = w, "cosine"
    elif plan.kind == "wsd":
        start, shape = decay_start(plan.total_steps, plan.cooldown_frac), plan.cooldown_shape
    else:
        raise ValueError(f"unknown schedule {plan.kind!r}")
    n = plan.total_steps - start
    if step < start or n <= 0:
        return 1.0
    p = min(1.0, (step - start + 1) / n)
    m = float(plan.min_lr_frac)
    return m + (1.0 - m) * _shape(p, shape)


def lr_lambda(plan: SchedulePlan) -> Callable[[int], float]:
    """The factor as ``LambdaLR``'s ``lr_lambda``: a plain function, so a scheduler's state dict never
    carries the plan (a branch loads a trunk's schedulers and keeps its own curve)."""

    def factor(step: int) -> float:
        return lr_factor(step, plan)

    return factor


def warmup_for(t: TrainConfig, total_steps: int) -> int:
    """Warm-up steps: ``warmup_steps``, or ``round(warmup_frac * total_steps)``."""
    if t.warmup_frac is not None:
        return round_half_up(t.warmup_frac * total_steps)
    return int(t.warmup_steps)


def plan_schedule(
    t: TrainConfig,
    total_steps: int,
    *,
    batches_per_epoch: int = 1,
    branch_points: tuple[int, ...] = (),
    where: str = "train",
) -> SchedulePlan:
    """The plan of a trial of ``total_steps`` planned steps; ``ConfigError`` (naming the field) for a
    warm-up longer than the plan: past ``total_steps`` (cosine, constant), past the cooldown start (wsd), or
    past the first branch point (a trunk, ``branch_points`` given)."""
    check_train(t, where)
    if total_steps < 1:
        raise ConfigError(f"{where}: the plan has {total_steps} steps; it needs at least one")
    kind = "constant" if branch_points else t.lr_schedule
    if kind == "sbv2":
        every = max(1, int(batches_per_epoch)) if t.scheduler_per == "epoch" else 1
        return SchedulePlan("sbv2", total_steps, t.learning_rate, lr_decay=t.lr_decay, decay_every=every)
    w = warmup_for(t, total_steps)
    field = "warmup_frac" if t.warmup_frac is not None else "warmup_steps"
    if branch_points:
        limit, what = min(branch_points), f"the first branch point (step {min(branch_points)})"
    elif kind == "wsd":
        limit = decay_start(total_steps, t.cooldown_frac)
        what = f"the cooldown start (step {limit} of {total_steps} planned)"
    else:
        limit, what = total_steps, f"the plan ({total_steps} steps)"
    if w > limit:
        raise ConfigError(f"{where}.{field}: the warm-up ({w} steps) is longer than {what}")
    return SchedulePlan(
        kind,
        total_steps,
        t.learning_rate,
        warmup_steps=w,
        min_lr_frac=t.min_lr_frac if kind in ("cosine", "wsd") else None,
        cooldown_frac=t.cooldown_frac if kind == "wsd" else None,
        cooldown_shape=t.cooldown_shape if kind == "wsd" else None,
        branch_points=tuple(sorted(set(branch_points))),
    )


LENGTH_FREE = ("sbv2", "constant")  # kinds whose curve does not depend on the planned steps


def curve_settings(plan: dict) -> dict:
    """What of a stored plan (``SchedulePlan.to_dict()``) fixes its lr curve: all of it, except the planned
    steps for ``sbv2`` and ``constant`` (their curves do not depend on the length, so a resume may extend
    such a trial; a cosine or wsd one would change its curve and is refused)."""
    if plan.get("kind") in LENGTH_FREE:
        return {k: v for k, v in plan.items() if k != "total_steps"}
    return dict(plan)


def first_difference(a: SchedulePlan, b: SchedulePlan, until: int) -> int | None:
    """The first step below ``until`` where the two plans' factors differ (None: the same curve up to it)."""
    for s in range(until):
        if lr_factor(s, a) != lr_factor(s, b):
            return s
    return None
