"""Sweep YAML: schema (pydantic), validation with errors that name the file and field, and resolution of
every sweep point to a ``model.config.TrialConfig`` with stable ``trial_id``.

A sweep is ``base`` settings + ``axes``. ``mode: grid`` takes the cartesian product of the axes;
``mode: list`` takes the explicit ``points`` (crossed with any ``axes`` given too). ``isoflop`` adds, for
each compute budget, a list of model sizes. Every point is repeated for each of ``seeds``. Points that
cannot run (heads do not divide the width, more data hours than the corpus holds, a budget below one step,
a user ``constraints`` expression is false) are skipped before launch with the reason.

``stages`` (pretraining then fine-tuning) replaces the top-level grid with two grids run in order: see
``StageSpec`` / ``FinetuneStage`` below and ``resolve_stages``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from model.config import (
    SECTIONS,
    ConfigError,
    TrialConfig,
    flatten,
    load_config,
    merge,
    seed_large_config,
    tiny_config,
)
from orchestrator.expr import Expr, ExprError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# axis name -> what it sets (the README's table comes from here)
KNOWN_AXES: dict[str, str] = {
    "width": "model.hidden_channels = model.inter_channels = value (int), or a mapping "
    "{hidden, inter, filter}; filter_channels follows filter_ratio unless given",
    "filter_ratio": "model.filter_channels = round(hidden_channels * value)",
    "filter_channels": "model.filter_channels (explicit)",
    "n_layers": "model.n_layers (text-encoder depth)",
    "n_heads": "model.n_heads (attention heads; must divide hidden_channels)",
    "data_hours": "data.data_hours: nested training subset in hours (null = the whole corpus)",
    "compute_budget": "train.compute_budget in FLOPs; steps = budget // measured FLOPs per step",
    "steps": "train.steps (optimizer steps); clears compute_budget",
}
OTHER_AXES = "any config field as section.field (e.g. model.disc_width, train.learning_rate), or extra.<name>"
PRESETS = {"default": TrialConfig, "tiny": tiny_config, "seed_large": seed_large_config}


class SpecError(ValueError):
    """An invalid sweep file; the message names the file, the field path and what is allowed."""


# ----------------------------------------------------------------------------------------------------
# schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseSettings(_Strict):
    """Inline base settings: a preset, optionally a base file, then section overrides (in that order)."""

    preset: Literal["default", "tiny", "seed_large"] = "default"
    file: str | None = None  # project YAML/JSON or a Style-Bert-VITS2 config.json, relative to the sweep file
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_gpus_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("fractions are allowed below 1 GPU only (e.g. 0.25, 0.5, 1, 2)")
        return v


class IsoflopLevel(_Strict):
    budget: float = Field(gt=0)  # FLOPs
    sizes: list[dict[str, Any]] = Field(min_length=1)


class Estimate(_Strict):
    flops_per_s: float | None = Field(
        None, gt=0
    )  # achieved FLOP/s per trial; None: measured (CPU) / 3e13 (GPU)
    overhead_s: float = Field(20.0, ge=0)  # per-trial start-up + evaluation
    count: bool = True  # measure params / FLOPs per step before launch (model.counting)


class StageSpec(_Strict):
    """One stage's grid: overrides on top of the sweep's ``base`` and its own axes/points/isoflop/constraints.

    ``data``/``model``/``train``/``eval`` are merged into the sweep's base settings for this stage only
    (e.g. a large mixed corpus for ``pretrain``, the small target corpus and speaker table for ``finetune``).
    ``mode``, ``axes``, ``points``, ``isoflop`` and ``constraints`` mean what they mean at the top level.
    """

    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["grid", "list"] = "grid"
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    points: list[dict[str, Any]] = Field(default_factory=list)
    isoflop: list[IsoflopLevel] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list)


class FinetuneStage(StageSpec):
    """The fine-tune grid, crossed with the pretrained trials it starts from (``from``), plus controls.

    ``from``: ``all`` (every pretrain-stage trial), or a list whose items are each a pretrain trial id, a
    mapping of pretrain axis values selecting the trials that have them (``{width: 32}``,
    ``{width: 32, data_hours: 0.5}``), ``sweep:<name>/<trial_id>`` (a trial of an earlier, submitted sweep)
    or a checkpoint path. Every item must match something, or the sweep fails before launch.
    Each fine-tune trial takes its parent's model settings (model axes of the fine-tune grid are not
    allowed: a checkpoint fixes the model); ``train.init_from`` is set to the parent's trial directory.
    ``scratch: true`` adds, for each distinct parent model and each fine-tune point, the same trial from
    scratch (``from: scratch``): every pretrained trial has its control at the same fine-tune hours/budget.
    ``init_speakers`` and ``freeze`` go to ``train.init_speakers`` / ``train.freeze`` (model/train/init.py).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | list[str | dict[str, Any]] = Field("all", alias="from")
    scratch: bool = True
    init_speakers: Literal["resize", "reinit", "keep"] = "resize"
    freeze: list[str] = Field(default_factory=list)

    @field_validator("from_")
    @classmethod
    def _from(cls, v):
        if isinstance(v, str) and v != "all":
            return [v]
        if isinstance(v, list) and not v:
            raise ValueError("an empty list selects nothing (use 'all' or name trials)")
        return v


class Stages(_Strict):
    """``pretrain`` runs to completion first, then ``finetune`` (whose trials start from pretrain trials).
    ``pretrain`` may be left out when every ``finetune.from`` item names an earlier sweep's trial or a path."""

    pretrain: StageSpec | None = None
    finetune: FinetuneStage


class SweepSpec(_Strict):
    name: str
    description: str = ""
    experiment: str = "vits-scaling"
    base: str | BaseSettings = Field(default_factory=BaseSettings)
    mode: Literal["grid", "list"] = "grid"
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    points: list[dict[str, Any]] = Field(default_factory=list)
    isoflop: list[IsoflopLevel] = Field(default_factory=list)
    filter_ratio: float | None = Field(None, gt=0)
    constraints: list[str] = Field(default_factory=list)
    seeds: int | list[int] | None = None
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(1, ge=0)
    tracking_uri: str | None = None
    ray_address: str | None = None
    storage_path: str = "runs/sweeps"
    tags: dict[str, str] = Field(default_factory=dict)
    estimate: Estimate = Field(default_factory=Estimate)
    trial_fn: str = "model.train:run_trial"  # advanced: a "module:function" with run_trial's signature
    defs: Any = None  # free-form, ignored: a place for YAML anchors (&sizes) reused below
    stages: Stages | None = None  # pretrain -> finetune; then the top-level axes/points/isoflop stay empty

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("letters, digits, '_', '.', '-' (starting with a letter or digit, <= 100 chars)")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("a count >= 1 (seeds: 3 means seeds 0, 1, 2) or a list of seeds")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a non-empty list of distinct integers")
        return v

    @property
    def source(self) -> Path | None:
        return self._source

    def where(self) -> str:
        return str(self._source) if self._source else "<sweep>"

    def seed_list(self, base_seed: int) -> list[int]:
        if self.seeds is None:
            return [base_seed]
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


# ----------------------------------------------------------------------------------------------------
# loading


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in (
            "str",
            "BaseSettings",
            "int",
            "list[int]",
            "function-after[_seeds(), union[int,list[int]]]",
        ):
            continue  # union branch labels pydantic adds
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _pydantic_error(where: str, e: ValidationError) -> SpecError:
    lines, seen = [], set()
    for err in e.errors():
        loc = _loc(err["loc"])
        if loc in seen:
            continue
        seen.add(loc)
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_fields(parent)
            msg = f"unknown field (allowed: {', '.join(allowed)})" if allowed else "unknown field"
        else:
            msg = err["msg"]
        lines.append(f"{where}: {loc}: {msg}")
    return SpecError("\n".join(lines))


def _allowed_fields(parent: tuple) -> list[str]:
    model: type[BaseModel] = SweepSpec
    for part in parent:
        if isinstance(part, int) or part in ("str", "BaseSettings"):
            continue
        f = model.model_fields.get(part)
        if f is None:
            return []
        ann = f.annotation
        sub = next(
            (a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if sub is None:
            return []
        model = sub
    return sorted(model.model_fields)


def parse_spec(raw: Any, source: str | Path | None = None) -> SweepSpec:
    where = str(Path(source).resolve()) if source else "<sweep>"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping of sweep fields, got {type(raw).__name__}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise _pydantic_error(where, e) from None
    spec._source = Path(source).resolve() if source else None
    _check_semantics(spec)
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: sweep file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise SpecError(f"{path}:{line} invalid YAML: {getattr(e, 'problem', e)}") from None
    return parse_spec(raw if raw is not None else {}, path)


# ----------------------------------------------------------------------------------------------------
# semantic checks (after the schema): axis names and values, base file, constraints


def base_config(spec: SweepSpec) -> TrialConfig:
    """The base TrialConfig: a base file (path relative to the sweep file) or a preset + file + overrides."""
    where = spec.where()
    root = spec.source.parent if spec.source else Path.cwd()
    b = spec.base
    if isinstance(b, str):
        b = BaseSettings(file=b)
    try:
        if b.file:
            p = Path(b.file)
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise SpecError(
                    f"{where}: base.file: base file not found: {p} (paths are relative to the sweep file)"
                )
            if b.preset != "default":
                raise SpecError(f"{where}: base: give either preset or file, not both")
            cfg = load_config(p)
        else:
            cfg = PRESETS[b.preset]()
        overrides = {
            k: v for k, v in (("data", b.data), ("model", b.model), ("train", b.train), ("eval", b.eval)) if v
        }
        if overrides:
            cfg = TrialConfig.from_dict(merge(cfg.to_dict(), overrides), strict=True, where="base")
    except ConfigError as e:
        raise SpecError(f"{where}: {e}") from None
    return cfg


def _axis_kind(name: str) -> str:
    if name in KNOWN_AXES:
        return "known"
    if name.startswith("extra.") and len(name) > 6:
        return "extra"
    parts = name.split(".")
    if len(parts) == 2 and parts[0] in SECTIONS:
        known = SECTIONS[parts[0]].__dataclass_fields__
        if parts[1] in known:
            return "config"
        raise SpecError(
            f"unknown field {parts[1]!r} in section {parts[0]!r} (allowed: {', '.join(sorted(known))})"
        )
    raise SpecError(f"unknown axis (allowed: {', '.join(KNOWN_AXES)}; or {OTHER_AXES})")


def _number(v: Any, *, integer: bool, minimum: float, path: str, allow_none: bool = False) -> Any:
    if v is None and allow_none:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer:
        ok = float(v).is_integer()
    if not ok or v < minimum:
        kind = "an integer" if integer else "a number"
        extra = " or null" if allow_none else ""
        raise SpecError(f"{path}: expected {kind} >= {minimum:g}{extra}, got {v!r}")
    return int(v) if integer else float(v)


def _check_value(name: str, v: Any, path: str) -> Any:
    """Validate and normalise one axis value (config fields are type-checked when the point is built)."""
    if name == "width":
        if isinstance(v, dict):
            unknown = set(v) - {"hidden", "inter", "filter"}
            if unknown or "hidden" not in v:
                raise SpecError(
                    f"{path}: a width mapping needs 'hidden' and may have 'inter', 'filter'; got {v!r}"
                )
            return {k: _number(x, integer=True, minimum=1, path=f"{path}.{k}") for k, x in v.items()}
        return _number(v, integer=True, minimum=1, path=path)
    if name in ("n_layers", "n_heads", "filter_channels", "steps"):
        return _number(v, integer=True, minimum=1, path=path)
    if name == "filter_ratio":
        return _number(v, integer=False, minimum=1e-9, path=path)
    if name == "data_hours":
        return _number(v, integer=False, minimum=1e-9, path=path, allow_none=True)
    if name == "compute_budget":
        return _number(v, integer=False, minimum=1.0, path=path)
    return v


def _points(spec: SweepSpec) -> list[dict[str, Any]]:
    """All sweep points (axis name -> normalised value) before seeds and constraints."""
    where = spec.where()
    explicit: list[tuple[str, dict]] = [(f"points[{i}]", p) for i, p in enumerate(spec.points)]
    for i, lvl in enumerate(spec.isoflop):
        for j, size in enumerate(lvl.sizes):
            if "compute_budget" in size or "steps" in size:
                raise SpecError(
                    f"{where}: isoflop[{i}].sizes[{j}]: the budget comes from isoflop[{i}].budget; "
                    "remove compute_budget/steps"
                )
            explicit.append((f"isoflop[{i}].sizes[{j}]", {**size, "compute_budget": lvl.budget}))
    base_points: list[dict[str, Any]] = []
    for path, p in explicit:
        norm = {}
        for k, v in p.items():
            try:
                _axis_kind(k)
            except SpecError as e:
                raise SpecError(f"{where}: {path}.{k}: {e}") from None
            norm[k] = _check_value(k, v, f"{where}: {path}.{k}")
        overlap = set(norm) & set(spec.axes)
        if overlap:
            raise SpecError(
                f"{where}: axes.{sorted(overlap)[0]}: also set by {path}; give each axis in one place"
            )
        base_points.append(norm)
    axes: dict[str, list[Any]] = {}
    for k, values in spec.axes.items():
        try:
            _axis_kind(k)
        except SpecError as e:
            raise SpecError(f"{where}: axes.{k}: {e}") from None
        if not values:
            raise SpecError(f"{where}: axes.{k}: empty list (give at least one value)")
        axes[k] = [_check_value(k, v, f"{where}: axes.{k}[{i}]") for i, v in enumerate(values)]
    grid = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    return [{**p, **g} for p in (base_points or [{}]) for g in grid]


def _check_semantics(spec: SweepSpec) -> None:
    where = spec.where()
    if spec.stages is not None:
        _check_stages(spec)
        return
    if spec.mode == "grid" and spec.points:
        raise SpecError(f"{where}: points: explicit points need `mode: list` (mode is grid)")
    if spec.mode == "list" and not (spec.points or spec.isoflop):
        raise SpecError(f"{where}: points: `mode: list` needs a non-empty points list (or isoflop)")
    if spec.mode == "grid" and not (spec.axes or spec.isoflop):
        raise SpecError(f"{where}: axes: a grid sweep needs at least one axis (or isoflop)")
    names = (
        set(spec.axes)
        | {k for p in spec.points for k in p}
        | {k for lv in spec.isoflop for s in lv.sizes for k in s}
    )
    if spec.isoflop:
        names.add("compute_budget")
    if {"compute_budget", "steps"} <= names:
        raise SpecError(f"{where}: axes: use either compute_budget or steps as an axis, not both")
    if "train.seed" in names:
        raise SpecError(f"{where}: axes.train.seed: use the `seeds` field for repeats")
    cfg = base_config(spec)  # raises for a missing/invalid base
    points = _points(spec)  # raises for unknown axes / bad values
    values = [(f"axes.{k}[{i}]", k, v) for k, vs in spec.axes.items() for i, v in enumerate(vs)]
    values += [(f"points[{i}].{k}", k, v) for i, p in enumerate(spec.points) for k, v in p.items()]
    values += [
        (f"isoflop[{i}].sizes[{j}].{k}", k, v)
        for i, lv in enumerate(spec.isoflop)
        for j, s in enumerate(lv.sizes)
        for k, v in s.items()
    ]
    for path, k, v in values:  # type-check config-field axes value by value, so the error names the index
        if _axis_kind(k) == "config":
            d = cfg.to_dict()
            section, key = k.split(".")
            d[section][key] = v
            try:
                TrialConfig.from_dict(d, strict=True, where="axes")
            except ConfigError as e:
                raise SpecError(f"{where}: {path}: {str(e).split(': ', 1)[-1]}") from None
    env = _env(_build(spec, cfg, points[0], cfg.train.seed, check=True)[0], points[0], cfg.train.seed)
    for i, text in enumerate(spec.constraints):
        try:
            Expr(text).check_names(env)
        except ExprError as e:
            raise SpecError(f"{where}: constraints[{i}]: {e}") from None


# ----------------------------------------------------------------------------------------------------
# resolution


@dataclass
class TrialPlan:
    trial_id: str
    name: str
    axes: dict[str, Any]
    seed: int
    config: TrialConfig
    params_generator: int | None = None
    params_discriminator: int | None = None
    flops_per_step: float | None = None
    steps: int | None = None
    est_seconds: float | None = None

    def row(self) -> dict[str, Any]:
        m, t, d = self.config.model, self.config.train, self.config.data
        total = self.flops_per_step * self.steps if self.flops_per_step and self.steps else t.compute_budget
        return {
            "trial_id": self.trial_id,
            "name": self.name,
            "axes": self.axes,
            "seed": self.seed,
            "hidden_channels": m.hidden_channels,
            "inter_channels": m.inter_channels,
            "filter_channels": m.filter_channels,
            "n_heads": m.n_heads,
            "n_layers": m.n_layers,
            "data_hours": d.data_hours,
            "compute_budget": t.compute_budget,
            "params_generator": self.params_generator,
            "params_discriminator": self.params_discriminator,
            "flops_per_step": self.flops_per_step,
            "steps": self.steps,
            "total_flops": total,
            "est_seconds": self.est_seconds,
        }


@dataclass
class Skipped:
    trial_id: str
    axes: dict[str, Any]
    seed: int
    reason: str


@dataclass
class Plan:
    spec: SweepSpec
    trials: list[TrialPlan]
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    storage_path: Path = Path("runs/sweeps")
    tracking_uri: str = ""

    @property
    def sweep_dir(self) -> Path:
        return self.storage_path / self.spec.name


def _canon(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, dict):
        return {str(k): _canon(x) for k, x in sorted(v.items())}
    if isinstance(v, list | tuple):
        return [_canon(x) for x in v]
    return v


def trial_id_for(axes: dict[str, Any], seed: int) -> str:
    """Stable id: a hash of the canonical axis values and the seed (same point -> same id, every submit)."""
    blob = json.dumps({"axes": _canon(axes), "seed": int(seed)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "/".join(f"{x}" for x in v.values())
    return str(v)


def _build(spec: SweepSpec, base: TrialConfig, point: dict[str, Any], seed: int, *, check: bool = False):
    """Apply one point to the base config; returns (TrialConfig, axes)."""
    d = base.to_dict()
    m, t = d["model"], d["train"]
    ratio = spec.filter_ratio or (m["filter_channels"] / m["hidden_channels"])
    ratio = point.get("filter_ratio", ratio)
    for name, v in point.items():
        if name in ("n_layers", "n_heads", "filter_channels"):
            m[name] = v
        elif name == "data_hours":
            d["data"]["data_hours"] = v
        elif name == "compute_budget":
            t["compute_budget"], t["steps"] = v, None
        elif name == "steps":
            t["steps"], t["compute_budget"] = v, None
        elif _axis_kind(name) == "config":
            section, key = name.split(".")
            d[section][key] = copy.deepcopy(v)
    if "width" in point:
        w = point["width"]
        hidden = w["hidden"] if isinstance(w, dict) else w
        m["hidden_channels"] = hidden
        m["inter_channels"] = w.get("inter", hidden) if isinstance(w, dict) else hidden
        if isinstance(w, dict) and "filter" in w:
            m["filter_channels"] = w["filter"]
        elif "filter_channels" not in point:
            m["filter_channels"] = max(1, round(hidden * ratio))
    elif "filter_ratio" in point and "filter_channels" not in point:
        m["filter_channels"] = max(1, round(m["hidden_channels"] * ratio))
    t["seed"] = seed
    try:
        cfg = TrialConfig.from_dict(d, strict=True, where="axes")
    except ConfigError as e:
        raise SpecError(f"{spec.where()}: {e} (from the point {point})") from None
    return cfg, dict(point)


def _env(cfg: TrialConfig, point: dict[str, Any], seed: int) -> dict[str, Any]:
    """Names a constraint can use: axes, short model/data/train names, and every config field as section.field."""
    env = {k: v for k, v in flatten(cfg.to_dict()).items() if "." in k}
    m = cfg.model
    env.update(
        width=m.hidden_channels,
        hidden_channels=m.hidden_channels,
        inter_channels=m.inter_channels,
        filter_channels=m.filter_channels,
        n_heads=m.n_heads,
        n_layers=m.n_layers,
        data_hours=cfg.data.data_hours,
        compute_budget=cfg.train.compute_budget,
        steps=cfg.train.steps,
        seed=seed,
    )
    env.update({k: v for k, v in point.items() if not isinstance(v, dict)})
    return env


def resolve(spec: SweepSpec | str | Path, *, count: bool = True) -> Plan:
    """Every trial of the sweep (resolved config, id, sizes, steps, estimate) and every skipped point."""
    from analysis.mlflow_contract import default_tracking_uri

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if spec.stages is not None:
        from orchestrator.stages import resolve_stages

        return resolve_stages(spec, count=count)
    where = spec.where()
    base = base_config(spec)
    plan = Plan(
        spec=spec,
        trials=[],
        storage_path=Path(spec.storage_path).expanduser().resolve(),
        tracking_uri=spec.tracking_uri or default_tracking_uri(),
    )
    constraints = [(text, Expr(text)) for text in spec.constraints]
    seen: dict[str, str] = {}
    hours_cache: dict[str, float | None] = {}
    for point in _points(spec):
        for seed in spec.seed_list(base.train.seed):
            cfg, axes = _build(spec, base, point, seed)
            axes = {**axes, "seed": seed}
            tid = trial_id_for(point, seed)
            name = " ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in axes.items())
            if tid in seen:
                plan.skipped.append(Skipped(tid, axes, seed, f"duplicate of the point {seen[tid]}"))
                continue
            seen[tid] = name
            reason = _builtin_reason(cfg, hours_cache, plan.notes)
            if reason is None:
                env = _env(cfg, point, seed)
                for text, ex in constraints:
                    try:
                        ok = ex(env)
                    except ExprError as e:
                        raise SpecError(f"{where}: constraints: {e}") from None
                    if not ok:
                        reason = f"constraint {text!r} is false"
                        break
            if reason is not None:
                plan.skipped.append(Skipped(tid, axes, seed, reason))
                continue
            _finish(plan, cfg, tid, name, axes)
            plan.trials.append(TrialPlan(tid, name, axes, seed, cfg, steps=cfg.train.steps))
    if count and spec.estimate.count:
        from orchestrator.estimate import estimate_plan

        estimate_plan(plan)
    if not plan.trials:
        reasons = sorted({s.reason for s in plan.skipped})
        shown = "; ".join(reasons[:5]) + (f"; ... ({len(reasons) - 5} more)" if len(reasons) > 5 else "")
        raise SpecError(
            f"{where}: no trials left after the constraints ({len(plan.skipped)} skipped: {shown})"
        )
    return plan


def _builtin_reason(cfg: TrialConfig, hours_cache: dict, notes: list[str]) -> str | None:
    m = cfg.model
    if m.hidden_channels % m.n_heads:
        return (
            f"hidden_channels {m.hidden_channels} is not divisible by n_heads {m.n_heads} "
            "(attention splits the channels across heads)"
        )
    from model.data import check_selection

    try:  # an unknown score in min_quality or an unknown corpus in sources fails before launch
        check_selection(cfg.data)
    except ConfigError as e:
        raise SpecError(str(e)) from None
    hours = cfg.data.data_hours
    if hours is not None:
        from orchestrator.estimate import available_hours

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


def _finish(plan: Plan, cfg: TrialConfig, tid: str, name: str, axes: dict[str, Any]) -> None:
    spec = plan.spec
    cfg.name = name
    cfg.trial_id = tid
    cfg.sweep = spec.name
    cfg.axes = axes
    cfg.output_dir = str(plan.sweep_dir / "trials" / tid)
    cfg.tracking.uri = plan.tracking_uri
    cfg.tracking.experiment = spec.experiment
    cfg.tracking.run_name = name
    cfg.tracking.tags = {**cfg.tracking.tags, **spec.tags}


def _check_stages(spec: SweepSpec) -> None:
    from orchestrator.stages import check_stages

    check_stages(spec)
