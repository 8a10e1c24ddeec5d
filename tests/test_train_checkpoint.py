"""Checkpoints: atomic files, the last K kept, refusal to resume across a changed model or phone table."""

from __future__ import annotations

import re

import pytest
import torch

from model.config import TrialConfig, tiny_config
from model.step import build_train_state
from model.train import checkpoint as ckpt
from model.train.schedule import plan_schedule


def test_keep_last_k_and_contents(tmp_path):
    cfg = tiny_config()
    cfg.output_dir = str(tmp_path)
    torch.manual_seed(0)
    state = build_train_state(cfg, "cpu")
    for step in (3, 6, 9):
        state.step = step
        ckpt.save_checkpoint(state, cfg, epoch=1, batch_in_epoch=step, counters={"data_seen_s": 1.5}, keep=2)
    files = sorted(p.name for p in ckpt.checkpoint_dir(cfg).iterdir())
    assert files == ["ckpt_00000006.pt", "ckpt_00000009.pt"]  # no temporary files left behind
    last = ckpt.latest_checkpoint(ckpt.checkpoint_dir(cfg))
    payload = ckpt.load_checkpoint(last)
    assert payload["step"] == 9 and payload["epoch"] == 1 and payload["batch_in_epoch"] == 9
    assert payload["counters"] == {"data_seen_s": 1.5}
    assert {"torch", "numpy", "python"} <= set(payload["rng"]) and payload["config"]["name"] == "tiny"
    assert {"net_g", "net_d", "optim_g", "optim_d", "sched_g", "sched_d"} <= set(payload["train_state"])
    ckpt.check_compatible(payload, cfg, last)

    other = tiny_config()
    other.model.hidden_channels = 48
    with pytest.raises(ckpt.CheckpointMismatch, match="model.hidden_channels"):
        ckpt.check_compatible(payload, other, last)
    # the model's other inputs: another text model (same width) or style encoder is refused too
    for field, value in (("text_features", "/models/tiny-llama"), ("style_encoder", "resemblyzer")):
        other = tiny_config()
        setattr(other.data, field, value)
        with pytest.raises(ckpt.CheckpointMismatch, match=f"data.{field}: .* -> '{value}'"):
            ckpt.check_compatible(payload, other, last)
    older = {**payload, "config": {**payload["config"], "data": dict(payload["config"]["data"])}}
    del older["config"]["data"]["style_encoder"]  # written before the field existed: not compared
    ckpt.check_compatible(older, cfg, last)
    payload["symbols"] = payload["symbols"][:-1]
    with pytest.raises(ckpt.CheckpointMismatch, match="phone table"):
        ckpt.check_compatible(payload, cfg, last)


def test_kept_checkpoints_survive_rotation_and_a_fresh_start_removes_them(tmp_path):
    cfg = tiny_config()
    cfg.output_dir = str(tmp_path)
    torch.manual_seed(0)
    state = build_train_state(cfg, "cpu")
    for step in (2, 4, 6, 8, 10):
        state.step = step
        ckpt.save_checkpoint(
            state, cfg, epoch=0, batch_in_epoch=step, counters={}, keep=1, kept=step in (4, 6)
        )
    d = ckpt.checkpoint_dir(cfg)
    assert [s for s, _ in ckpt.list_checkpoints(d)] == [4, 6, 10]  # kept ones + the last one
    assert [ckpt.is_kept(p) for _, p in ckpt.list_checkpoints(d)] == [True, True, False]
    assert ckpt.latest_checkpoint(d).name == "ckpt_00000010.pt"
    assert [p.name for p in ckpt.remove_checkpoints(d)] == [f"ckpt_{s:08d}.pt" for s in (4, 6, 10)]
    assert list(d.iterdir()) == []  # markers gone too


def test_a_changed_schedule_is_refused_naming_both_values(tmp_path):
    cfg = tiny_config()
    cfg.output_dir = str(tmp_path)
    torch.manual_seed(0)
    state = build_train_state(cfg, "cpu")
    plan = plan_schedule(cfg.train, 100).to_dict()
    p = ckpt.save_checkpoint(state, cfg, epoch=0, batch_in_epoch=0, counters={}, schedule=plan)
    payload = ckpt.load_checkpoint(p)
    ckpt.check_compatible(payload, cfg, p, plan)
    changes = [
        ({"learning_rate": 3e-4}, "train.learning_rate: 0.0001 -> 0.0003"),
        ({"lr_schedule": "wsd"}, "train.lr_schedule (as run): 'cosine' -> 'wsd'"),
        ({"warmup_steps": 10}, "train.warmup_steps: 0 -> 10"),
        ({"min_lr_frac": 0.0}, "train.min_lr_frac: 0.1 -> 0.0"),
    ]
    for change, message in changes:
        other = TrialConfig.from_dict(cfg.to_dict())
        for k, v in change.items():
            setattr(other.train, k, v)
        with pytest.raises(ckpt.CheckpointMismatch, match=re.escape(message)):
            ckpt.check_compatible(payload, other, p, plan_schedule(other.train, 100).to_dict())
    with pytest.raises(ckpt.CheckpointMismatch, match="planned steps: 100 -> 120"):
        ckpt.check_compatible(payload, cfg, p, plan_schedule(cfg.train, 120).to_dict())
    # a constant-lr (or sbv2) curve does not depend on the length: such a trial may be extended
    const = TrialConfig.from_dict(cfg.to_dict())
    const.train.lr_schedule = "constant"
    const_plan = plan_schedule(const.train, 100).to_dict()
    ckpt.check_compatible(
        {**payload, "schedule": const_plan}, const, p, plan_schedule(const.train, 120).to_dict()
    )
    wsd = TrialConfig.from_dict(cfg.to_dict())
    wsd.train.lr_schedule = "wsd"
    wsd_plan = plan_schedule(wsd.train, 100).to_dict()
    for k, v, message in [
        ("cooldown_frac", 0.3, "train.cooldown_frac: 0.2 -> 0.3"),
        ("cooldown_shape", "linear", "train.cooldown_shape: '1-sqrt' -> 'linear'"),
    ]:
        other = TrialConfig.from_dict(wsd.to_dict())
        setattr(other.train, k, v)
        with pytest.raises(ckpt.CheckpointMismatch, match=re.escape(message)):
            ckpt.check_compatible(
                {**payload, "schedule": wsd_plan}, other, p, plan_schedule(other.train, 100).to_dict()
            )
    del payload["schedule"]  # a checkpoint from before schedules were recorded cannot be resumed
    with pytest.raises(ckpt.CheckpointMismatch, match="not recorded"):
        ckpt.check_compatible(payload, cfg, p, plan)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "ckpt_00000001.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointMismatch, match="unreadable"):
        ckpt.load_checkpoint(p)


def test_rng_round_trip():
    st = ckpt.rng_state()
    a = (torch.rand(2), __import__("numpy").random.rand(), __import__("random").random())
    ckpt.set_rng_state(st)
    b = (torch.rand(2), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
