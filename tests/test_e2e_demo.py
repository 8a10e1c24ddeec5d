"""End to end, CI-sized: the same path as `make demo` (orchestrator.demo.run_demo) on a smaller grid.

Real trainer, local Ray, MLflow on SQLite, analysis, HTML report and the follow-up commands.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.orch_helpers import SWEEPS, cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import os

    tmp = tmp_path_factory.mktemp("e2e")
    spec = tmp / "e2e.yaml"
    raw = yaml.safe_load((SWEEPS / "e2e.yaml").read_text())
    raw["storage_path"] = str(tmp / "sweeps")
    raw["tracking_uri"] = f"sqlite:///{tmp / 'mlflow.db'}"
    raw["base"]["data"]["corpus_dir"] = str(tmp / "corpus")
    raw["base"]["data"]["cache_dir"] = str(tmp / "cache")
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    old = Path.cwd()
    os.chdir(tmp)
    try:
        from orchestrator.demo import run_demo

        result = run_demo(spec, budget=1e12, tracking_uri=raw["tracking_uri"])
    finally:
        os.chdir(old)
    return tmp, raw, result


def test_every_trial_has_a_child_run_with_metric_histories(demo_run):
    from mlflow.tracking import MlflowClient

    tmp, raw, result = demo_run
    assert result.n_finished == 4, result.trials
    client = MlflowClient(tracking_uri=raw["tracking_uri"])
    exp = client.get_experiment_by_name("vits-scaling")
    runs = client.search_runs([exp.experiment_id], "tags.`vits_scaling.sweep` = 'e2e'")
    children = [r for r in runs if r.data.tags.get("vits_scaling.trial_id")]
    assert len(children) == 4
    assert len({r.data.tags["vits_scaling.trial_id"] for r in children}) == 4
    for r in children:
        assert r.data.tags.get("mlflow.parentRunId") == result.parent_run_id
        assert r.data.tags["vits_scaling.status"] == "finished"
        for key in ("loss_mel", "flops", "data_seen_s"):
            hist = client.get_metric_history(r.info.run_id, key)
            assert len(hist) >= 2, (key, hist)
        flops = [m.value for m in client.get_metric_history(r.info.run_id, "flops")]
        assert flops == sorted(flops) and flops[-1] > 0
        for key in ("val_nelbo", "dnsmos_ovrl", "params_generator", "flops_per_step"):
            assert key in r.data.metrics, key


def test_report_exists_with_every_plot_embedded(demo_run):
    tmp, _raw, _ = demo_run
    html = (tmp / "runs" / "reports" / "e2e" / "report.html").read_text()
    imgs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert imgs, "report has no plots"
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    pngs = list((tmp / "runs" / "reports" / "e2e").glob("*.png"))
    assert len(imgs) >= len(pngs) > 0
    assert "not enough" in html.lower() or "refused" in html.lower()  # the tiny grid cannot support every fit


def test_best_returns_rows_sorted_by_metric(demo_run):
    tmp, raw, _ = demo_run
    p = cli(
        "best",
        "e2e",
        "--metric",
        "val_nelbo",
        "--mode",
        "min",
        "--top",
        "3",
        "--json",
        "--tracking-uri",
        raw["tracking_uri"],
        "--storage",
        raw["storage_path"],
        cwd=tmp,
    )
    rows = json.loads(p.stdout)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert len(rows) == 3
    vals = [r["metrics"]["val_nelbo"] if "metrics" in r else r["val_nelbo"] for r in rows]
    assert vals == sorted(vals)
