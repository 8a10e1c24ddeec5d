"""Checkpoint faults: a corrupted latest checkpoint falls back to the one before it (with a warning), and a
disk that fills while a checkpoint is written fails the trial naming the path and leaves the previous
checkpoint usable (a real tmpfs of a few hundred kB, mounted and unmounted by the test)."""

from __future__ import annotations

import logging
import shutil
import subprocess

import pytest
import torch

from model.sink import MemorySink
from model.train import run_trial
from model.train.checkpoint import CheckpointWriteError, list_checkpoints, load_checkpoint
from tests.test_train_loop import _cfg, checkpoint_weights, crash_after, prepared_config


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    return prepared_config(tmp_path_factory.mktemp("faults"))


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(base_cfg, tmp_path, caplog):
    kw = dict(steps=9, checkpoint_every=3, log_interval=1, keep_checkpoints=5, lr_schedule="constant")
    ref = run_trial(_cfg(base_cfg, tmp_path / "ref", **kw), MemorySink(), resume=False)

    cfg = _cfg(base_cfg, tmp_path / "b", **kw)
    with pytest.raises(RuntimeError, match="injected crash"):
        run_trial(cfg, MemorySink(), resume=False, step_fn=crash_after(7))
    ck = tmp_path / "b" / "trial" / "checkpoints"
    assert [s for s, _ in list_checkpoints(ck)] == [3, 6]
    latest = ck / "ckpt_00000006.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # torn: half the file
    sink = MemorySink()
    with caplog.at_level(logging.WARNING):
        res = run_trial(cfg, sink, resume=True)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "ckpt_00000006.pt: unreadable checkpoint" in warned and "falling back" in warned, warned
    assert (ck / "ckpt_00000006.pt.corrupt").exists()  # kept aside for inspection, never tried again
    assert sink.history("loss_mel")[0][0] == 4  # continued after step 3, the last readable checkpoint
    assert res.status == "finished" and res.steps == 9
    wa, wb = checkpoint_weights(ref.checkpoint), checkpoint_weights(res.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the fallback loses nothing but time


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs: room for two of a tiny trial's checkpoints (~7.8 MB each with the optimizer state)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_a_checkpoint_keeps_the_previous_and_names_the_path(base_cfg, tmp_path, small_disk):
    cfg = _cfg(base_cfg, tmp_path, steps=40, checkpoint_every=1, keep_checkpoints=50, lr_schedule="constant")
    cfg.output_dir = str(small_disk / "trial")
    with pytest.raises(CheckpointWriteError) as e:
        run_trial(cfg, MemorySink(), resume=False)
    msg = str(e.value)
    ck = small_disk / "trial" / "checkpoints"
    done = list_checkpoints(ck)
    assert done, "the tmpfs must hold at least one checkpoint before it fills"
    assert f"ckpt_{done[-1][0] + 1:08d}.pt: could not write the checkpoint" in msg, msg
    assert (
        "no space left on the device" in msg and f"previous checkpoint {done[-1][1]} is untouched" in msg
    ), msg
    assert not [p for p in ck.iterdir() if p.name.endswith(".tmp")], "the partial file is removed"
    assert load_checkpoint(done[-1][1])["step"] == done[-1][0]  # the previous one still loads
