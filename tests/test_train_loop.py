"""The trial trainer on CPU with the built-in corpus (about a minute of audio) and the tiny config.

One module-scoped corpus and feature cache; every trial here shares its data subset so FLOPs counting is
cached after the first trial.
"""

from __future__ import annotations

import math

import pytest
import torch

from model.config import ConfigError, tiny_config
from model.sink import MemorySink
from model.step import train_step
from model.train import plan_budget, run_trial
from model.train.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    cfg = tiny_config()
    d = cfg.data
    d.corpus_dir, d.cache_dir = str(root / "corpus"), str(root / "cache")
    d.builtin_hours, d.builtin_speakers = 0.015, 2
    d.val_utterances, d.prepare_workers = 3, 1
    cfg.train.log_interval = 5
    cfg.eval.n_utterances = 0  # likelihood metrics only unless a test asks for synthesis
    cfg.output_dir = str(root / "trial")
    from model.data import prepare_data

    prepare_data(cfg)  # build the corpus and the feature cache once
    return cfg


def _cfg(base, tmp_path, **train):
    cfg = type(base).from_dict(base.to_dict())
    cfg.output_dir = str(tmp_path / "trial")
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_training_lowers_losses_and_logs_everything(base_cfg, tmp_path):
    from model.sink import MultiSink
    from model.step import build_train_state
    from model.train.data import TrialData
    from model.train.evaluate import evaluate
    from model.train.loop import seed_everything
    from orchestrator.tracking import MlflowSink, Tracker

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


def _weights(path):
    sd = load_checkpoint(path)["train_state"]
    return {f"{net}.{k}": v for net in ("net_g", "net_d") for k, v in sd[net].items()}


def test_resume_ends_with_the_same_weights(base_cfg, tmp_path):
    # 11 steps cross an epoch boundary (the training subset gives 9 batches per epoch) after the resume
    kw = dict(steps=11, checkpoint_every=4, log_interval=1, keep_checkpoints=5)  # + evaluations at 3, 6, 9
    a = _cfg(base_cfg, tmp_path / "a", **kw)
    a.eval.eval_every = 3  # evaluations must not disturb training's random stream
    ra = run_trial(a, MemorySink(), resume=False)

    b = _cfg(base_cfg, tmp_path / "b", **kw)
    b.eval.eval_every = 3

    def crash_at_7(state, batch):
        if state.step == 6:
            raise RuntimeError("injected crash")
        return train_step(state, batch)

    with pytest.raises(RuntimeError, match="injected crash"):
        run_trial(b, MemorySink(), resume=False, step_fn=crash_at_7)
    assert [s for s, _ in list_checkpoints(tmp_path / "b" / "trial" / "checkpoints")] == [4]
    sink = MemorySink()
    rb = run_trial(b, sink, resume=True)
    assert rb.status == ra.status == "finished" and rb.steps == ra.steps == 11
    assert sink.history("loss_mel")[0][0] == 5  # continued at the step after the checkpoint
    pa, pb = load_checkpoint(ra.checkpoint), load_checkpoint(rb.checkpoint)
    assert pa["epoch"] == pb["epoch"] >= 1 and pa["batch_in_epoch"] == pb["batch_in_epoch"]
    wa, wb = _weights(ra.checkpoint), _weights(rb.checkpoint)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert pa["counters"] == pb["counters"]


def test_nan_loss_gives_status_diverged(base_cfg, tmp_path):
    def nan_at_2(state, batch):
        out = train_step(state, batch)
        if state.step == 2:
            out["loss_mel"] = out["loss_mel"] * float("nan")
        return out

    cfg = _cfg(base_cfg, tmp_path, steps=5, log_interval=1)
    sink = MemorySink()
    res = run_trial(cfg, sink, resume=False, step_fn=nan_at_2)
    assert res.status == "diverged" and res.steps == 2
    assert sink.status == "diverged" and "loss_mel" in sink.message
    assert sink.last("diverged_step") == 2


def test_flops_budget_maps_to_steps(base_cfg, tmp_path):
    from model.counting import flops_per_step
    from model.train.data import TrialData

    cfg = _cfg(base_cfg, tmp_path, log_interval=1)
    data = TrialData.prepare(cfg, device=torch.device("cpu"))
    fps = flops_per_step(cfg, utterance_s=data.mean_utterance_s)
    cfg.train.compute_budget = 3.7 * fps
    sink = MemorySink()
    res = run_trial(cfg, sink, resume=False)
    assert res.steps == 3 and sink.last("flops_per_step") == fps
    assert sink.last("flops") == 3 * fps <= cfg.train.compute_budget < 4 * fps
    assert sink.last("compute_budget") == cfg.train.compute_budget


def test_budget_rules():
    cfg = tiny_config()
    assert plan_budget(cfg, 100, 7).steps == cfg.train.epochs * 7  # neither: SBV2's epochs
    cfg.train.compute_budget = 1050.0
    b = plan_budget(cfg, 100, 7)
    assert (b.steps, b.total_flops, b.source) == (10, 1000.0, "compute_budget")
    cfg.train.compute_budget = 10.0
    assert plan_budget(cfg, 100, 7).steps == 1  # at least one step
    cfg.train.steps = 5
    with pytest.raises(ConfigError, match="both set"):
        plan_budget(cfg, 100, 7)
    cfg.train.compute_budget = None
    assert plan_budget(cfg, 100, 7).steps == 5


def test_cli_train_json_and_mlflow(base_cfg, tmp_path):
    import json

    from typer.testing import CliRunner

    from model.config import dump_config
    from orchestrator.cli import app

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
