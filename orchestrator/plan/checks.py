"""What a sweep's values mean, checked before anything runs: axis names and values, the base file, the
``constraints`` expressions and the ``stages`` rules (``check_semantics``, on every load); and why a
resolved point will not run (``skip_reason``: heads that do not divide the width, more data hours than
the corpus holds, a data selection the corpus cannot give).
"""

from __future__ import annotations

import json

from model.config import ConfigError, TrialConfig
from orchestrator.expr import Expr, ExprError
from orchestrator.plan.estimate import available_hours
from orchestrator.plan.points import (
    axis_kind,
    base_config,
    build_point,
    check_value,
    constraint_env,
    scale_widths,
    sweep_points,
)
from orchestrator.plan.schema import (
    STAGES,
    SpecError,
    SweepSpec,
    axis_names,
    in_stage,
    is_external_ref,
    is_model_axis,
    stage_spec,
)


def check_semantics(spec: SweepSpec) -> None:
    """Every check of what the sweep's values mean (after the schema); raises ``SpecError`` naming the field."""
    if spec.stages is not None:
        check_stages(spec)
    else:
        check_grid(spec)
    if spec.wsd_branches:
        check_branches(spec)


# config fields a trunk shares with all its branches: they cannot differ between the branches of one trunk
BRANCH_FIXED = ("train.lr_schedule", "train.warmup_frac", "train.steps")


def check_branches(spec: SweepSpec) -> None:
    """``wsd_branches``: a compute_budget axis, ``train.lr_schedule: wsd`` and a warm-up in steps, no stages."""
    where = spec.where()
    if spec.stages is not None:
        raise SpecError(
            f"{where}: wsd_branches: not supported together with stages (give the branches their own sweep, "
            "e.g. of the fine-tune stage with its init_from)"
        )
    names = axis_names(spec)
    if "compute_budget" not in names:
        raise SpecError(
            f"{where}: wsd_branches: needs a compute_budget axis (each budget is one cooldown branch of a trunk)"
        )
    for n in BRANCH_FIXED:
        if n in names:
            raise SpecError(
                f"{where}: axes.{n}: cannot vary in a sweep with wsd_branches (a trunk serves every budget)"
            )
    t = base_config(spec).train
    schedule = getattr(t, "lr_schedule", None)
    if schedule != "wsd":
        raise SpecError(
            f"{where}: base.train.lr_schedule: wsd_branches needs lr_schedule: wsd (constant lr, then a "
            f"cooldown per branch); got {schedule!r}"
        )
    if getattr(t, "warmup_frac", None) is not None:
        raise SpecError(
            f"{where}: base.train.warmup_frac: a trunk serves budgets of different lengths, so give its warm-up "
            "in steps (train.warmup_steps) and leave warmup_frac unset"
        )


def check_grid(spec: SweepSpec) -> None:
    """The checks of a sweep without stages (or of one stage as a plain sweep, see ``stage_spec``)."""
    where = spec.where()
    if spec.mode == "grid" and spec.points:
        raise SpecError(f"{where}: points: explicit points need `mode: list` (mode is grid)")
    if spec.mode == "list" and not (spec.points or spec.isoflop):
        raise SpecError(f"{where}: points: `mode: list` needs a non-empty points list (or isoflop)")
    if spec.mode == "grid" and not (spec.axes or spec.isoflop):
        raise SpecError(f"{where}: axes: a grid sweep needs at least one axis (or isoflop)")
    names = axis_names(spec)
    if {"compute_budget", "steps"} <= names:
        raise SpecError(f"{where}: axes: use either compute_budget or steps as an axis, not both")
    if "train.seed" in names:
        raise SpecError(f"{where}: axes.train.seed: use the `seeds` field for repeats")
    cfg = base_config(spec)  # raises for a missing/invalid base
    points = sweep_points(spec)  # raises for unknown axes / bad values
    values = [(f"axes.{k}[{i}]", k, v) for k, vs in spec.axes.items() for i, v in enumerate(vs)]
    values += [(f"points[{i}].{k}", k, v) for i, p in enumerate(spec.points) for k, v in p.items()]
    values += [
        (f"isoflop[{i}].sizes[{j}].{k}", k, v)
        for i, lv in enumerate(spec.isoflop)
        for j, s in enumerate(lv.sizes)
        for k, v in s.items()
    ]
    for path, k, v in values:  # type-check config-field axes value by value, so the error names the index
        if k == "size":  # a size the decoder cannot be built at is refused here, naming the value
            m = cfg.to_dict()["model"]
            ratio = spec.filter_ratio or m["filter_channels"] / m["hidden_channels"]
            scale_widths(
                m, cfg.to_dict()["model"], check_value(k, v, f"{where}: {path}"), ratio, f"{where}: {path}"
            )
        if axis_kind(k) == "config":
            d = cfg.to_dict()
            section, key = k.split(".")
            d[section][key] = v
            try:
                TrialConfig.from_dict(d, strict=True, where="axes")
            except ConfigError as e:
                raise SpecError(f"{where}: {path}: {str(e).split(': ', 1)[-1]}") from None
    env = constraint_env(
        build_point(spec, cfg, points[0], cfg.train.seed, check=True)[0], points[0], cfg.train.seed
    )
    for i, text in enumerate(spec.constraints):
        try:
            Expr(text).check_names(env)
        except ExprError as e:
            raise SpecError(f"{where}: constraints[{i}]: {e}") from None


def check_stages(spec: SweepSpec) -> None:
    """Schema-level checks of ``stages`` (``resolve_stages`` checks what ``from`` selects)."""
    where = spec.where()
    for f in ("axes", "points", "isoflop", "constraints"):
        if getattr(spec, f):
            raise SpecError(
                f"{where}: {f}: with `stages`, give each stage its own ({f} under stages.<stage>)"
            )
    s = spec.stages
    for name in STAGES:
        if getattr(s, name) is None:
            continue
        try:
            check_grid(stage_spec(spec, name))
        except SpecError as e:
            raise in_stage(spec, name, e) from None
    ft = s.finetune
    in_sweep = ft.from_ == "all" or any(not is_external_ref(x) for x in ft.from_)
    if in_sweep and s.pretrain is None:
        raise SpecError(
            f"{where}: stages.finetune.from: selects pretrain trials of this sweep, but there is no "
            "stages.pretrain (name earlier trials as 'sweep:<name>/<trial_id>' or a checkpoint path)"
        )
    bad = sorted(n for n in axis_names(ft) if is_model_axis(n)) + [f"model.{k}" for k in ft.model]
    if bad:
        raise SpecError(
            f"{where}: stages.finetune: {bad[0]}: a fine-tune trial takes its model from the checkpoint it "
            "starts from; vary the model in stages.pretrain"
        )
    if s.pretrain is not None and isinstance(ft.from_, list):
        names = axis_names(s.pretrain) | {"seed"}
        for i, sel in enumerate(ft.from_):
            if isinstance(sel, dict):
                unknown = sorted(set(sel) - names)
                if unknown or not sel:
                    raise SpecError(
                        f"{where}: stages.finetune.from[{i}]: {unknown[0] if unknown else '{}'}: not a "
                        f"pretrain axis (pretrain axes: {', '.join(sorted(names))})"
                    )


def skip_reason(cfg: TrialConfig, hours_cache: dict[str, float | None], notes: list[str]) -> str | None:
    """Why this resolved trial cannot run, or None (``hours_cache``: corpus sizes asked so far, per data pool)."""
    m = cfg.model
    if m.hidden_channels % m.n_heads:
        return (
            f"hidden_channels {m.hidden_channels} is not divisible by n_heads {m.n_heads} "
            "(attention splits the channels across heads)"
        )
    from model.data import check_selection  # model.data loads torch: only when a plan is resolved

    try:  # an unknown score in min_quality or an unknown corpus in sources fails before launch
        check_selection(cfg.data)
    except ConfigError as e:
        raise SpecError(str(e)) from None
    hours = cfg.data.data_hours
    if hours is not None:
        key = json.dumps(
            [
                cfg.data.corpus,
                cfg.data.corpus_format,
                cfg.data.builtin_hours,
                cfg.data.corpus_dir,
                # the pool a quality filter or mixture leaves differs per level
                cfg.data.min_quality,
                cfg.data.val_min_quality,
                cfg.data.sources,
                cfg.data.corpora,
                cfg.data.builtin_degrade,
                cfg.data.builtin_degrade_seed,
            ],
            default=str,
        )
        if key not in hours_cache:
            hours_cache[key] = available_hours(cfg.data, notes)
        avail = hours_cache[key]
        if avail is not None and hours > avail * (1 + 1e-6):
            d = cfg.data
            if d.min_quality is not None or d.sources is not None:  # name the level whose pool is short
                level = ", ".join(
                    x
                    for x in (
                        f"min_quality {d.min_quality!r}" if d.min_quality is not None else "",
                        f"sources {d.sources}" if d.sources is not None else "",
                    )
                    if x
                )
                return f"data_hours {hours:g} is more than the pool of {level} holds ({avail:.3g} h in {d.corpus})"
            return f"data_hours {hours:g} is more than the corpus holds ({avail:.3g} h in {cfg.data.corpus})"
    return None


def check_trial_inputs(plan, *, refuse: bool) -> list[str]:
    """Whether this machine holds what the trials' inputs need: each distinct text-feature model
    (``model.text.features.check_available``: config and weights local or in the HF cache, the layer range)
    and style encoder (``model.data.style.check_style``: package or file present, width = ``model.style_dim``).
    Each distinct setting is checked once. ``refuse`` (a submit whose trials run on this machine): a problem
    is a ``SpecError`` naming the trials and the field, before any trial starts, instead of every trial
    failing at its start; otherwise (a dry run, or a cluster whose workers may hold what the head lacks)
    the problems come back as notes to print."""
    from model.data.style import check_style  # model.data loads torch: only when a plan is resolved
    from model.text.features import check_available

    problems: dict[str, list[str]] = {}
    seen: dict[str, str | None] = {}
    for t in plan.trials:
        d = t.config.data
        for key, check in (
            (json.dumps(["text", d.text_features, d.bert_model, d.text_features_kind, d.text_features_layers]),
             lambda d=d: check_available(d)),
            (json.dumps(["style", d.style_encoder, t.config.model.style_dim]),
             lambda d=d, t=t: check_style(d, t.config.model.style_dim)),
        ):  # fmt: skip
            if key not in seen:
                try:
                    check()
                    seen[key] = None
                except ConfigError as e:
                    seen[key] = str(e)
            if seen[key] is not None:
                problems.setdefault(seen[key], []).append(t.trial_id)
    lines = []
    for why, ids in problems.items():
        which = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        lines.append(f"trials {which}: {why}")
    if lines and refuse:
        raise SpecError(f"{plan.spec.where()}: " + "; ".join(lines))
    return [f"{line} (trials on this machine would refuse to start)" for line in lines]
