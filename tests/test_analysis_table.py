"""The tidy-table loader: from a local sqlite MLflow store laid out as the trainer and orchestrator write it
(parent run per sweep, child run per trial), and from CSV / Parquet files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import mlflow_contract as C
from analysis import table as T


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d}/mlflow.db"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("vits-scaling", artifact_location=str(d / "artifacts"))
    parent = c.create_run(exp, tags={C.TAG_SWEEP: "demo", C.TAG_ROLE: "sweep", "mlflow.runName": "demo"})
    pid = parent.info.run_id
    specs = [
        ("0", 1e6, 0.5, "finished", 3.0),
        ("1", 2e6, 0.5, "finished", 2.8),
        ("2", 1e6, 1.0, "finished", 2.7),
        ("3", 2e6, 1.0, "diverged", float("nan")),
    ]
    for tid, n, hours, status, final in specs:
        r = c.create_run(
            exp,
            tags={
                C.TAG_SWEEP: "demo",
                C.TAG_TRIAL: tid,
                C.TAG_STATUS: status,
                C.TAG_ROLE: "trial",
                "mlflow.parentRunId": pid,
            },
        )
        rid = r.info.run_id
        c.log_param(rid, "model.hidden_channels", "96" if n == 1e6 else "128")
        c.log_param(rid, "train.learning_rate", "0.0002")
        c.log_param(rid, "axis.data_hours", str(hours))
        c.log_param(rid, "data.corpus", "builtin")
        c.log_metric(rid, "params_generator", n)
        c.log_metric(rid, "params_discriminator", 5e5)
        c.log_metric(rid, "data_hours", hours)
        for step in range(1, 5):
            c.log_metric(rid, "flops", step * 1e12 * n / 1e6, step=step * 10)
            c.log_metric(rid, "data_seen_s", step * 100.0, step=step * 10)
            if step % 2 == 0 and np.isfinite(final):
                c.log_metric(rid, "val_nelbo", final + (4 - step) * 0.1, step=step * 10)
        c.set_terminated(rid, "FINISHED" if status == "finished" else "FAILED")
    # a stale earlier run of trial 0 that failed: the loader keeps the finished one
    stale = c.create_run(exp, tags={C.TAG_SWEEP: "demo", C.TAG_TRIAL: "0", C.TAG_STATUS: "failed"})
    c.set_terminated(stale.info.run_id, "FAILED")
    # another sweep in the same store is not mixed in
    other = c.create_run(exp, tags={C.TAG_SWEEP: "other", C.TAG_TRIAL: "0", C.TAG_STATUS: "finished"})
    c.log_metric(other.info.run_id, "params_generator", 9e9)
    return uri, pid


def test_mlflow_table_has_the_tidy_columns(store):
    uri, pid = store
    df = T.read_mlflow("demo", uri)
    assert list(df["trial"]) == ["0", "1", "2", "3"]
    assert df.attrs["parent_run_id"] == pid
    assert (df["sweep"] == "demo").all()
    row0 = df.set_index("trial").loc["0"]
    assert row0["status"] == "finished"  # the stale failed run of trial 0 is not chosen
    assert row0["N"] == 1e6 and row0["N_total"] == 1.5e6
    assert row0["D"] == 400.0  # last data_seen_s
    assert row0["C"] == 4e12  # last cumulative flops
    assert row0["val_nelbo"] == pytest.approx(3.0)  # final metric = last logged
    assert row0["axis.data_hours"] == 0.5 and row0["model.hidden_channels"] == 96
    assert row0["train.learning_rate"] == pytest.approx(2e-4) and row0["data.corpus"] == "builtin"
    assert row0["wall_s"] >= 0
    assert df.set_index("trial").loc["3", "status"] == "diverged"
    assert len(T.usable(df)) == 3
    assert T.find_parent_run("demo", uri) == pid


def test_mlflow_curves_align_metric_with_cumulative_flops(store):
    uri, _ = store
    df = T.read_mlflow("demo", uri)
    cv = T.curves_mlflow(df, "val_nelbo", uri)
    c0 = cv[cv.trial == "0"].sort_values("step")
    assert list(c0["step"]) == [20, 40]
    assert list(c0["C"]) == [2e12, 4e12] and list(c0["D"]) == [200.0, 400.0]
    assert list(c0["L"]) == pytest.approx([3.2, 3.0])
    assert "3" not in set(cv.trial)  # no val_nelbo history


def test_load_dispatches_and_unknown_sweep_is_a_clear_error(store, tmp_path):
    uri, _ = store
    assert len(T.load("demo", tracking_uri_=uri)) == 4
    with pytest.raises(T.TableError, match="no trial runs tagged"):
        T.load("nope", tracking_uri_=uri)
    with pytest.raises(T.TableError, match="no such file"):
        T.load(str(tmp_path / "missing.csv"))


def test_log_report_artifacts_to_parent_run(store, tmp_path):
    from mlflow.tracking import MlflowClient

    from analysis.report import log_report_to_mlflow

    uri, pid = store
    (tmp_path / "report.html").write_text("<html></html>")
    log_report_to_mlflow(pid, tmp_path, uri)
    names = [f.path for f in MlflowClient(tracking_uri=uri).list_artifacts(pid, "report")]
    assert "report/report.html" in names


def test_file_tables_csv_parquet_and_column_mapping(tmp_path):
    df = pd.DataFrame(
        {"params": [1e6, 2e6], "seconds": [10.0, 20.0], "flops": [1.0, 2.0], "loss": [3.0, 2.0]}
    )
    p = tmp_path / "t.csv"
    df.to_csv(p, index=False)
    t = T.read_file(p, n_col="params", d_col="seconds", c_col="flops")
    assert list(t["N"]) == [1e6, 2e6] and list(t["D"]) == [10.0, 20.0] and list(t["C"]) == [1.0, 2.0]
    assert list(t["trial"]) == ["row0", "row1"] and (t["status"] == "finished").all()
    q = tmp_path / "t.parquet"
    df.to_parquet(q)
    assert len(T.read_file(q, n_col="params")) == 2
    with pytest.raises(T.TableError, match=r"t\.csv: no column 'nope' \(for N\)"):
        T.read_file(p, n_col="nope")
    bad = tmp_path / "t.xlsx"
    bad.write_text("x")
    with pytest.raises(T.TableError, match="unknown table format"):
        T.read_file(bad)
    # long format: one row per evaluation -> table of last rows + curves
    long = pd.DataFrame(
        {
            "trial": ["a", "a", "b", "b"],
            "step": [1, 2, 1, 2],
            "N": [1, 1, 2, 2],
            "C": [1, 2, 3, 4],
            "D": [1, 2, 1, 2],
            "loss": [5, 4, 3, 2],
        }
    )
    lp = tmp_path / "long.csv"
    long.to_csv(lp, index=False)
    assert list(T.read_file(lp)["loss"]) == [4, 2]
    assert len(T.curves_from_file(lp, "loss")) == 4


def test_cli_report_from_mlflow_sweep_logs_to_parent_and_explains_refusals(store, tmp_path):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from orchestrator.cli import app

    uri, pid = store
    res = CliRunner().invoke(
        app, ["report", "demo", "--tracking-uri", uri, "--out", str(tmp_path), "--n-boot", "5"]
    )
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert "Not enough data for" in html and "too few points" in html  # 3 finished trials support no fit
    assert "1 trials not finished" in html
    names = [f.path for f in MlflowClient(tracking_uri=uri).list_artifacts(pid, "report")]
    assert "report/report.html" in names and "report/fits.json" in names
