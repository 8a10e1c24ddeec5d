"""What resolving a sweep produces: ``TrialPlan`` (one trial to run), ``Skipped`` (a point that will not run,
with the reason), ``Plan`` (both, for one sweep) and the stable trial ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.mlflow_contract import default_tracking_uri
from model.config import TrialConfig
from orchestrator.plan.schema import SweepSpec


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
    branch_step: int | None = None  # a WSD cooldown branch: the trunk step it starts from (planned)
    branch_of: str | None = None  # ... and its trunk's trial id

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
        } | (
            {"branch_of": self.branch_of, "branch_step": self.branch_step}
            if self.branch_of is not None
            else {}
        )


@dataclass
class Skipped:
    trial_id: str
    axes: dict[str, Any]
    seed: int
    reason: str


class Notes(list):
    """A plan's notes: a list that holds each distinct note once, in the order first given.

    The same condition is found once per trial or data pool (an unreadable corpus is asked about for every
    quality level, every stage), but a reader needs it once; every way in (``append``, ``extend``, ``+=``,
    the constructor) skips a note already held, so no caller has to remember to.
    """

    def __init__(self, items=()):
        super().__init__()
        self.extend(items)

    def append(self, note: str) -> None:
        if note not in self:
            super().append(note)

    def extend(self, notes) -> None:
        for n in notes:
            self.append(n)

    def __iadd__(self, notes):
        self.extend(notes)
        return self


@dataclass
class Plan:
    spec: SweepSpec
    trials: list[TrialPlan]
    skipped: list[Skipped] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)
    storage_path: Path = Path("runs/sweeps")
    tracking_uri: str = ""

    @classmethod
    def start(cls, spec: SweepSpec) -> Plan:
        """An empty plan of ``spec``: its storage path resolved, its tracking URI (or the default store)."""
        return cls(
            spec=spec,
            trials=[],
            storage_path=Path(spec.storage_path).expanduser().resolve(),
            tracking_uri=spec.tracking_uri or default_tracking_uri(),
        )

    @property
    def sweep_dir(self) -> Path:
        return self.storage_path / self.spec.name

    def finish(self, cfg: TrialConfig, tid: str, name: str, axes: dict[str, Any]) -> None:
        """Give ``cfg`` its identity in this sweep: name, id, axes, output directory and tracking."""
        spec = self.spec
        cfg.name = name
        cfg.trial_id = tid
        cfg.sweep = spec.name
        cfg.axes = axes
        cfg.output_dir = str(self.sweep_dir / "trials" / tid)
        cfg.tracking.uri = self.tracking_uri
        cfg.tracking.experiment = spec.experiment
        cfg.tracking.run_name = name
        cfg.tracking.tags = {**cfg.tracking.tags, **spec.tags}


def canon(v: Any) -> Any:
    """An axis value as the trial id hashes it (whole floats as ints, mappings sorted)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, dict):
        return {str(k): canon(x) for k, x in sorted(v.items())}
    if isinstance(v, list | tuple):
        return [canon(x) for x in v]
    return v


def trial_id_for(axes: dict[str, Any], seed: int) -> str:
    """Stable id: a hash of the canonical axis values and the seed (same point -> same id, every submit)."""
    blob = json.dumps({"axes": canon(axes), "seed": int(seed)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def trial_name(axes: dict[str, Any]) -> str:
    """A trial's name from its axes: ``width=16 n_layers=2 compute_budget=1e+11 seed=0``."""
    return " ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in axes.items())


def fmt_value(v: Any) -> str:
    """An axis value as a trial name shows it (``0.5``, ``192/192/768``)."""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "/".join(f"{x}" for x in v.values())
    return str(v)
