"""Pretraining then fine-tuning: a sweep's ``stages`` resolved into one plan of pretrain and fine-tune trials
(the checks of ``stages`` are in ``orchestrator.plan.checks``, its vocabulary in ``orchestrator.plan.schema``).

```yaml
base: {preset: tiny, ...}            # shared by both stages
stages:
  pretrain:                          # a grid like a plain sweep's, plus data/model/train/eval overrides
    data: {corpus: reazonspeech}
    axes: {width: [192, 384], data_hours: [100, 1000], compute_budget: [1e18]}
  finetune:
    data: {corpus: jsut, n_speakers: 1}
    axes: {data_hours: [0.5, 2, 8], steps: [2000]}
    from: all                        # or [<trial id>, {width: 384}, "sweep:<name>/<trial id>", <path>]
    scratch: true                    # + the same fine-tune trials from scratch (the controls)
    init_speakers: resize            # train.init_speakers
    freeze: []                       # train.freeze
```

Pretrain trials have axes ``stage: pretrain`` + their grid point. Fine-tune trials have ``stage: finetune``,
the parent's model axes (``width``, ``n_layers``, ``model.*``...), the parent's other axes as
``pretrain.<name>`` (e.g. ``pretrain.data_hours``), the fine-tune point and ``from`` (the parent trial id,
the external reference, or ``scratch``). Their MLflow runs are tagged ``vits_scaling.stage`` and
``vits_scaling.from_trial``. The driver (``orchestrator.driver``) runs the pretrain stage to completion, then
the fine-tune stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.mlflow_contract import TAG_FROM, TAG_STAGE
from model.config import TrialConfig
from orchestrator import state as st  # a module object: state imports plan.load, so it may be mid-import here
from orchestrator.plan.estimate import estimate_plan
from orchestrator.plan.grid import resolve_grid
from orchestrator.plan.points import check_value
from orchestrator.plan.schema import (
    SCRATCH,
    SpecError,
    SweepSpec,
    in_stage,
    is_external_ref,
    is_model_axis,
    stage_spec,
)
from orchestrator.plan.types import Plan, Skipped, TrialPlan, canon, fmt_value, trial_id_for


def stage_of(cfg_or_axes: Any) -> str | None:
    """The stage of a trial (its config or its axes), None for a sweep without stages."""
    axes = cfg_or_axes if isinstance(cfg_or_axes, dict) else cfg_or_axes.axes
    return axes.get("stage")


# ----------------------------------------------------------------------------------------------------
# parents


@dataclass
class Parent:
    key: str  # the `from` value: a trial id, an external reference, or "scratch"
    model: dict[str, Any]
    model_axes: dict[str, Any] = field(default_factory=dict)
    other_axes: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


def _of_trial(tp: TrialPlan) -> Parent:
    axes = {k: v for k, v in tp.axes.items() if k not in ("stage", "seed")}
    return Parent(
        key=tp.trial_id,
        model=tp.config.to_dict()["model"],
        model_axes={k: v for k, v in axes.items() if is_model_axis(k)},
        other_axes={f"pretrain.{k}": v for k, v in axes.items() if not is_model_axis(k)},
        init_from=tp.config.output_dir,
    )


def _external_parent(spec: SweepSpec, ref: str, path: str) -> Parent:
    from model.train import checkpoint as ckpt  # torch: only for a `from` naming a checkpoint

    where = spec.where()
    if ref.startswith("sweep:"):
        name, _, tid = ref[len("sweep:") :].partition("/")
        try:
            sweep_dir = st.find_sweep(name, spec.storage_path)
        except st.SweepNotFound as e:
            raise SpecError(f"{where}: {path}: {ref!r}: {e}") from None
        trials = st.load_trials(sweep_dir)
        if tid not in trials:
            shown = ", ".join(f"{k} ({v.get('name')})" for k, v in list(trials.items())[:8])
            raise SpecError(
                f"{where}: {path}: {ref!r}: sweep {name!r} has no trial {tid!r} (it has: {shown})"
            )
        trial_dir = Path(trials[tid]["output_dir"])
        if ckpt.latest_checkpoint(trial_dir / "checkpoints") is None:
            raise SpecError(
                f"{where}: {path}: {ref!r}: that trial has no checkpoint yet in {trial_dir / 'checkpoints'} "
                "(finish or resume that sweep first)"
            )
        return Parent(ref, trials[tid]["model"], init_from=str(trial_dir))
    from model.train.init import InitError, resolve_init_path  # torch, as above

    p = Path(ref).expanduser()
    if not p.is_absolute() and spec.source is not None:
        p = spec.source.parent / p
    try:
        f = resolve_init_path(str(p), TrialConfig())
        payload = ckpt.load_checkpoint(f)
    except (InitError, ckpt.CheckpointMismatch) as e:
        raise SpecError(f"{where}: {path}: {e}") from None
    return Parent(ref, payload["config"]["model"], init_from=str(p.resolve()))


def select_parents(spec: SweepSpec, pre: list[TrialPlan], skipped: list[Skipped]) -> list[Parent]:
    """The models the fine-tune stage starts from, as ``finetune.from`` selects them (each item must match)."""
    where = spec.where()
    sel = spec.stages.finetune.from_
    if sel == "all":
        if not pre:
            raise SpecError(f"{where}: stages.finetune.from: all, but the pretrain stage has no trials")
        return [_of_trial(tp) for tp in pre]

    def listing() -> str:
        return ", ".join(f"{tp.trial_id} ({tp.name})" for tp in pre) or "none"

    out: dict[str, Parent] = {}
    for i, item in enumerate(sel):
        path = f"stages.finetune.from[{i}]"
        if isinstance(item, dict):
            want = {
                k: canon(v if k == "seed" else check_value(k, v, f"{where}: {path}.{k}"))
                for k, v in item.items()
            }
            hits = [tp for tp in pre if all(canon(tp.axes.get(k)) == v for k, v in want.items())]
            if not hits:
                gone = [s for s in skipped if all(canon(s.axes.get(k)) == v for k, v in want.items())]
                why = f"; it was skipped: {gone[0].reason}" if gone else ""
                raise SpecError(
                    f"{where}: {path}: {item} matches no pretrain trial{why} (pretrain trials: {listing()})"
                )
            for tp in hits:
                out.setdefault(tp.trial_id, _of_trial(tp))
        elif is_external_ref(item):
            out.setdefault(item, _external_parent(spec, item, path))
        else:
            hit = next((tp for tp in pre if tp.trial_id == str(item)), None)
            if hit is None:
                gone = next((s for s in skipped if s.trial_id == str(item)), None)
                why = f" (it was skipped: {gone.reason})" if gone else ""
                raise SpecError(
                    f"{where}: {path}: {item!r} is not a pretrain trial of this sweep{why} "
                    f"(pretrain trials: {listing()}; or 'sweep:<name>/<trial_id>' / a checkpoint path)"
                )
            out.setdefault(hit.trial_id, _of_trial(hit))
    return list(out.values())


def _controls(parents: list[Parent]) -> list[Parent]:
    out: dict[str, Parent] = {}
    for p in parents:
        key = json.dumps(p.model, sort_keys=True, default=str)
        out.setdefault(key, Parent(SCRATCH, p.model, model_axes=dict(p.model_axes)))
    return list(out.values())


# ----------------------------------------------------------------------------------------------------
# the plan


def _tag(cfg: TrialConfig, stage: str, parent: str | None = None) -> None:
    cfg.tracking.tags = {**cfg.tracking.tags, TAG_STAGE: stage}
    if parent is not None:
        cfg.tracking.tags[TAG_FROM] = parent


def resolve_stages(spec: SweepSpec, *, count: bool = True) -> Plan:
    """Pretrain trials, then fine-tune trials (each fine-tune point x each parent, + scratch controls)."""
    plan = Plan.start(spec)
    pre_trials: list[TrialPlan] = []
    pre_skipped: list[Skipped] = []
    if spec.stages.pretrain is not None:
        try:
            pre = resolve_grid(stage_spec(spec, "pretrain"), count=False)
        except SpecError as e:
            raise in_stage(spec, "pretrain", e) from None
        plan.notes += pre.notes
        for s in pre.skipped:
            point = {k: v for k, v in s.axes.items() if k != "seed"}
            tid = trial_id_for({"stage": "pretrain", **point}, s.seed)
            pre_skipped.append(Skipped(tid, {"stage": "pretrain", **s.axes}, s.seed, s.reason))
        for tp in pre.trials:
            point = {k: v for k, v in tp.axes.items() if k != "seed"}
            tid = trial_id_for({"stage": "pretrain", **point}, tp.seed)
            axes = {"stage": "pretrain", **tp.axes}
            name = f"pretrain {tp.name}"
            plan.finish(tp.config, tid, name, axes)
            _tag(tp.config, "pretrain")
            pre_trials.append(TrialPlan(tid, name, axes, tp.seed, tp.config, steps=tp.config.train.steps))
    plan.trials += pre_trials
    plan.skipped += pre_skipped

    try:
        ft = resolve_grid(stage_spec(spec, "finetune"), count=False)
    except SpecError as e:
        raise in_stage(spec, "finetune", e) from None
    plan.notes += ft.notes
    st = spec.stages.finetune
    parents = select_parents(spec, pre_trials, pre_skipped)
    if st.scratch:
        parents += _controls(parents)
    seen: set[str] = set()
    for tp in ft.trials:
        point = {k: v for k, v in tp.axes.items() if k != "seed"}
        for par in parents:
            axes = {"stage": "finetune", **par.model_axes, **par.other_axes, **point, "from": par.key}
            tid = trial_id_for(axes, tp.seed)
            if tid in seen:
                continue
            seen.add(tid)
            d = tp.config.to_dict()
            d["model"] = json.loads(json.dumps(par.model))
            d["train"].update(init_from=par.init_from, init_speakers=st.init_speakers, freeze=list(st.freeze))
            cfg = TrialConfig.from_dict(d, strict=True, where="stages.finetune")
            axes["seed"] = tp.seed
            short = par.key if par.key == SCRATCH or len(par.key) <= 16 else "…" + par.key[-15:]
            model = " ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in par.model_axes.items())
            name = " ".join(x for x in ("finetune", f"from={short}", model, tp.name) if x)
            plan.finish(cfg, tid, name, axes)
            _tag(cfg, "finetune", par.key)
            plan.trials.append(TrialPlan(tid, name, axes, tp.seed, cfg, steps=cfg.train.steps))
    for s in ft.skipped:
        plan.skipped.append(Skipped(s.trial_id, {"stage": "finetune", **s.axes}, s.seed, s.reason))
    if count and spec.estimate.count:
        estimate_plan(plan)
    return plan


def pretrain_parent(cfg: TrialConfig) -> str | None:
    """The in-sweep pretrain trial a fine-tune trial starts from (None for scratch / external / pretrain)."""
    if stage_of(cfg) != "finetune":
        return None
    key = cfg.axes.get("from")
    return None if key in (None, SCRATCH) or is_external_ref(key) else str(key)
