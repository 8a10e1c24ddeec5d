"""The tidy table every analysis starts from, from MLflow or from a CSV / Parquet file.

One row per trial: ``trial``, ``sweep``, ``run_id``, ``status``, ``axis.<name>`` per sweep axis (prefixed so
an axis such as ``data_hours`` never collides with the metric of the same name), the flattened config
params (numbers parsed), ``N`` (= ``params_generator``: generator parameters, the network that ships; use
``N_total`` = generator + discriminator parameters to count what is trained), ``D`` (= ``data_seen_s``,
audio seconds seen in training), ``C`` (= final cumulative measured ``flops``), ``data_hours`` (unique
training hours), ``wall_s`` (run wall time), and every final metric (the last logged value).
The text-feature model (model/text/features.py) is not in ``N`` or ``C``; ``params_text_model``,
``flops_text_features``, ``N_with_text`` and ``C_with_text`` count it (``add_text_model_columns``).
Sweeps with stages (pretrain -> fine-tune) add ``stage`` and ``from_trial`` (from the run tags) and
``pretrain_flops`` / ``pretrain_hours`` (0 for trials that started from scratch); ``C``, ``D`` and
``data_hours`` of a fine-tuned trial count its fine-tuning only.
Sweeps with WSD branches (``wsd_branches``) add ``branch`` (trunk | cooldown), ``branch_of`` (a cooldown's
trunk trial id) and ``branch_step`` (the trunk step it started from); a cooldown's ``C`` and ``D`` include
the trunk's stable part up to that step, so it is an ordinary trial for every fit. Trunk runs are left out
by default (``include_trunks=False``): their end point is at constant lr, never cooled down, so it is not
the loss of a run of that length.

This module is the only one in ``analysis/`` that imports mlflow (lazily, inside functions).

MLflow layout read (written by ``orchestrator.tracking``): trial runs carry the tags ``vits_scaling.sweep``,
``vits_scaling.trial_id`` and ``vits_scaling.status``; the sweep's parent run carries ``vits_scaling.sweep``
and ``vits_scaling.role=sweep`` (or, from older writers, simply no trial id). A trial id that appears on several runs (a re-run) keeps its latest finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.mlflow_contract import (
    BRANCH_TRUNK,
    TAG_BRANCH,
    TAG_BRANCH_OF,
    TAG_BRANCH_STEP,
    TAG_FROM,
    TAG_STAGE,
    TAG_SWEEP,
    TAG_TRIAL,
    USABLE_STATUS,
    StoreNotFound,
    active_experiment_ids,
    existing_store,
    is_sweep_run,
    run_status,
    search_runs,
    tracking_uri,
)

PRETRAIN_COLS = ("pretrain_flops", "pretrain_hours")
BRANCH_TAGS = ((TAG_BRANCH, "branch"), (TAG_BRANCH_OF, "branch_of"), (TAG_BRANCH_STEP, "branch_step"))


class TableError(ValueError):
    """The source cannot be read into a table (missing file, unknown sweep, missing column)."""


def mlflow_client(uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=existing_store(tracking_uri(uri)))  # analysis only reads: never creates


# ----------------------------------------------------------------------------------------------------------
# files


def read_file(
    path: str | Path,
    *,
    n_col: str | None = None,
    d_col: str | None = None,
    c_col: str | None = None,
    include_trunks: bool = False,
) -> pd.DataFrame:
    """A CSV or Parquet table. ``n_col`` / ``d_col`` / ``c_col`` name the columns to use as N, D, C
    (default: columns already called N, D, C). A long file with a ``step`` column and several rows per
    trial is read as curves: the table keeps each trial's last row (``curves_from_file`` gives the rest).
    Rows with ``branch == "trunk"`` are left out unless ``include_trunks``, as in ``read_mlflow``."""
    df = _read_raw(path)
    for want, col in (("N", n_col), ("D", d_col), ("C", c_col)):
        if col is None or col == want:
            continue
        if col not in df.columns:
            raise TableError(f"{path}: no column {col!r} (for {want}); columns are {list(df.columns)}")
        if want in df.columns:
            df = df.drop(columns=[want])
        df = df.rename(columns={col: want})
    if "trial" not in df.columns:
        df.insert(0, "trial", [f"row{i}" for i in range(len(df))])
    df["trial"] = df["trial"].astype(str)
    check_numeric(df, path)
    if "status" not in df.columns:
        df["status"] = "finished"
    if "step" in df.columns and df["trial"].duplicated().any():
        df = df.sort_values(["trial", "step"]).groupby("trial", sort=False).tail(1).reset_index(drop=True)
    df.attrs["source"] = str(path)
    return df if include_trunks else drop_trunks(df)


def check_numeric(df: pd.DataFrame, path: str | Path) -> None:
    """Refuse a number column with a cell that is not a number, naming the file, column, row and trial.

    A number column is N, D, C or step, or any column most of whose filled cells are numbers (a metric or
    a numeric axis): one stray ``abc`` there would otherwise surface deep in a fit as "could not convert
    string to float". Rows count as in the file: row 2 is the first line under a CSV header. The seed
    column is left to ``analysis.noise``, which names a mixed one and fits on without seed noise.
    """
    for col in df.columns:
        if col in ("trial", "seed", "axis.seed") or df[col].dtype.kind in "biufc":
            continue
        filled = df[col].dropna()
        if filled.empty:
            continue
        as_num = pd.to_numeric(filled, errors="coerce")
        bad = as_num.isna()
        if not bad.any() or (col not in ("N", "D", "C", "step") and bad.mean() >= 0.5):
            continue
        i = bad.idxmax()
        raise TableError(
            f"{path}: column {col!r}, row {int(i) + 2} (trial {df.at[i, 'trial']}): {filled[i]!r} is not a "
            f"number ({int(bad.sum())} such cell(s) in the column)"
        )


def _read_raw(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise TableError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
    except Exception as e:  # pandas raises many kinds; name the file
        raise TableError(f"{p}: cannot read as a table ({e})") from e
    raise TableError(f"{p}: unknown table format {suffix!r} (use .csv, .tsv or .parquet)")


def curves_from_file(path: str | Path, metric: str, **cols) -> pd.DataFrame | None:
    """Long-format curves (trial, step, N, C, D, metric) from a file, or None if it has one row per trial."""
    df = _read_raw(path)
    for want in ("N", "D", "C"):
        col = cols.get(f"{want.lower()}_col")
        if col and col != want and col in df.columns:
            df = df.drop(columns=[want], errors="ignore").rename(columns={col: want})
    if "step" not in df.columns or "trial" not in df.columns or not df["trial"].duplicated().any():
        return None
    need = ["trial", "step", "N", "C", "D", metric]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise TableError(f"{path}: curves need columns {missing}")
    out = df[need].rename(columns={metric: "L"}).dropna()
    out["trial"] = out["trial"].astype(str)
    return out


# ----------------------------------------------------------------------------------------------------------
# MLflow


def add_text_model_columns(row: dict[str, Any]) -> None:
    """The text-feature model counted in or not (one documented choice, both available): ``N`` and ``C``
    leave it out (it is frozen and runs once per corpus, like the WavLM feature model); ``N_with_text`` =
    ``N + params_text_model`` and ``C_with_text`` = ``C + flops_text_features`` count it (``--n-col
    N_with_text --c-col C_with_text``). Runs without the metrics (older runs, text features off) count 0."""
    for col in ("params_text_model", "flops_text_features"):
        v = row.get(col)
        row[col] = 0.0 if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
    row["N_with_text"] = row["N"] + row["params_text_model"]
    row["C_with_text"] = row["C"] + row["flops_text_features"]


def sweep_runs(sweep: str, uri: str | None = None) -> tuple[Any, list]:
    """(parent run or None, trial runs) of a sweep, one run per trial id (the latest finished one)."""
    try:
        client = mlflow_client(uri)
    except StoreNotFound as e:
        raise TableError(f"sweep {sweep!r} not found: {e}") from None
    runs = search_runs(client, active_experiment_ids(client), f"tags.`{TAG_SWEEP}` = '{sweep}'")
    parents = [r for r in runs if is_sweep_run(r)]
    children: dict[str, Any] = {}
    for r in runs:
        tid = r.data.tags.get(TAG_TRIAL)
        if tid is None:
            continue
        prev = children.get(tid)
        if prev is None or _rank(r) > _rank(prev):
            children[tid] = r
    parent = max(parents, key=lambda r: r.info.start_time or 0) if parents else None
    return parent, [children[k] for k in sorted(children, key=_natural)]


def _rank(run):
    return (run_status(run) == "finished", run.info.start_time or 0)


def _natural(s: str):
    return (0, int(s), s) if s.isdigit() else (1, 0, s)


def _num(v: str) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def find_parent_run(sweep: str, uri: str | None = None) -> str | None:
    parent, _ = sweep_runs(sweep, uri)
    return parent.info.run_id if parent is not None else None


def drop_trunks(df: pd.DataFrame) -> pd.DataFrame:
    """The table without WSD trunk runs (``branch == "trunk"``); unchanged without a ``branch`` column."""
    if "branch" not in df.columns:
        return df
    out = df[df["branch"].astype(str) != BRANCH_TRUNK].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def read_mlflow(sweep: str, uri: str | None = None, *, include_trunks: bool = False) -> pd.DataFrame:
    """The tidy table of a sweep's trial runs (WSD trunks left out unless ``include_trunks``). Raises
    ``TableError`` when the sweep has no trial runs."""
    parent, runs = sweep_runs(sweep, uri)
    if not runs:
        raise TableError(f"no trial runs tagged {TAG_SWEEP}={sweep!r} in {tracking_uri(uri)}")
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "trial": r.data.tags[TAG_TRIAL],
            "sweep": sweep,
            "run_id": r.info.run_id,
            "status": run_status(r),
        }
        for k, v in r.data.params.items():
            row[k] = _num(v)
        for tag, col in ((TAG_STAGE, "stage"), (TAG_FROM, "from_trial"), *BRANCH_TAGS):
            if tag in r.data.tags:
                row[col] = r.data.tags[tag]
        for k in ("system.gpu_name", "gpu_name", "gpu"):  # the GPU a trial ran on, if a tag records it
            if k in r.data.tags and k not in row:
                row[k] = r.data.tags[k]
        row.update(r.data.metrics)
        if "branch_step" in row:  # the tag (text) or the trainer's metric
            row["branch_step"] = _num(str(row["branch_step"]))
        row["N"] = r.data.metrics.get("params_generator", np.nan)
        if "params_discriminator" in r.data.metrics:
            row["N_total"] = row["N"] + r.data.metrics["params_discriminator"]
        row["D"] = r.data.metrics.get("data_seen_s", np.nan)
        row["C"] = r.data.metrics.get("flops", np.nan)
        add_text_model_columns(row)
        end, start = r.info.end_time, r.info.start_time
        row["wall_s"] = (end - start) / 1000.0 if end and start else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if "stage" in df.columns or any(c in df.columns for c in PRETRAIN_COLS):
        for c in PRETRAIN_COLS:  # a trial without pretraining metrics started from scratch: 0
            df[c] = pd.to_numeric(df[c], errors="coerce").fillna(0.0) if c in df.columns else 0.0
    df.attrs["source"] = f"mlflow:{tracking_uri(uri)} sweep={sweep}"
    df.attrs["parent_run_id"] = parent.info.run_id if parent is not None else None
    return df if include_trunks else drop_trunks(df)


def curves_mlflow(table: pd.DataFrame, metric: str, uri: str | None = None) -> pd.DataFrame:
    """Metric histories of the table's runs as long curves: trial, step, N, C (cumulative ``flops`` at that
    step), D (``data_seen_s`` at that step), L (the metric). Each metric point takes the latest logged
    ``flops`` / ``data_seen_s`` at or before its step."""
    client = mlflow_client(uri)
    out = []
    for _, row in table.iterrows():
        hist = {k: _history(client, row["run_id"], k) for k in (metric, "flops", "data_seen_s")}
        if hist[metric].empty or hist["flops"].empty or hist["data_seen_s"].empty:
            continue
        m = hist[metric].rename(columns={"value": "L"})
        m = pd.merge_asof(m, hist["flops"].rename(columns={"value": "C"}), on="step")
        m = pd.merge_asof(m, hist["data_seen_s"].rename(columns={"value": "D"}), on="step")
        m["trial"], m["N"] = row["trial"], row["N"]
        out.append(m.dropna())
    if not out:
        return pd.DataFrame(columns=["trial", "step", "N", "C", "D", "L"])
    return pd.concat(out, ignore_index=True)[["trial", "step", "N", "C", "D", "L"]]


def _history(client, run_id: str, key: str) -> pd.DataFrame:
    h = client.get_metric_history(run_id, key)
    df = pd.DataFrame({"step": [m.step for m in h], "value": [m.value for m in h]})
    return df.sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)


def log_artifacts(
    run_id: str, local_dir: str | Path, uri: str | None = None, artifact_path: str = "report"
) -> None:
    mlflow_client(uri).log_artifacts(run_id, str(local_dir), artifact_path=artifact_path)


# ----------------------------------------------------------------------------------------------------------
# one entry point


def load(
    source: str | Path, *, tracking_uri_: str | None = None, n_col=None, d_col=None, c_col=None
) -> pd.DataFrame:
    """SWEEP or FILE: an existing path is a file; anything else is a sweep name looked up in MLflow."""
    if Path(source).exists():
        return read_file(source, n_col=n_col, d_col=d_col, c_col=c_col)
    if any(str(source).lower().endswith(s) for s in (".csv", ".tsv", ".parquet", ".pq")):
        raise TableError(f"{source}: no such file")
    df = read_mlflow(str(source), tracking_uri_)
    if n_col or d_col or c_col:
        df = read_file_columns(df, n_col=n_col, d_col=d_col, c_col=c_col, where=str(source))
    return df


def read_file_columns(df: pd.DataFrame, *, n_col=None, d_col=None, c_col=None, where="table") -> pd.DataFrame:
    df = df.copy()
    for want, col in (("N", n_col), ("D", d_col), ("C", c_col)):
        if col is None or col == want:
            continue
        if col not in df.columns:
            raise TableError(f"{where}: no column {col!r} (for {want})")
        df[want] = df[col]
    return df


def usable(table: pd.DataFrame) -> pd.DataFrame:
    """Trials whose status is finished (failed, diverged and running trials are not fitted)."""
    if "status" not in table.columns:
        return table
    return table[table["status"].astype(str).str.lower().isin(USABLE_STATUS)].reset_index(drop=True)


def columns_for(table: pd.DataFrame, fit: str, cols: list[str]) -> None:
    from analysis.fit import FitRefused  # scipy: the table loads without the fitting stack

    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise FitRefused(fit, f"the table has no column(s) {missing}")
