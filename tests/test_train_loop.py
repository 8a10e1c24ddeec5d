"""The trial trainer on CPU with the built-in corpus (about a minute of audio) and the tiny config.

One module-scoped corpus and feature cache; every trial here shares its data subset so FLOPs counting is
cached after the first trial. The trainer seen through the orchestrator (MLflow, the ``train`` command) is
tested in test_orch_train_cli.py, so this model-layer file never imports the orchestrator.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from model.config import ConfigError, TrialConfig, tiny_config
from model.counting import flops_per_step
from model.data import prepare_data
from model.sink import MemorySink
from model.step import train_step
from model.train import plan_budget, run_trial
from model.train.checkpoint import list_checkpoints, load_checkpoint
from model.train.data import TrialData
from model.train.schedule import lr_factor, plan_schedule


def prepared_config(root: Path) -> TrialConfig:
    """The tiny config on a small built-in corpus under ``root``, its corpus and feature cache built."""
    cfg = tiny_config()
    d = cfg.data
    d.corpus_dir, d.cache_dir = str(root / "corpus"), str(root / "cache")
    d.builtin_hours, d.builtin_speakers = 0.015, 2
    d.val_utterances, d.prepare_workers = 3, 1
    cfg.train.log_interval = 5
    cfg.eval.n_utterances = 0  # likelihood metrics only unless a test asks for synthesis
    cfg.output_dir = str(root / "trial")
    prepare_data(cfg)  # build the corpus and the feature cache once
    return cfg


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    return prepared_config(tmp_path_factory.mktemp("train"))


def _cfg(base, tmp_path, **train):
    cfg = type(base).from_dict(base.to_dict())
    cfg.output_dir = str(tmp_path / "trial")
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def checkpoint_weights(path):
    sd = load_checkpoint(path)["train_state"]
    return {f"{net}.{k}": v for net in ("net_g", "net_d") for k, v in sd[net].items()}


def crash_after(step: int):
    """A step function that trains normally until ``step`` updates are done, then raises (a killed trial)."""

    def step_fn(state, batch):
        if state.step == step:
            raise RuntimeError("injected crash")
        return train_step(state, batch)

    return step_fn


SCHEDULES = {  # 11 steps; the resume (from step 4) is inside the warm-up (cosine) / before the cooldown (wsd)
    "sbv2": dict(lr_schedule="sbv2", lr_decay=0.9),  # per epoch: decays once, at the epoch boundary (9)
    "cosine": dict(lr_schedule="cosine", warmup_steps=5),
    "wsd": dict(lr_schedule="wsd", warmup_steps=2, cooldown_frac=0.3, cooldown_shape="linear"),
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_resume_ends_with_the_same_weights(base_cfg, tmp_path, schedule):
    # 11 steps cross an epoch boundary (the training subset gives 9 batches per epoch) after the resume
    kw = dict(steps=11, checkpoint_every=4, log_interval=1, keep_checkpoints=5)  # + evaluations at 3, 6, 9
    kw.update(SCHEDULES[schedule])
    a = _cfg(base_cfg, tmp_path / "a", **kw)
    a.eval.eval_every = 3  # evaluations must not disturb training's random stream
    ra = run_trial(a, MemorySink(), resume=False)

    b = _cfg(base_cfg, tmp_path / "b", **kw)
    b.eval.eval_every = 3

    sink_a = MemorySink()
    with pytest.raises(RuntimeError, match="injected crash"):
        run_trial(b, sink_a, resume=False, step_fn=crash_after(6))
    assert [s for s, _ in list_checkpoints(tmp_path / "b" / "trial" / "checkpoints")] == [4]
    sink = MemorySink()
    rb = run_trial(b, sink, resume=True)
    # the lr logged at each step is the lr of that step's update, on the planned curve across the resume
    lr0 = a.train.learning_rate
    plan = plan_schedule(a.train, 11, batches_per_epoch=9)
    want = [(s + 1, lr0 * lr_factor(s, plan)) for s in range(11)]
    got = sink_a.history("lr")[:4] + sink.history("lr")
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-12)
    assert sink.history("lr_d") == sink.history("lr")  # the discriminator follows the same curve
    edges = {  # lr of the first update, the last warm-up update, the first and the last decayed update
        "sbv2": {1: lr0, 9: lr0, 10: lr0 * 0.9, 11: lr0 * 0.9},
        "cosine": {
            1: lr0 / 5,
            5: lr0,
            6: lr0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 6))),
            11: lr0 * 0.1,
        },
        "wsd": {1: lr0 / 2, 2: lr0, 8: lr0, 9: lr0 * (1 - 0.9 / 3), 11: lr0 * 0.1},  # K = round(3.3) = 3
    }[schedule]
    logged = dict(got)
    for step, lr in edges.items():
        assert logged[step] == pytest.approx(lr, rel=1e-12), (step, logged[step], lr)
    assert rb.status == ra.status == "finished" and rb.steps == ra.steps == 11
    assert sink.history("loss_mel")[0][0] == 5  # continued at the step after the checkpoint
    pa, pb = load_checkpoint(ra.checkpoint), load_checkpoint(rb.checkpoint)
    assert pa["epoch"] == pb["epoch"] >= 1 and pa["batch_in_epoch"] == pb["batch_in_epoch"]
    wa, wb = checkpoint_weights(ra.checkpoint), checkpoint_weights(rb.checkpoint)
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
