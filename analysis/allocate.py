"""Compute-optimal allocation: for a FLOPs budget (or GPU-hours on a named GPU) the N and D that minimise
the Approach 3 loss, the predicted loss and quality metric with intervals, and the nearest model config.

Compute and data: C = k * N * D, with k the training FLOPs per generator parameter per audio second,
measured from the sweep (median over finished trials of C / (N * D); ``flops_per_param_unit``). For a
transformer LM k = 6 per token; VITS has no such constant (the decoder runs on a fixed segment, the
discriminators add FLOPs without adding N), so it is measured, and 6 is used only when the table lacks C.

GPU-hours -> FLOPs: the sweep's own measured throughput (median over finished trials whose ``gpu`` /
``gpu_name`` / ``system.gpu_name`` column names the GPU of ``steps_per_s * flops_per_step``, else of C / wall
time) when there is one; otherwise the planning figure of ``analysis.throughput`` (the GPU's dense bf16 peak
times the VITS MFU assumption, or ``mfu``), stated as an assumption in the result.

Verdict: an allocation is a result only when its Approach 3 fit is determined and its N_opt, D_opt and loss
intervals are finite and exclude 0 (``analysis.verdict.judge_allocation``). Otherwise the result carries
``verdict: undetermined`` and ``reasons``, and no allocation (no N_opt, D_opt, loss, metric or config):
nothing a printer could show as an answer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from analysis import laws
from analysis import verdict as V
from analysis.fit import FitRefused, FitResult
from analysis.throughput import DEFAULT_ACCELERATOR, accelerator, normalise
from model.config import ConfigError, DataConfig, ModelConfig, TrialConfig, build_dataclass

GPU_COLUMNS = ("gpu", "gpu_name", "system.gpu_name", "device_name")


def flops_per_param_unit(table: pd.DataFrame | None) -> tuple[float, str]:
    """k in C = k N D, measured as the median over trials of C / (N D); 6 (the LM rule) if unmeasurable."""
    if table is not None and {"C", "N", "D"} <= set(table.columns):
        r = (table["C"] / (table["N"] * table["D"])).to_numpy(float)
        r = r[np.isfinite(r) & (r > 0)]
        if len(r):
            return float(np.median(r)), f"median C/(N*D) over {len(r)} trials"
    return 6.0, "no C, N, D columns: assumed 6 FLOPs per parameter per unit of data (the LM rule)"


def gpu_throughput(
    gpu: str, table: pd.DataFrame | None = None, mfu: float | None = None
) -> tuple[float, str]:
    """FLOP/s on ``gpu``: measured from the table's trials on that GPU, else the planning figure of
    ``analysis.throughput`` (peak x ``mfu``, default the table's utilisation assumption), stated as assumed."""
    key = normalise(gpu)
    if table is not None:
        if {"steps_per_s", "flops_per_step"} <= set(table.columns):
            per_trial = table["steps_per_s"] * table["flops_per_step"]  # training-loop throughput
            how = "steps_per_s x flops_per_step"
        elif {"C", "wall_s"} <= set(table.columns):
            per_trial = table["C"] / table["wall_s"]  # includes evaluation and start-up: conservative
            how = "C / wall time"
        else:
            per_trial = None
        for col in GPU_COLUMNS if per_trial is not None else ():
            if col in table.columns:
                names = table[col].map(normalise)
                m = names.str.contains(key, regex=False) & np.isfinite(per_trial) & (per_trial > 0)
                if m.any():
                    tp = float(np.median(per_trial[m]))
                    return tp, f"measured: median {how} of {int(m.sum())} trials on {gpu} ({col!r})"
    try:
        row = accelerator(gpu)
    except ValueError as e:
        raise FitRefused("allocate", f"{e}, and no trials in the table measured on it") from None
    return row.achieved(mfu), row.describe(mfu)


def allocate(
    fit: FitResult,
    *,
    budget: float | None = None,
    gpu_hours: float | None = None,
    gpu: str = DEFAULT_ACCELERATOR,
    table: pd.DataFrame | None = None,
    two_step=None,
    level: float = 0.9,
    mfu: float | None = None,
    base_config=None,
    exact_count: bool = True,
) -> dict[str, Any]:
    """Compute-optimal (N, D) for a budget from an Approach 3 fit, with intervals from its bootstrap draws;
    the predicted loss; the chained metric when ``two_step`` (``analysis.predict.TwoStep``) is given and
    determined; the nearest model config realising N, counted with ``model.counting`` (``exact_count`` is
    accepted for existing callers and has no effect, see ``nearest_config``). Every result has ``verdict``
    and ``reasons``; an undetermined one has no allocation numbers (module docstring). No NaN anywhere."""
    if fit.law != "chinchilla":
        raise FitRefused("allocate", f"needs an Approach 3 fit, got {fit.law}")
    out: dict[str, Any] = {}
    if budget is None:
        if gpu_hours is None:
            raise FitRefused("allocate", "give a FLOPs budget or GPU-hours")
        tp, src = gpu_throughput(gpu, table, mfu)
        budget = gpu_hours * 3600.0 * tp
        out.update({"gpu": gpu, "gpu_hours": gpu_hours, "flops_per_s": tp, "throughput_source": src})
    if not (budget > 0):
        raise FitRefused("allocate", f"budget must be positive, got {budget}")
    if base_config is None and table is not None:
        base_config = base_model_from_table(table)
    k, k_src = flops_per_param_unit(table)
    p = fit.params
    for name, other in (("alpha", "N"), ("beta", "D")):
        if not p[name] > EXPONENT_FLOOR:
            raise FitRefused(
                "allocate",
                f"the Approach 3 fit has {name} = {p[name]:.3g}: the loss does not fall with {other} over these "
                f"trials, so no compute-optimal split exists (add trials that vary {other} at fixed compute)",
            )
    out.update({"budget_flops": float(budget), "k": k, "k_source": k_src, "level": level})
    fv = fit.assess()
    if not fv.determined:
        return _withheld(out, V.judge_allocation(fv))
    N, D = laws.compute_optimal(budget, p["A"], p["B"], p["alpha"], p["beta"], k)
    L = laws.chinchilla(N, D, p["E"], p["A"], p["B"], p["alpha"], p["beta"])
    q = (1 - level) / 2
    out["N_opt"], out["D_opt"], out["loss"] = float(N), float(D), float(L)
    s = fit.samples
    with np.errstate(all="ignore"):
        Ns, Ds = laws.compute_optimal(budget, s["A"], s["B"], s["alpha"], s["beta"], k)
        Ls = laws.chinchilla(Ns, Ds, s["E"], s["A"], s["B"], s["alpha"], s["beta"])
    for name, arr in (("N_opt", Ns), ("D_opt", Ds), ("loss", Ls)):
        arr = np.asarray(arr, float)
        arr = arr[np.isfinite(arr)]
        out[f"{name}_ci"] = [float(np.quantile(arr, q)), float(np.quantile(arr, 1 - q))] if len(arr) else None
    v = V.judge_allocation(fv, out)
    if not v.determined:
        return _withheld(out, v)
    out["D_opt_hours"] = float(D) / 3600.0
    out["a"], out["b"] = p["a"], p["b"]
    if two_step is not None:
        tv = two_step.assess()
        pr = two_step.predict_budget(budget, k=k, level=level)
        why = V.judge_interval(two_step.metric, [pr["low"][0], pr["high"][0]], level, positive=False)
        if tv.determined and why is None:
            out["metric_name"] = two_step.metric
            out["metric"] = float(pr["metric"][0])
            out["metric_ci"] = [float(pr["low"][0]), float(pr["high"][0])]
        else:
            out["metric_note"] = f"no {two_step.metric} prediction: " + "; ".join(
                tv.texts or [why.text if why else ""]
            )
    out["config"] = nearest_config(float(N), base_config, exact=exact_count)
    out.update(v.to_dict())
    out.pop("at_bound_share", None)
    return V.clean(out)


def _withheld(out: dict[str, Any], v: V.Verdict) -> dict[str, Any]:
    """An undetermined allocation: the budget and how it was read, the verdict and its reasons, no numbers
    of the allocation itself."""
    keep = {k: out[k] for k in out if not k.startswith(("N_opt", "D_opt", "loss"))}
    return V.clean({**keep, "verdict": v.verdict, "reasons": v.texts})


# ----------------------------------------------------------------------------------------------------------
# nearest model config

EXPONENT_FLOOR = 1e-3  # an exponent at (or near) its lower bound 0 means the law has no such term

WIDTHS = (
    8,
    12,
    16,
    24,
    32,
    48,
    64,
    96,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    448,
    512,
    640,
    768,
    896,
    1024,
    1280,
    1536,
)
DEPTHS = tuple(range(1, 25))


def variant(base, width: int, depth: int):
    """The candidate config of ``width`` and ``depth``: ``base`` with hidden = inter = width, filter = 4 width,
    decoder initial channels scaled by width / base width (a multiple of 16, at least 16), ``depth`` text-encoder
    and flow transformer layers, heads = width // 96 rounded down to a power of two (head size near SBV2's
    96), at least 1."""
    scale = width / base.hidden_channels
    heads = 2 ** max(0, int(math.log2(max(1, width // 96))))
    while width % heads:
        heads //= 2
    return dataclasses.replace(
        base,
        hidden_channels=width,
        inter_channels=width,
        filter_channels=4 * width,
        n_heads=heads,
        n_layers=depth,
        n_layers_trans_flow=depth,
        upsample_initial_channel=max(16, int(round(base.upsample_initial_channel * scale / 16)) * 16),
    )


def base_model_from_table(table: pd.DataFrame):
    """The sweep's own model and feature config (from the ``model.*`` / ``data.*`` params of its first trial),
    so the nearest config of an allocation varies the architecture the sweep trained; None without them."""
    if table is None or table.empty:
        return None
    sections = {}
    for section, cls in (("model", ModelConfig), ("data", DataConfig)):
        sections[section] = _section_from_row(table.iloc[0], section, cls)
        if sections[section] is None:
            return None
    return TrialConfig(model=sections["model"], data=sections["data"])


def _section_from_row(row, section: str, cls):
    import yaml

    cols = [c for c in row.index if c.startswith(section + ".") and c.count(".") == 1]
    if not cols:
        return None
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    raw = {}
    for c in cols:
        v = row[c]
        if v == "None":  # str(None), as MLflow stores an unset optional value
            continue
        if isinstance(v, str):
            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError:
                pass
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        key = c[len(section) + 1 :]
        if types.get(key, "").startswith("str") and not isinstance(v, str):
            v = str(v)  # e.g. resblock "2", read back from the table as a number
        raw[key] = v
    try:
        return build_dataclass(cls, raw, strict=False, where="table")
    except (ConfigError, TypeError, ValueError):
        return None


def nearest_config(
    N_target: float, base=None, *, exact: bool = True, widths=WIDTHS, depths=DEPTHS
) -> dict[str, Any]:
    """The (width, depth, heads) variant of ``base`` (default: the public JP-Extra ``ModelConfig``) whose
    generator parameter count, counted by ``model.counting.parameter_counts``, is nearest N_target in log
    scale, with a small preference for the base's depth/width aspect: the variant minimising
    |log(N / N_target)| + 0.02 |log(aspect / base aspect)| over ``widths`` x ``depths``.

    Why it does not count every candidate: building one variant's nets on ``meta`` to count them takes
    about 0.35 s (measured on 2 busy cores), so the 23 x 24 candidates would take over 3 minutes. Two
    properties of the architecture make the search exact yet cheap: at a fixed width the count is affine in
    depth (every text-encoder and flow transformer layer adds the same parameters), so the counts at the
    shallowest and the deepest depth give every depth's count; and the count grows with width at every
    depth (both checked over the whole grid when this was written), so a bisection finds the first width
    whose deepest variant reaches N_target and only the neighbouring widths whose count range could still
    beat the best score are counted (6 to 17 nets over 3e6..1e10, 2-6 s). The winner is then counted directly;
    should that disagree with its width's line (a model change broke the affine property), every depth of
    the searched widths is counted directly instead. Variants the model rejects (``ConfigError``, e.g. too
    few decoder channels at width 8) are not candidates.

    ``exact`` is accepted for existing callers and has no effect: the analytic estimate it used to switch
    to is gone, every count comes from ``model.counting``."""
    from model.counting import parameter_counts  # torch: only loaded when a config is sized

    data = base.data if isinstance(base, TrialConfig) else DataConfig()
    base = base.model if isinstance(base, TrialConfig) else (base or ModelConfig())
    aspect0 = base.n_layers / base.hidden_channels
    ds = sorted(set(depths))
    d_lo, d_hi = ds[0], ds[-1]
    counts: dict[tuple[int, int], int | None] = {}

    def count(w: int, d: int) -> int | None:
        if (w, d) not in counts:
            try:
                cfg = TrialConfig(model=variant(base, w, d), data=data)
                counts[w, d] = parameter_counts(cfg)["generator"]["total"]
            except ConfigError:
                counts[w, d] = None
        return counts[w, d]

    def direct_line(w: int) -> dict[int, int] | None:
        out = {d: n for d in ds if (n := count(w, d)) is not None}
        return out or None

    def affine_line(w: int) -> dict[int, int] | None:
        lo, hi = count(w, d_lo), count(w, d_hi)
        if lo is None and hi is None:
            return None  # the model rejects this width
        if lo is None or hi is None:
            return direct_line(w)
        step, rem = divmod(hi - lo, max(d_hi - d_lo, 1))
        if rem:
            return direct_line(w)
        return {d: lo + (d - d_lo) * step for d in ds}

    def score(w: int, d: int, n: int) -> float:
        return abs(math.log(n / N_target)) + 0.02 * abs(math.log((d / w) / aspect0))

    def search(line) -> tuple[float, int, int, int] | None:
        ws = sorted(set(widths))
        lo, hi = 0, len(ws)
        while lo < hi:  # first width whose deepest variant reaches the target
            mid = (lo + hi) // 2
            n = count(ws[mid], d_hi)
            if n is None:
                ws.pop(mid)
                hi -= 1
            elif n < N_target:
                lo = mid + 1
            else:
                hi = mid
        best = None
        # wider: stop at the first width whose smallest variant is further from the target than the best
        # score (every wider variant is larger still); a tie there would lose to the narrower one anyway
        for w in ws[lo:]:
            n_lo = count(w, d_lo)  # the shallowest variant first: one net decides whether to go on
            if best is not None and n_lo is not None and math.log(n_lo / N_target) >= best[0]:
                break
            by_depth = line(w)
            if by_depth is None:
                continue
            if best is not None and math.log(min(by_depth.values()) / N_target) >= best[0]:
                break
            best = min([(score(w, d, n), w, d, n) for d, n in by_depth.items()] + ([best] if best else []))
        # narrower: the same bound from below
        for w in reversed(ws[:lo]):
            n_hi = count(w, d_hi)  # counted by the bisection already, often
            if best is not None and n_hi is not None and math.log(N_target / n_hi) > best[0]:
                break
            by_depth = line(w)
            if by_depth is None:
                continue
            if best is not None and math.log(N_target / max(by_depth.values())) > best[0]:
                break
            best = min([(score(w, d, n), w, d, n) for d, n in by_depth.items()] + ([best] if best else []))
        return best

    found = search(affine_line)
    if found is not None and count(found[1], found[2]) != found[3]:
        found = search(direct_line)
    if found is None:
        raise FitRefused("nearest config", "model.counting rejects every width x depth variant of the base")
    _, w, dpt, n = found
    v = variant(base, w, dpt)
    return {
        "width": v.hidden_channels,
        "depth": v.n_layers,
        "heads": v.n_heads,
        "filter_channels": v.filter_channels,
        "upsample_initial_channel": v.upsample_initial_channel,
        "N": int(n),
        "N_target": float(N_target),
        "rel_error": float(n / N_target - 1.0),
    }
