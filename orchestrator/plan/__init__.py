"""A sweep file -> its plan: the trials to run (resolved ``TrialConfig``, stable id, sizes, steps, time
estimate) and the points skipped before launch, with the reason.

The modules, bottom up: ``schema`` (the YAML's pydantic models and error text), ``types`` (``TrialPlan``,
``Skipped``, ``Plan``, trial ids), ``estimate`` (sizes / steps / time), ``points`` (axes -> points ->
configs), ``checks`` (what the values mean; skip reasons), ``load`` (read + check a file), ``grid`` (a sweep
without stages), ``stages`` (pretrain -> fine-tune), ``branches`` (WSD trunks -> cooldown branches). Callers
import from here.
"""

from __future__ import annotations

from pathlib import Path

from model.config import TrialConfig
from orchestrator.plan.branches import branch_flops, branch_kind, resolve_branches, trained_flops, trunk_of
from orchestrator.plan.estimate import param_range
from orchestrator.plan.grid import resolve_grid
from orchestrator.plan.load import load_spec, parse_spec
from orchestrator.plan.points import base_config
from orchestrator.plan.schema import KNOWN_AXES, OTHER_AXES, PHASES, STAGES, SpecError, SweepSpec, phase_of
from orchestrator.plan.stages import pretrain_parent, resolve_stages, stage_of
from orchestrator.plan.types import Plan, Skipped, TrialPlan, trial_id_for

__all__ = [
    "KNOWN_AXES",
    "OTHER_AXES",
    "PHASES",
    "STAGES",
    "Plan",
    "Skipped",
    "SpecError",
    "SweepSpec",
    "TrialPlan",
    "base_config",
    "branch_flops",
    "trained_flops",
    "branch_kind",
    "load_spec",
    "param_range",
    "parent_of",
    "parse_spec",
    "phase_of",
    "resolve",
    "stage_of",
    "trial_id_for",
]


def resolve(spec: SweepSpec | str | Path, *, count: bool = True) -> Plan:
    """Every trial of the sweep (resolved config, id, sizes, steps, estimate) and every skipped point.

    ``count=False`` leaves sizes and time blank (no model is built to count them).
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if spec.stages is not None:
        return resolve_stages(spec, count=count)
    if spec.wsd_branches:
        return resolve_branches(spec, count=count)
    return resolve_grid(spec, count=count)


def parent_of(cfg: TrialConfig) -> str | None:
    """The trial of this sweep that ``cfg`` starts from and that must finish first: a fine-tune trial's
    pretrain trial, a cooldown branch's trunk; None otherwise."""
    return pretrain_parent(cfg) or trunk_of(cfg)
