"""Sizes, steps and time estimates for a sweep plan, asking other packages lazily.

* Parameter counts and FLOPs per step come from ``model.counting.model_info`` (meta-device count, cached per
  model shape). If that package cannot be imported or fails, the table shows blanks and a note says why.
* Corpus size comes from ``model.data.available_hours(data_cfg)`` when the data package provides it; for the
  built-in corpus ``data.builtin_hours`` is known without it.
* Steps of a budget come from ``model.train.budget.steps_for_budget``, the rule the trainer uses.
* The N range of the sweep (``param_range``): smallest and largest generator, and a warning when it spans
  less than 4x.
* Time = steps x FLOPs per step / achieved FLOP/s + a per-trial overhead. Achieved FLOP/s is the sweep's
  ``estimate.flops_per_s``, else the planning figure of its ``estimate.accelerator`` in the one throughput
  table (``analysis.throughput``: peak x the VITS utilisation assumption), else (GPU) that table's default
  accelerator, else (CPU) a quick matmul measurement x the table's CPU utilisation (convolutions and small
  tensors run far below a matmul). It is an estimate and labelled as one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from analysis.throughput import ACCELERATORS, CPU_UTILISATION, DEFAULT_ACCELERATOR, accelerator
from orchestrator.plan.types import Plan, Skipped

log = logging.getLogger(__name__)

MIN_N_RATIO = 4.0  # a sweep whose largest generator is under 4x its smallest cannot pin down L(N)
_cpu_flops: float | None = None
_measured: dict[str, dict[str, Any]] = {}


def available_hours(data_cfg, notes: list[str] | None = None) -> float | None:
    """Hours of training audio the configured corpus holds, or None if it cannot be told before launch.

    The built-in corpus is only asked about once it has been built (building it takes minutes); before
    that its configured size ``data.builtin_hours`` is the bound.
    """
    selective = any(getattr(data_cfg, k, None) is not None for k in ("min_quality", "sources"))
    if data_cfg.corpus == "builtin" and not selective:  # a filter or mixture needs the real pool
        built = Path(data_cfg.corpus_dir)
        if not (built.is_dir() and any(built.iterdir())):
            return float(data_cfg.builtin_hours)
    try:
        from model import data as mdata  # loads torch; and may not be importable (yet)

        fn = getattr(mdata, "available_hours", None)
    except Exception as e:  # the data package is not importable (yet)
        fn = None
        log.debug("model.data unavailable: %s", e)
    if fn is not None:
        try:
            return float(fn(data_cfg))
        except Exception as e:
            if notes is not None:
                notes.append(f"corpus size unknown ({type(e).__name__}: {e}); data_hours not checked")
            return None
    if data_cfg.corpus == "builtin":
        return float(data_cfg.builtin_hours)
    if notes is not None:
        notes.append("corpus size unknown (model.data.available_hours missing); data_hours not checked")
    return None


def measure(cfg) -> dict[str, Any]:
    """``{"params_generator", "params_discriminator", "flops_per_step"}`` or ``{"error": ...}`` (cached per shape)."""
    key = json.dumps(
        [asdict(cfg.model), asdict(cfg.data), cfg.train.batch_size, cfg.train.segment_size], default=str
    )
    if key not in _measured:
        try:
            from model.counting import model_info  # loads torch; a failure is reported, not raised

            info = model_info(cfg)
            _measured[key] = {
                "params_generator": int(info["generator"]["total"]),
                "params_discriminator": int(info["discriminator"]["total"]),
                "flops_per_step": float(info["flops_per_step"]),
            }
        except Exception as e:
            _measured[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return dict(_measured[key])


def cpu_flops_per_s() -> float:
    """Achieved single-trial FLOP/s on this CPU: an fp32 matmul measured now x ``CPU_UTILISATION``."""
    global _cpu_flops
    if _cpu_flops is None:
        import torch  # heavy: only when a CPU estimate is asked for

        n = 256
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            a @ b
            reps += 1
        _cpu_flops = 2 * n**3 * reps / (time.perf_counter() - t0) * CPU_UTILISATION
    return _cpu_flops


def trial_seconds(spec, steps: int, flops_per_step: float) -> float:
    """Estimated wall time of ``steps`` training steps of one trial (each at least ``estimate.step_s``), plus
    the per-trial overhead."""
    est = spec.estimate
    rate = est.flops_per_s
    if rate is None and est.accelerator:
        rate = accelerator(est.accelerator).achieved()
    if rate is None:
        rate = ACCELERATORS[DEFAULT_ACCELERATOR].achieved() if spec.resources.gpu > 0 else cpu_flops_per_s()
    return steps * max(flops_per_step / rate, est.step_s) + est.overhead_s


def param_range(plan: Plan, *, min_ratio: float = MIN_N_RATIO) -> dict[str, Any] | None:
    """The sweep's generator-parameter range (``model.counting``), with a warning below ``min_ratio`` x.

    ``{"min", "max", "ratio", "sizes", "warning"}`` (``warning`` None when the range is wide enough); None when
    no trial was counted. A fit of L(N) over a narrow range cannot tell the exponent from the constant.
    """
    ns = sorted({tp.params_generator for tp in plan.trials if tp.params_generator})
    if not ns:
        return None
    lo, hi = ns[0], ns[-1]
    ratio = hi / lo
    warning = None
    if ratio < min_ratio:
        warning = (
            f"N spans {ratio:.2g}x ({si(lo)}-{si(hi)}): a fit of L(N) needs a wider range; add sizes "
            f"(a `size` axis or wider `width` / `n_layers` values) until the largest is >= {min_ratio:g}x the "
            "smallest"
        )
    return {"min": lo, "max": hi, "ratio": ratio, "sizes": len(ns), "warning": warning}


def si(x: float | None, unit: str = "") -> str:
    """A count as the dry run shows it: ``216k``, ``1.3M``, ``3e+11`` FLOPs as ``300G``; None as ``-``."""
    if x is None:
        return "-"
    for f, p in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= f:
            return f"{x / f:.3g}{p}{unit}"
    return f"{x:.3g}{unit}"


def estimate_plan(plan: Plan) -> None:
    """Fill sizes, steps and time for every trial; move points whose budget is below one step to skipped.

    A trial with neither steps nor a budget (a WSD trunk: ``orchestrator.plan.branches`` sets its steps)
    keeps ``steps`` and the time estimate empty here."""
    from model.train.budget import steps_for_budget  # the model.train package loads torch

    spec = plan.spec
    errors: set[str] = set()
    kept = []
    for tp in plan.trials:
        info = measure(tp.config)
        if "error" in info:
            errors.add(info["error"])
        tp.params_generator = info.get("params_generator")
        tp.params_discriminator = info.get("params_discriminator")
        tp.flops_per_step = info.get("flops_per_step")
        t = tp.config.train
        if t.steps:
            tp.steps = int(t.steps)
        elif t.compute_budget and tp.flops_per_step:
            if t.compute_budget < tp.flops_per_step:
                plan.skipped.append(
                    Skipped(
                        tp.trial_id,
                        tp.axes,
                        tp.seed,
                        f"compute_budget {t.compute_budget:.3g} FLOPs is less than one training step "
                        f"({tp.flops_per_step:.3g} FLOPs/step)",
                    )
                )
                continue
            tp.steps = steps_for_budget(t.compute_budget, tp.flops_per_step)
        if tp.steps and tp.flops_per_step:
            tp.est_seconds = trial_seconds(spec, tp.steps, tp.flops_per_step)
        kept.append(tp)
    plan.trials = kept
    for e in sorted(errors):
        plan.notes.append(f"sizes/FLOPs unavailable: {e}")
