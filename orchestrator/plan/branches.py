"""WSD cooldown branches: one constant-lr run (a *trunk*) per model point serves every compute budget of the
sweep; each budget is a short *cooldown branch* that starts from the trunk's checkpoint at that budget's
decay start (Hägele et al. 2024: constant lr + a short cooldown matches a cosine run to the same length).

```yaml
base:
  preset: tiny
  train: {lr_schedule: wsd, warmup_steps: 20, cooldown_frac: 0.2, cooldown_shape: 1-sqrt}
wsd_branches: true                 # a trunk per point without the budget, a branch per budget
axes:
  width: [16, 32]
  data_hours: [0.05, 0.2]
  compute_budget: [5.0e+10, 1.2e+11, 3.0e+11]   # required: each budget is one cooldown branch
```

The plan is the plain grid's (constraints, seeds, skips and ids of the points all as without branches), regrouped:

* per point without ``compute_budget`` (and per seed) one **trunk** trial: axes ``branch: trunk`` + that point;
  config ``train.branch_budgets`` = the point's budgets that were not skipped, ``train.compute_budget`` and
  ``train.steps`` unset. The trainer runs it at constant lr to the latest branch step and keeps a checkpoint
  at each ``decay_start(steps_for_budget(b, flops_per_step), cooldown_frac)``.
* per budget one **cooldown** trial: axes = the point (with its ``compute_budget``) + ``branch: cooldown``;
  config ``train.branch_from = "sweep:<name>/<trunk id>"``. It loads the trunk's checkpoint at its branch
  step (optimizer state and the flops / data_seen_s counters included) and runs the cooldown to its own
  planned steps, so its logged C and D count the trunk's stable part up to the branch point plus its own:
  a branch end point is an ordinary trial for Approaches 1-3, and a trunk's end point (constant lr) is not
  (``analysis.table`` leaves trunks out).

MLflow: both kinds are tagged ``vits_scaling.branch`` (trunk | cooldown); a cooldown run also carries
``vits_scaling.branch_of`` (its trunk's trial id) and, once the trainer has logged it,
``vits_scaling.branch_step``. The driver runs every trunk to its end before any branch (the ``branch``
phase, like ``stage`` for pretrain -> fine-tune); a branch whose trunk did not finish is not trained and says
why. The dry run shows the FLOPs the branches save against independent runs (``branch_flops``), counted with
the trainer's own rules (``model.counting``, ``steps_for_budget``, ``decay_start``).

Requires ``train.lr_schedule: wsd`` in base, a ``compute_budget`` axis, and the warm-up in steps
(``train.warmup_steps``: a fraction would differ per budget); not combinable with ``stages``.
"""

from __future__ import annotations

from typing import Any

from analysis.mlflow_contract import BRANCH_COOLDOWN, BRANCH_TRUNK, TAG_BRANCH, TAG_BRANCH_OF
from model.config import ConfigError, TrialConfig
from orchestrator.plan.estimate import estimate_plan, trial_seconds
from orchestrator.plan.grid import resolve_grid
from orchestrator.plan.schema import SpecError, SweepSpec
from orchestrator.plan.types import Notes, Plan, Skipped, TrialPlan, trial_id_for, trial_name


def branch_kind(cfg_or_axes: Any) -> str | None:
    """The branch kind of a trial (``trunk`` | ``cooldown``) from its config or axes; None outside branches."""
    axes = cfg_or_axes if isinstance(cfg_or_axes, dict) else cfg_or_axes.axes
    return axes.get("branch")


def trunk_of(cfg: TrialConfig) -> str | None:
    """The trunk trial id a cooldown branch starts from (None for a trunk or a trial outside branches)."""
    if branch_kind(cfg) != BRANCH_COOLDOWN:
        return None
    return cfg.tracking.tags.get(TAG_BRANCH_OF)


def _build(spec: SweepSpec, d: dict[str, Any]) -> TrialConfig:
    try:
        return TrialConfig.from_dict(d, strict=True, where="wsd_branches")
    except ConfigError as e:
        raise SpecError(f"{spec.where()}: {e}") from None


def resolve_branches(spec: SweepSpec, *, count: bool = True) -> Plan:
    """Trunks and their cooldown branches (trunk first, then its branches), and every skipped point."""
    grid = resolve_grid(spec, count=False)
    plan = Plan.start(spec)
    plan.notes = Notes(grid.notes)
    for s in grid.skipped:
        point = {k: v for k, v in s.axes.items() if k != "seed"}
        axes = {**point, "branch": BRANCH_COOLDOWN, "seed": s.seed}
        plan.skipped.append(
            Skipped(trial_id_for({**point, "branch": BRANCH_COOLDOWN}, s.seed), axes, s.seed, s.reason)
        )
    trunks: dict[str, TrialPlan] = {}
    members: dict[str, list[TrialPlan]] = {}
    for tp in grid.trials:
        point = {k: v for k, v in tp.axes.items() if k != "seed"}
        stem = {k: v for k, v in point.items() if k != "compute_budget"}
        trunk_id = trial_id_for({"branch": BRANCH_TRUNK, **stem}, tp.seed)
        if trunk_id not in trunks:
            d = tp.config.to_dict()
            d["train"].update(compute_budget=None, steps=None, branch_budgets=[])
            cfg = _build(spec, d)
            axes = {"branch": BRANCH_TRUNK, **stem, "seed": tp.seed}
            name = f"trunk {trial_name({**stem, 'seed': tp.seed})}"
            plan.finish(cfg, trunk_id, name, axes)
            cfg.tracking.tags[TAG_BRANCH] = BRANCH_TRUNK
            trunks[trunk_id] = TrialPlan(trunk_id, name, axes, tp.seed, cfg)
            members[trunk_id] = []
        d = tp.config.to_dict()
        d["train"]["branch_from"] = f"sweep:{spec.name}/{trunk_id}"
        cfg = _build(spec, d)
        axes = {**point, "branch": BRANCH_COOLDOWN, "seed": tp.seed}
        tid = trial_id_for({**point, "branch": BRANCH_COOLDOWN}, tp.seed)
        name = f"cooldown {tp.name}"
        plan.finish(cfg, tid, name, axes)
        cfg.tracking.tags.update({TAG_BRANCH: BRANCH_COOLDOWN, TAG_BRANCH_OF: trunk_id})
        members[trunk_id].append(TrialPlan(tid, name, axes, tp.seed, cfg, branch_of=trunk_id))
    for trunk_id, trunk in trunks.items():
        trunk.config.train.branch_budgets = sorted({b.config.train.compute_budget for b in members[trunk_id]})
        plan.trials += [trunk, *members[trunk_id]]
    if count and spec.estimate.count:
        estimate_plan(plan)  # sizes and steps; a branch below one step moves to skipped
        plan_branch_steps(plan)
    return plan


def plan_branch_steps(plan: Plan) -> None:
    """After ``estimate_plan``: each branch's branch step (the trainer's ``decay_start`` of its planned steps),
    each trunk's budgets (those still planned), steps (its latest branch step) and time; a trunk left with no
    branch is skipped."""
    from model.train.schedule import decay_start  # the model.train package loads torch

    kept = {tp.trial_id for tp in plan.trials}
    trials = []
    for tp in plan.trials:
        if branch_kind(tp.axes) != BRANCH_TRUNK:
            if tp.trial_id in kept:  # a branch skipped above (or with its trunk) is left out
                trials.append(tp)
            continue
        branches = []
        for b in (b for b in plan.trials if b.branch_of == tp.trial_id):
            if b.steps is not None:
                b.branch_step = int(decay_start(b.steps, b.config.train.cooldown_frac))
            if b.branch_step == 0:  # one step: nothing to share, and the trainer refuses it
                kept.discard(b.trial_id)
                plan.skipped.append(
                    Skipped(
                        b.trial_id,
                        b.axes,
                        b.seed,
                        f"compute_budget {b.config.train.compute_budget:.3g} FLOPs buys {b.steps} step(s): its "
                        "branch point would be step 0 (no constant-lr part to share with the trunk)",
                    )
                )
                continue
            branches.append(b)
        if not branches:
            kept.discard(tp.trial_id)
            plan.skipped.append(
                Skipped(tp.trial_id, tp.axes, tp.seed, "every budget of this trunk was skipped")
            )
            continue
        tp.config.train.branch_budgets = sorted({b.config.train.compute_budget for b in branches})
        for b in branches:
            if b.branch_step is not None and b.flops_per_step:
                b.est_seconds = trial_seconds(plan.spec, b.steps - b.branch_step, b.flops_per_step)
        steps = [b.branch_step for b in branches if b.branch_step is not None]
        tp.steps = max(steps) if steps else None
        if tp.steps and tp.flops_per_step:
            tp.est_seconds = trial_seconds(plan.spec, tp.steps, tp.flops_per_step)
        trials.append(tp)
    plan.trials = trials


def trained_flops(tp: TrialPlan) -> float | None:
    """The FLOPs a planned trial trains itself: steps x FLOPs per step, and for a cooldown branch only the
    steps after its branch point (the trunk trained the rest once); None when not counted."""
    if tp.flops_per_step is None or tp.steps is None:
        return None
    own = tp.steps - tp.branch_step if tp.branch_step is not None else tp.steps
    return max(0, own) * tp.flops_per_step


def branch_flops(plan: Plan) -> dict[str, float] | None:
    """``{"independent", "with_branches", "saving"}``: the FLOPs of running every branch as its own run from
    scratch against trunks + cooldowns; None for a plan without branches or one not counted."""
    branches = [tp for tp in plan.trials if tp.branch_of is not None]
    trunks = [tp for tp in plan.trials if branch_kind(tp.axes) == BRANCH_TRUNK]
    if (
        not branches
        or any(tp.flops_per_step is None or tp.steps is None for tp in branches + trunks)
        or any(b.branch_step is None for b in branches)
    ):
        return None
    independent = sum(b.steps * b.flops_per_step for b in branches)
    shared = sum(trained_flops(tp) for tp in trunks + branches)
    return {"independent": independent, "with_branches": shared, "saving": 1.0 - shared / independent}
