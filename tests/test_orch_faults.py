"""Faults during a sweep, on real components started and stopped here:

* a trial's worker process SIGKILLed mid-step is retried from its last checkpoint, in the same MLflow run
  (no duplicate run) and with every step's metric present (none lost);
* the MLflow server (a real ``mlflow server``) killed mid-sweep and restarted on the same port and store
  a few seconds later: the trials buffer and retry, the sweep finishes, and no metric is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from orch_helpers import BIN, MlflowServer, env, sweep_file

from analysis.mlflow_contract import TAG_ROLE, TAG_STATUS, TAG_SWEEP
from orchestrator.tracking import Tracker

pytestmark = pytest.mark.integration
STEPS = 24


def _trial_runs(uri: str, sweep: str):
    t = Tracker(uri)
    eid = t.experiment_id("vits-scaling", create=False)
    return t, t.search(eid, {TAG_SWEEP: sweep, TAG_ROLE: "trial"})


def _assert_complete(uri: str, sweep_dir: Path):
    """One run per trial, finished, with the loss logged at every step 1..STEPS."""
    t, runs = _trial_runs(uri, "faults")
    assert len(runs) == 2 and len({r.data.tags["vits_scaling.trial_id"] for r in runs}) == 2
    for r in runs:
        assert r.data.tags[TAG_STATUS] == "finished", r.data.tags
        steps = {m.step for m in t.client.get_metric_history(r.info.run_id, "loss_g_total")}
        assert steps == set(range(1, STEPS + 1)), sorted(set(range(1, STEPS + 1)) - steps)
    return t, runs


def test_worker_killed_mid_step_resumes_in_the_same_run_losing_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    f = sweep_file(tmp_path, "faults", tracking_uri=uri)
    p = subprocess.run(
        [str(BIN / "vits-scaling"), "sweep", "submit", str(f), "--allow-trial-fn", "--json", "--quiet"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(r["status"] for r in json.loads(p.stdout)["trials"]) == ["finished"] * 2
    t, runs = _assert_complete(uri, tmp_path / "sweeps" / "faults")
    killed = next(r for r in runs if r.data.params.get("axis.width") == "32")
    out = tmp_path / "sweeps" / "faults" / "trials" / killed.data.tags["vits_scaling.trial_id"]
    starts = [json.loads(x)["start_step"] for x in (out / "attempts.jsonl").read_text().splitlines()]
    assert starts == [0, 8]  # killed at step 10, retried from the step-8 checkpoint


def test_mlflow_server_killed_and_restarted_mid_sweep_loses_no_metric(tmp_path):
    server = MlflowServer(tmp_path)
    port = server.port
    f = sweep_file(tmp_path, "faults", tracking_uri=server.uri)
    log = open(tmp_path / "driver.log", "w")
    drv = subprocess.Popen(
        [str(BIN / "vits-scaling"), "sweep", "submit", str(f), "--allow-trial-fn", "--json", "--quiet"],
        cwd=tmp_path, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120  # wait until the trials are logging: then take the server away
        while time.time() < deadline:
            assert drv.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            _, runs = _trial_runs(server.uri, "faults") if _has_experiment(server.uri) else (None, [])
            if any(r.data.metrics.get("steps", 0) >= 3 for r in runs):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the trials never started logging")
        os.killpg(server.proc.pid, signal.SIGKILL)  # no graceful shutdown
        server.proc.wait(30)
        server.log.close()
        time.sleep(4)
        server = MlflowServer(tmp_path, port=port)  # same port, same SQLite store
        assert drv.wait(300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if drv.poll() is None:
            os.killpg(drv.pid, signal.SIGKILL)
        log.close()
    try:
        _assert_complete(server.uri, tmp_path / "sweeps" / "faults")
    finally:
        server.stop()


def _has_experiment(uri: str) -> bool:
    return Tracker(uri).experiment_id("vits-scaling", create=False) is not None
