"""Queries over a sweep's MLflow runs: the tidy trial rows, the best trials, the sweep's status table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.mlflow_contract import (
    ROLE_TRIAL,
    TAG_ERROR,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    StoreNotFound,
    default_tracking_uri,
    existing_store,
)
from orchestrator import state as st
from orchestrator.expr import Expr, ExprError
from orchestrator.tracking import Tracker

STATUS_METRICS = ("loss_g_total", "loss_mel", "val_mel_l1", "dnsmos_ovrl")


def _value(s: str) -> Any:
    try:
        return json.loads(s)
    except (TypeError, ValueError):
        return s


def locate(
    sweep: str, *, storage: str | None = None, tracking_uri: str | None = None, experiment: str | None = None
) -> tuple[str, str, Path | None]:
    """(tracking URI, experiment, sweep dir or None) of a sweep: from its saved state, else the arguments."""
    try:
        d = st.find_sweep(sweep, storage)
        s = st.load_state(d)
        return tracking_uri or s["tracking_uri"], experiment or s["experiment"], d
    except st.SweepNotFound:
        if tracking_uri is None and experiment is None and storage is not None:
            raise

        return tracking_uri or default_tracking_uri(), experiment or "vits-scaling", None


def trial_rows(
    sweep: str,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> list[dict[str, Any]]:
    """One row per child run of ``sweep``: trial, run_id, status, axes, N, C, D and every final metric."""
    uri, exp, sweep_dir = locate(sweep, storage=storage, tracking_uri=tracking_uri, experiment=experiment)
    name = st.load_state(sweep_dir)["name"] if sweep_dir else sweep
    try:
        tracker = Tracker(existing_store(uri), retry_s=10)  # a query: never creates a store
    except StoreNotFound as e:
        raise st.SweepNotFound(f"sweep {sweep!r} not found: no saved state, and {e}") from None
    eid = tracker.experiment_id(exp, create=False)
    if eid is None:
        raise st.SweepNotFound(f"sweep {sweep!r} not found: no MLflow experiment {exp!r} in {uri}")
    runs = tracker.search(eid, {TAG_SWEEP: name, TAG_ROLE: ROLE_TRIAL})
    rows = []
    for r in runs:
        tags, params, metrics = r.data.tags, r.data.params, dict(r.data.metrics)
        axes = {k[len("axis.") :]: _value(v) for k, v in params.items() if k.startswith("axis.")}
        rows.append(
            {
                "trial": tags.get(TAG_TRIAL),
                "sweep": name,
                "run_id": r.info.run_id,
                "name": r.info.run_name,
                "status": tags.get(TAG_STATUS, r.info.status.lower()),
                "error": tags.get(TAG_ERROR),
                "axes": axes,
                "N": metrics.get("params_generator"),
                "D": metrics.get("data_seen_s"),
                "C": metrics.get("flops"),
                "metrics": metrics,
            }
        )
    rows.sort(key=lambda x: x["trial"] or "")
    return rows


def _env(row: dict[str, Any]) -> dict[str, Any]:
    env = dict(row["metrics"])
    env.update({k: v for k, v in row["axes"].items()})
    env.update({k.split(".")[-1]: v for k, v in row["axes"].items() if "." in k})
    env.update(N=row["N"], D=row["D"], C=row["C"], status=row["status"], trial=row["trial"])
    return env


def best(
    sweep: str,
    metric: str,
    mode: str = "min",
    top: int = 5,
    where: str | None = None,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    include_unfinished: bool = False,
) -> list[dict[str, Any]]:
    """The ``top`` finished trials of ``sweep`` by ``metric`` (``mode`` min|max), optionally filtered by ``where``."""
    if mode not in ("min", "max"):
        raise ValueError(f"--mode: {mode!r} (allowed: min, max)")
    if top < 1:
        raise ValueError("--top: must be >= 1")
    rows = trial_rows(sweep, storage=storage, tracking_uri=tracking_uri, experiment=experiment)
    if not rows:
        raise ValueError(f"sweep {sweep!r} has no trial runs")
    known = set().union(*(_env(r).keys() for r in rows))
    if metric not in known:
        raise ValueError(
            f"--metric: {metric!r} is not logged by any trial (known: {', '.join(sorted(known))})"
        )
    ex = None
    if where:
        try:
            ex = Expr(where)
            ex.check_names(known)
        except ExprError as e:
            raise ValueError(f"--where: {e}") from None
    out = []
    for r in rows:
        if not include_unfinished and r["status"] not in ("finished", "diverged"):
            continue
        env = _env(r)
        if env.get(metric) is None:
            continue
        if ex is not None:
            try:
                if not ex({k: env.get(k) for k in known}):
                    continue
            except ExprError as e:
                raise ValueError(f"--where: {e}") from None
        out.append({**r, "value": env[metric], "metric": metric})
    out.sort(key=lambda r: r["value"], reverse=(mode == "max"))
    return out[:top]


def sweep_status(name: str, *, storage: str | None = None) -> dict[str, Any]:
    """The sweep's state (driver alive?, counts) and a row per trial: status, step, latest metrics, run id."""
    sweep_dir = st.find_sweep(name, storage)
    state = st.load_state(sweep_dir)
    trials = st.load_trials(sweep_dir)
    by_run = {}
    try:
        for r in trial_rows(state["name"], storage=str(sweep_dir.parent)):
            by_run[r["run_id"]] = r
        tracking_error = None
    except Exception as e:  # tracking store down: still show what the local files say
        tracking_error = f"{type(e).__name__}: {e}"
    rows = []
    for tid, d in trials.items():
        r = by_run.get(d["tracking"].get("run_id"), {})
        m = r.get("metrics", {})
        local = Path(d["output_dir"]) / "tracking" / "status.json"
        status = r.get("status") or (json.loads(local.read_text())["status"] if local.exists() else "unknown")
        rows.append(
            {
                "trial_id": tid,
                "name": d["name"],
                "status": status,
                "step": int(m["steps"]) if "steps" in m else None,
                "metrics": {k: m[k] for k in STATUS_METRICS if k in m},
                "run_id": d["tracking"].get("run_id"),
                "error": (r.get("error") or "").splitlines()[0] if r.get("error") else None,
            }
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {
        "name": state["name"],
        "sweep_dir": str(sweep_dir),
        "state": state.get("status"),
        "driver_alive": st.driver_alive(state),
        "tracking_uri": state["tracking_uri"],
        "parent_run_id": state["parent_run_id"],
        "counts": counts,
        "tracking_error": tracking_error,
        "trials": rows,
    }
