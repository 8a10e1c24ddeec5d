"""A sweep without stages resolved into its plan: every point x seed built on the base config, with a stable
id, checked against the built-in skip reasons and the ``constraints``, then sized and timed.
"""

from __future__ import annotations

from orchestrator.expr import Expr, ExprError
from orchestrator.plan.checks import skip_reason
from orchestrator.plan.estimate import estimate_plan
from orchestrator.plan.points import base_config, build_point, constraint_env, sweep_points
from orchestrator.plan.schema import SpecError, SweepSpec
from orchestrator.plan.types import Plan, Skipped, TrialPlan, trial_id_for, trial_name


def resolve_grid(spec: SweepSpec, *, count: bool = True) -> Plan:
    """Every trial of a sweep without stages (config, id, sizes, steps, estimate) and every skipped point."""
    where = spec.where()
    base = base_config(spec)
    plan = Plan.start(spec)
    constraints = [(text, Expr(text)) for text in spec.constraints]
    seen: dict[str, str] = {}
    hours_cache: dict[str, float | None] = {}
    for point in sweep_points(spec):
        for seed in spec.seed_list(base.train.seed):
            cfg, axes = build_point(spec, base, point, seed)
            axes = {**axes, "seed": seed}
            tid = trial_id_for(point, seed)
            name = trial_name(axes)
            if tid in seen:
                plan.skipped.append(Skipped(tid, axes, seed, f"duplicate of the point {seen[tid]}"))
                continue
            seen[tid] = name
            reason = skip_reason(cfg, hours_cache, plan.notes)
            if reason is None:
                env = constraint_env(cfg, point, seed)
                for i, (text, ex) in enumerate(constraints):
                    try:
                        ok = ex(env)
                    except ExprError as e:
                        raise SpecError(f"{where}: constraints[{i}]: {e}") from None
                    if not ok:
                        reason = f"constraint {text!r} is false"
                        break
            if reason is not None:
                plan.skipped.append(Skipped(tid, axes, seed, reason))
                continue
            plan.finish(cfg, tid, name, axes)
            plan.trials.append(TrialPlan(tid, name, axes, seed, cfg, steps=cfg.train.steps))
    if count and spec.estimate.count:
        estimate_plan(plan)
    if not plan.trials:
        reasons = sorted({s.reason for s in plan.skipped})
        shown = "; ".join(reasons[:5]) + (f"; ... ({len(reasons) - 5} more)" if len(reasons) > 5 else "")
        raise SpecError(
            f"{where}: no trials left after the constraints ({len(plan.skipped)} skipped: {shown})"
        )
    return plan
