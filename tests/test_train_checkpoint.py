"""Checkpoints: atomic files, the last K kept, refusal to resume across a changed model or phone table."""

from __future__ import annotations

import pytest
import torch

from model.config import tiny_config
from model.step import build_train_state
from model.train import checkpoint as ckpt


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
    payload["symbols"] = payload["symbols"][:-1]
    with pytest.raises(ckpt.CheckpointMismatch, match="phone table"):
        ckpt.check_compatible(payload, cfg, last)


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
