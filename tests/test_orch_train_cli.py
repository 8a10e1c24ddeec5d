"""The trainer behind the orchestrator: a trial logged to MLflow through ``orchestrator.tracking``, and the
``vits-scaling train`` command (JSON output, MLflow, config errors).

These were in test_train_loop.py; they live here so the model-layer tests never import the orchestrator.
They reuse its corpus set-up and config helper.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train_loop import _cfg, prepared_config
from typer.testing import CliRunner

from model.config import dump_config
from model.sink import MemorySink, MultiSink
from model.step import build_train_state
from model.train import run_trial
from model.train.checkpoint import load_checkpoint
from model.train.data import TrialData
from model.train.evaluate import evaluate
from model.train.loop import seed_everything
from orchestrator.cli import app
from orchestrator.tracking import MlflowSink, Tracker


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    return prepared_config(tmp_path_factory.mktemp("train"))


def test_training_lowers_losses_and_logs_everything(base_cfg, tmp_path):
    cfg = _cfg(base_cfg, tmp_path, steps=20, log_interval=10)
    cfg.eval.eval_every, cfg.eval.n_utterances, cfg.eval.n_audio_samples = 10, 1, 1
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.trial_id = "t-loss"

    # the same initial weights as the trial's (same seed), evaluated before any training
    data = TrialData.prepare(cfg, device=torch.device("cpu"))
    seed_everything(cfg.train.seed)
    init = evaluate(build_train_state(cfg, "cpu").net_g, data.val_batches(), cfg, synthesis=False).metrics

    mem = MemorySink()
    ml = MlflowSink.for_trial(cfg, local_dir=tmp_path / "tracking")
    res = run_trial(cfg, MultiSink(mem, ml), resume=False)
    ml.close()
    assert res.status == "finished" and res.steps == 20 and mem.status == "finished"

    # the mel loss (on the whole held-out utterances) and the NELBO fall as it trains
    assert len(mem.history("loss_mel")) == 2
    mel = [init["val_mel_l1"]] + [v for _, v in mem.history("val_mel_l1")]
    nelbo = [init["val_nelbo"]] + [v for _, v in mem.history("val_nelbo")]
    assert mel[2] < 0.97 * mel[0], mel
    assert nelbo[0] > nelbo[1] > nelbo[2] and nelbo[2] < 0.95 * nelbo[0], nelbo
    m = res.metrics
    assert m["val_nelbo"] == pytest.approx(m["val_nelbo_recon"] + m["val_nelbo_kl"] + m["val_nelbo_dur"])
    for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "val_mcd_synth", "val_mcd", "rtf"):
        assert math.isfinite(m[k]), k

    # cumulative compute and data at every logged step
    fps = mem.last("flops_per_step")
    assert sorted({s for s, _ in mem.history("flops")}) == [10, 20]
    assert all(v == s * fps for s, v in mem.history("flops"))
    seen = [v for _, v in mem.history("data_seen_s")]
    assert seen[0] > 0 and seen == sorted(seen)
    assert (
        mem.last("total_flops") == 20 * fps
        and mem.last("params_generator") > 0
        and mem.last("params_enc_p") > 0
    )
    assert 0 < mem.last("data_hours") < 0.015

    # the weights the trial ended with evaluate to exactly the logged numbers
    state = build_train_state(cfg, "cpu")
    state.load_state_dict(load_checkpoint(res.checkpoint)["train_state"])
    again = evaluate(state.net_g, data.val_batches(), cfg, synthesis=False).metrics
    assert all(again[k] == m[k] for k in ("val_nelbo", "val_nelbo_recon", "val_nelbo_kl", "val_nelbo_dur"))

    # what MLflow holds: histories, DNSMOS, a wav
    client = Tracker(cfg.tracking.uri).client
    run_id = ml.run_id
    assert len(client.get_metric_history(run_id, "loss_mel")) == 2
    assert len(client.get_metric_history(run_id, "val_nelbo")) == 2
    assert len(client.get_metric_history(run_id, "flops")) >= 2
    run = client.get_run(run_id)
    assert "dnsmos_ovrl" in run.data.metrics and run.data.tags["vits_scaling.status"] == "finished"
    wavs = [f.path for f in client.list_artifacts(run_id, "samples/step_00000020")]
    assert any(p.endswith("_synth.wav") for p in wavs)


def test_cli_train_json_and_mlflow(base_cfg, tmp_path):
    cfg = _cfg(base_cfg, tmp_path, steps=1000, log_interval=1)
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "trial.yaml"
    dump_config(cfg, path)
    r = CliRunner().invoke(app, ["train", str(path), "--steps", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "finished" and out["steps"] == 2 and "val_nelbo" in out["metrics"]
    assert (tmp_path / "trial" / "tracking" / "metrics.jsonl").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    r = CliRunner().invoke(app, ["train", str(bad)])
    assert r.exit_code == 2 and "train.stepz: unknown field" in r.output.replace("\n", "")
