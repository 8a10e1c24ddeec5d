"""Sweep YAML schema: the pydantic models of a sweep file, the error text that names the file and field,
and the vocabulary of ``stages`` (which axes belong to the model, what a stage is as a plain sweep).

A sweep is ``base`` settings + ``axes``. ``mode: grid`` takes the cartesian product of the axes;
``mode: list`` takes the explicit ``points`` (crossed with any ``axes`` given too). ``isoflop`` adds, for
each compute budget, a list of model sizes. Every point is repeated for each of ``seeds``.
``stages`` (pretraining then fine-tuning) replaces the top-level grid with two grids run in order: see
``StageSpec`` / ``FinetuneStage`` below and ``orchestrator.plan.stages``. ``wsd_branches: true`` trains each
point once at constant lr (a trunk) and cools down one branch per ``compute_budget`` from the trunk's
checkpoints: see ``orchestrator.plan.branches``. Stages and branches are the two kinds of *phase*: trials of
one phase run to completion before the next phase starts (``PHASES``, read by ``orchestrator.driver``).

This module checks the shape of the file only (``validate_spec``); what the values mean (axis names, base
file, constraints) is checked by ``orchestrator.plan.checks``, and ``orchestrator.plan.load`` does both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from analysis.mlflow_contract import BRANCH_COOLDOWN, BRANCH_TRUNK
from analysis.throughput import accelerator
from model.config import merge

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
    "lr": "train.learning_rate (> 0); the analysis keeps the best lr per (size, budget, data) point "
    "(analysis.envelope)",
    "size": "a multiplier (> 0) of the base widths: hidden = inter (rounded to a multiple of n_heads), "
    "filter, model.upsample_initial_channel and model.disc_width together",
}
OTHER_AXES = "any config field as section.field (e.g. model.disc_width, train.learning_rate), or extra.<name>"

STAGES = ("pretrain", "finetune")  # run order
BRANCHES = (BRANCH_TRUNK, BRANCH_COOLDOWN)  # run order of a sweep with wsd_branches
# the axis that names a trial's phase -> the phases in run order (the driver runs one Tuner per phase)
PHASES: dict[str, tuple[str, ...]] = {"stage": STAGES, "branch": BRANCHES}
MODEL_AXES = ("width", "filter_ratio", "filter_channels", "n_layers", "n_heads", "size")
SCRATCH = "scratch"  # the ``from`` of a fine-tune trial trained from scratch (a control)


class SpecError(ValueError):
    """An invalid sweep file; the message names the file, the field path and what is allowed."""


# ----------------------------------------------------------------------------------------------------
# the models


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
    """How the dry run turns FLOPs into time: ``flops_per_s`` (achieved FLOP/s per trial, e.g. measured) wins;
    else the planning figure of the ``accelerator`` row of ``analysis.throughput``; else that table's default
    GPU (``resources.gpu > 0``) or a matmul measured on this CPU (``orchestrator.plan.estimate``)."""

    flops_per_s: float | None = Field(None, gt=0)
    accelerator: str | None = None  # a key of analysis.throughput.ACCELERATORS (h100, h200, a100, l4, ...)
    overhead_s: float = Field(20.0, ge=0)  # per-trial start-up + evaluation
    # a floor on the seconds of one step: small models are bound by per-step launch overhead, not FLOPs
    # (a tiny CPU trial runs ~3 steps/s at any size up to ~0.5 M parameters)
    step_s: float = Field(0.0, ge=0)
    count: bool = True  # measure params / FLOPs per step before launch (model.counting)

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, v: str | None) -> str | None:
        if v is not None:
            accelerator(v)  # ValueError naming the known ones
        return v


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
    wsd_branches: bool = False  # one constant-lr trunk per point, a cooldown branch per compute_budget

    _source: Path | None = PrivateAttr(default=None)
    _base_roots: tuple[Path, ...] = PrivateAttr(default=())  # --base-root: more trees base files may be in

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

    @property
    def base_roots(self) -> tuple[Path, ...]:
        """Directory trees, given on the command line, that ``base.file`` may point into besides the sweep's."""
        return self._base_roots

    def where(self) -> str:
        return str(self._source) if self._source else "<sweep>"

    def seed_list(self, base_seed: int) -> list[int]:
        if self.seeds is None:
            return [base_seed]
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


# ----------------------------------------------------------------------------------------------------
# validation and its error text


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


def validate_spec(raw: Any, source: str | Path | None = None, base_roots=()) -> SweepSpec:
    """The file's mapping as a ``SweepSpec`` (shape only), remembering the file it came from (and the
    ``base_roots`` its base file may also be read from)."""
    where = str(Path(source).resolve()) if source else "<sweep>"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping of sweep fields, got {type(raw).__name__}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise _pydantic_error(where, e) from None
    spec._source = Path(source).resolve() if source else None
    spec._base_roots = tuple(Path(r).expanduser().resolve() for r in base_roots)
    return spec


# ----------------------------------------------------------------------------------------------------
# phases (stages, WSD branches): the vocabulary


def phase_of(axes: dict[str, Any]) -> tuple[str, str] | None:
    """(phase axis, phase) of a trial from its axes, e.g. ``("stage", "pretrain")``; None outside phases."""
    for key in PHASES:
        if key in axes:
            return key, str(axes[key])
    return None


def is_model_axis(name: str) -> bool:
    """An axis that changes the model (a fine-tune trial takes its model from its checkpoint instead)."""
    return name in MODEL_AXES or name.startswith("model.")


def is_external_ref(sel: Any) -> bool:
    """A ``finetune.from`` item naming a trial of another sweep (``sweep:<name>/<id>``) or a checkpoint path."""
    return isinstance(sel, str) and (sel.startswith("sweep:") or "/" in sel or sel.endswith(".pt"))


def axis_names(st: SweepSpec | StageSpec) -> set[str]:
    """Every axis a sweep or stage varies (``axes``, ``points``, ``isoflop`` sizes and its budget)."""
    names = set(st.axes) | {k for p in st.points for k in p}
    names |= {k for lv in st.isoflop for s in lv.sizes for k in s}
    if st.isoflop:
        names.add("compute_budget")
    return names


def stage_spec(spec: SweepSpec, name: str) -> SweepSpec:
    """The sweep as if it were only this stage (base merged with the stage's overrides, the stage's grid)."""
    st = getattr(spec.stages, name)
    b = spec.base if isinstance(spec.base, BaseSettings) else BaseSettings(file=spec.base)
    base = BaseSettings(
        preset=b.preset,
        file=b.file,
        **{k: merge(getattr(b, k), getattr(st, k)) for k in ("data", "model", "train", "eval")},
    )
    mode, points = st.mode, st.points
    if not (st.axes or st.points or st.isoflop):  # no grid of its own: one point
        mode, points = "list", [{}]
    sub = spec.model_copy(
        update=dict(
            base=base,
            mode=mode,
            axes=st.axes,
            points=points,
            isoflop=st.isoflop,
            constraints=st.constraints,
            stages=None,
        )
    )
    sub._source = spec.source
    return sub


def in_stage(spec: SweepSpec, name: str, e: SpecError) -> SpecError:
    """``e`` with each of its lines pointed at ``stages.<name>`` of the sweep file."""
    where = spec.where()
    lines = [
        ln.replace(f"{where}: ", f"{where}: stages.{name}: ", 1) if ln.startswith(f"{where}: ") else ln
        for ln in str(e).splitlines()
    ]
    return SpecError("\n".join(lines))
