"""MLflow run lifecycle without Ray: the three MLflow traps, the sink, and a dead tracking server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from orch_helpers import free_port

from analysis.mlflow_contract import TAG_ERROR, TAG_PARAM_CONFLICTS, TAG_STATUS
from model.config import tiny_config
from orchestrator.tracking import (
    MlflowSink,
    Tracker,
    TrackingError,
    TrackingUnavailable,
)
from orchestrator.trial import run_tracked, trial_params
from tests import fake_trial


def _cfg(tmp: Path, uri: str, trial_id: str = "t1", **train):
    cfg = tiny_config()
    cfg.sweep, cfg.trial_id, cfg.name = "s", trial_id, f"trial {trial_id}"
    cfg.tracking.uri = uri
    cfg.output_dir = str(tmp / "trials" / trial_id)
    cfg.axes = {"width": 32, "seed": 0}
    cfg.train.steps = train.get("steps", 6)
    cfg.train.checkpoint_every = 3
    return cfg


def test_explicit_uri_is_honoured_not_global_state(tmp_path, monkeypatch):
    import mlflow

    decoy = f"sqlite:///{tmp_path / 'decoy.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", decoy)
    mlflow.set_tracking_uri(decoy)
    try:
        uri = f"sqlite:///{tmp_path / 'real.db'}"
        cfg = _cfg(tmp_path, uri)
        out = run_tracked(cfg, fake_trial.run_trial)
        assert out["status"] == "finished"
        t = Tracker(uri)
        runs = t.search(t.experiment_id("vits-scaling"), {"vits_scaling.trial_id": "t1"})
        assert len(runs) == 1 and runs[0].data.tags[TAG_STATUS] == "finished"
        assert (
            runs[0].data.params["model.hidden_channels"] == "32" and runs[0].data.params["axis.width"] == "32"
        )
        hist = t.client.get_metric_history(runs[0].info.run_id, "loss_g_total")
        assert [m.step for m in hist] == list(range(1, 7))
        assert not (tmp_path / "decoy.db").exists()  # nothing went to the global / env store
        assert not Path("mlruns").exists() or not any(Path("mlruns").iterdir())
    finally:
        mlflow.set_tracking_uri(None)


def test_retry_reuses_run_and_never_clashes_params(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = _cfg(tmp_path, uri)
    cfg.axes["extra.fail"] = "after:4"
    first_lr = str(cfg.train.learning_rate)
    with pytest.raises(RuntimeError, match="fake trial failure"):
        run_tracked(cfg, fake_trial.run_trial)
    t = Tracker(uri)
    eid = t.experiment_id("vits-scaling")
    (run,) = t.search(eid, {"vits_scaling.trial_id": "t1"})
    assert run.data.tags[TAG_STATUS] == "failed" and "fake trial failure" in run.data.tags[TAG_ERROR]
    assert run.info.status == "FAILED"
    # the retry: same trial, a config value that became different (e.g. a changed default) must not crash
    cfg.train.learning_rate = 1e-3
    out = run_tracked(cfg, fake_trial.run_trial)
    assert out["status"] == "finished"
    runs = t.search(eid, {"vits_scaling.trial_id": "t1"})
    assert len(runs) == 1 and runs[0].info.run_id == run.info.run_id
    r = runs[0]
    assert r.data.tags[TAG_STATUS] == "finished" and TAG_ERROR not in r.data.tags
    assert r.data.params["train.learning_rate"] == first_lr != str(cfg.train.learning_rate)  # first kept
    assert "train.learning_rate" in json.loads(r.data.tags[TAG_PARAM_CONFLICTS])
    starts = [
        json.loads(x)["start_step"]
        for x in (Path(cfg.output_dir) / "attempts.jsonl").read_text().splitlines()
    ]
    assert starts == [0, 3]  # resumed from the checkpoint at step 3
    # a third call on a finished trial does nothing
    assert run_tracked(cfg, fake_trial.run_trial)["skipped"]


def test_existing_experiment_is_used_never_overwritten(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    t = Tracker(uri)
    eid = t.client.create_experiment("vits-scaling", artifact_location=(tmp_path / "elsewhere").as_uri())
    other = t.client.create_run(eid, run_name="someone else's run").info.run_id
    parent = t.sweep_run("vits-scaling", "s")
    assert t.experiment_id("vits-scaling") == eid
    assert t.sweep_run("vits-scaling", "s") == parent  # found by tag, not created again
    assert t.client.get_run(other).info.lifecycle_stage == "active"
    t.client.delete_experiment(eid)
    with pytest.raises(TrackingError, match="deleted"):
        t.sweep_run("vits-scaling", "s")


def test_sink_batches_and_replays(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    t = Tracker(uri)
    rid = t.trial_run("vits-scaling", "s", "x")
    calls = []
    orig = t.client.log_batch
    monkeypatch.setattr(t.client, "log_batch", lambda *a, **k: (calls.append(k), orig(*a, **k))[1])
    sink = MlflowSink(t, rid, local_dir=tmp_path / "loc", flush_every_s=1e9, flush_rows=1000)
    sink.log_params(trial_params(_cfg(tmp_path, uri)))
    n_param_calls = len(calls)
    assert n_param_calls <= 3  # ~130 params in batches of 100
    for i in range(1500):
        sink.log_metrics({"a": i, "b": 2 * i}, i)
    sink.close()
    assert len(calls) - n_param_calls <= 4  # 3000 values in 1000-metric batches, not 3000 round trips
    assert len(t.client.get_metric_history(rid, "b")) == 1500
    # rows written locally but never confirmed (a killed process) are replayed by the next sink
    with open(tmp_path / "loc" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 1500, "t": int(time.time() * 1000), "m": {"a": -1.0}}) + "\n")
    MlflowSink(t, rid, local_dir=tmp_path / "loc").close()
    assert [m.value for m in t.client.get_metric_history(rid, "a")][-1] == -1.0


def test_tracking_down_keeps_local_results_and_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("VITS_SCALING_TRACKING_GIVE_UP_S", "2")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    cfg = _cfg(tmp_path, uri)
    t0 = time.time()
    with pytest.raises(TrackingUnavailable) as e:
        run_tracked(cfg, fake_trial.run_trial)
    assert time.time() - t0 < 60
    msg = str(e.value)
    assert uri in msg and "metrics.jsonl" in msg
    rows = [
        json.loads(x) for x in (Path(cfg.output_dir) / "tracking" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows if "loss_g_total" in r["m"]] == list(range(1, 7))
    assert json.loads((Path(cfg.output_dir) / "tracking" / "status.json").read_text())["status"] == "finished"


def test_a_trial_start_is_one_read_and_one_batched_write(tmp_path, monkeypatch):
    """``run_tracked`` on a run the driver created (an earlier attempt failed): the run is read once, the
    status and every param go out in ``log_batch`` calls of at most 100 params (the status tag with the
    last), the old error tag is cleared, and ``startup.json`` books the phases."""
    from mlflow import MlflowClient

    from orchestrator.trial import STARTUP_FILE

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    t = Tracker(uri)
    cfg = _cfg(tmp_path, uri)
    rid = t.trial_run("vits-scaling", "s", "t1", status="pending")
    t.set_status(rid, "failed", "an earlier attempt failed")
    cfg.tracking.run_id = rid
    calls = []
    real_batch, real_get = MlflowClient.log_batch, MlflowClient.get_run

    def log_batch(self, run_id, metrics=(), params=(), tags=(), **kw):
        calls.append(("log_batch", len(params or ()), [g.key for g in tags or ()]))
        return real_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    def get_run(self, run_id):
        calls.append(("get_run",))
        return real_get(self, run_id)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    monkeypatch.setattr(MlflowClient, "get_run", get_run)
    at_start = []

    def trial(cfg, sink, *, resume=True):
        at_start.extend(calls)
        sink.log_metrics({"loss": 1.0}, 1)
        sink.set_status("finished")
        return {}

    assert run_tracked(cfg, trial).status == "finished"
    n = sum(v is not None for v in trial_params(cfg).values())  # None values are not logged
    batches = [c for c in at_start if c[0] == "log_batch"]
    assert [c for c in at_start if c[0] == "get_run"] == [("get_run",)]
    assert sum(c[1] for c in batches) == n and len(batches) == -(-n // 100)
    assert [c[2] for c in batches] == [[]] * (len(batches) - 1) + [[TAG_STATUS]]
    run = real_get(t.client, rid)
    assert run.data.tags[TAG_STATUS] == "finished" and TAG_ERROR not in run.data.tags
    assert len(run.data.params) >= n
    phases = json.loads((Path(cfg.output_dir) / STARTUP_FILE).read_text())
    assert {"mlflow_setup", "trial_to_step1", "teardown"} <= set(phases)
    assert all(v >= 0 for v in phases.values())
