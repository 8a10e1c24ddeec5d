"""Pretraining then fine-tuning (issue 10): a trial started from another trial's checkpoint.

Trainer (tiny config, built-in 16 kHz corpus): a fine-tune trial starts with a lower held-out NELBO than the
same trial from scratch; it carries the pretraining compute and data; a resumed fine-tune continues from its
own checkpoint; freezing keeps parts out of the optimizer and unchanged; the speaker table is resized,
re-initialised or kept; a missing or mismatched checkpoint fails with a clear error.
"""

from __future__ import annotations

import pytest
import torch

from model.config import ConfigError, tiny_config
from model.sink import MemorySink
from model.train import run_trial
from model.train.checkpoint import list_checkpoints, load_checkpoint
from model.train.init import InitError, build_state, freeze, load_init, resolve_init_path

PRETRAIN_STEPS = 30


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(base config, finished pretraining trial result) — one tiny pretraining run for the module."""
    root = tmp_path_factory.mktemp("pretrain")
    cfg = tiny_config()
    d = cfg.data
    d.corpus_dir, d.cache_dir = str(root / "corpus"), str(root / "cache")
    d.builtin_hours, d.builtin_speakers = 0.015, 2
    d.val_utterances, d.prepare_workers = 3, 1
    cfg.train.log_interval = 10
    cfg.eval.n_utterances = 0
    cfg.output_dir = str(root / "pre")
    cfg.trial_id, cfg.sweep = "pre0", "pt"
    cfg.tracking.run_id = "run-of-pre0"
    cfg.train.steps = PRETRAIN_STEPS
    res = run_trial(cfg, MemorySink(), resume=False)
    assert res.status == "finished"
    return cfg, res


def _ft(base, tmp_path, **train):
    cfg = type(base).from_dict(base.to_dict())
    cfg.output_dir = str(tmp_path / "ft")
    cfg.trial_id, cfg.tracking.run_id = "ft0", None
    cfg.train.steps = 2
    cfg.train.seed = 7  # a different trial: its own seed
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _val_nelbo(cfg, init: bool) -> float:
    from model.train.data import TrialData
    from model.train.evaluate import evaluate
    from model.train.loop import seed_everything

    data = TrialData.prepare(cfg, device=torch.device("cpu"))
    seed_everything(cfg.train.seed)
    state = build_state(cfg, "cpu")
    if init:
        load_init(state, cfg)
    return evaluate(state.net_g, data.val_batches(), cfg, synthesis=False).metrics["val_nelbo"]


def test_checkpoint_stores_compute_data_and_run_id(pretrained):
    cfg, res = pretrained
    p = load_checkpoint(res.checkpoint)
    c = p["counters"]
    assert c["flops"] > 0 and c["flops"] == pytest.approx(PRETRAIN_STEPS * (c["flops"] / PRETRAIN_STEPS))
    assert 0 < c["data_hours"] <= 0.015 and c["data_seen_s"] > 0
    assert p["config"]["tracking"]["run_id"] == "run-of-pre0"


def test_finetune_starts_below_scratch_and_logs_pretraining(pretrained, tmp_path):
    base, res = pretrained
    cfg = _ft(base, tmp_path, init_from=base.output_dir)
    cfg.data.n_speakers = 3  # a different speaker table: resized
    scratch = _val_nelbo(cfg, init=False)
    tuned = _val_nelbo(cfg, init=True)
    print(
        f"step-0 held-out NELBO: from scratch {scratch:.2f}, from a {PRETRAIN_STEPS}-step pretrain {tuned:.2f}"
    )
    assert tuned < 0.97 * scratch, (tuned, scratch)

    mem = MemorySink()
    out = run_trial(cfg, mem, resume=True)
    assert out.status == "finished" and out.steps == 2
    pre = load_checkpoint(res.checkpoint)["counters"]
    assert mem.last("pretrain_flops") == pytest.approx(pre["flops"])
    assert mem.last("pretrain_hours") == pytest.approx(pre["data_hours"])
    assert mem.last("pretrain_steps") == PRETRAIN_STEPS
    assert mem.params["pretrain.run_id"] == "run-of-pre0"
    assert mem.params["pretrain.trial_id"] == "pre0" and mem.params["pretrain.sweep"] == "pt"
    assert mem.params["pretrain.source"] == str(res.checkpoint)
    # fine-tune compute starts at 0 (the pretraining compute is reported apart)
    assert mem.history("flops")[0][1] == pytest.approx(2 * mem.last("flops_per_step"))

    # its own checkpoint carries the pretraining on (a chain of fine-tunes counts it all) ...
    own = load_checkpoint(out.checkpoint)
    assert own["counters"]["pretrain_flops"] == pytest.approx(pre["flops"])
    assert own["train_state"]["extra"]["init"]["run_id"] == "run-of-pre0"
    # ... and a resumed fine-tune continues from it (step 2 -> 4), not from the pretraining checkpoint
    cfg.train.steps = 4
    mem2 = MemorySink()
    out2 = run_trial(cfg, mem2, resume=True)
    assert out2.steps == 4 and min(s for s, _ in mem2.history("loss_mel")) > 2
    assert mem2.last("pretrain_flops") == pytest.approx(pre["flops"])
    assert [s for s, _ in list_checkpoints(tmp_path / "ft" / "checkpoints")][-1] == 4


def test_freeze_keeps_parts_out_of_the_optimizer_and_unchanged(pretrained, tmp_path):
    base, res = pretrained
    cfg = _ft(base, tmp_path, init_from=str(res.checkpoint), freeze=["enc_p", "flow.flows.0"], steps=2)
    out = run_trial(cfg, MemorySink(), resume=False)
    assert out.status == "finished"
    before = load_checkpoint(res.checkpoint)["train_state"]["net_g"]
    after = load_checkpoint(out.checkpoint)["train_state"]["net_g"]
    frozen = [k for k in after if k.startswith(("enc_p.", "flow.flows.0."))]
    trained = [k for k in after if k.startswith("dec.") and after[k].is_floating_point()]
    assert frozen and trained
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in trained)

    state = build_state(cfg, "cpu")
    in_opt = {id(p) for g in state.optim_g.param_groups for p in g["params"]}
    for name, p in state.net_g.named_parameters():
        is_frozen = name.startswith(("enc_p.", "flow.flows.0."))
        assert (id(p) in in_opt) != is_frozen, name
        assert p.requires_grad != is_frozen, name
    with pytest.raises(ConfigError, match="train.freeze: 'enc_x' names no generator parameters"):
        freeze(state.net_g, ["enc_x"])


def test_speaker_table_resize_reinit_keep(pretrained, tmp_path):
    base, res = pretrained
    old = load_checkpoint(res.checkpoint)["train_state"]["net_g"]["emb_g.weight"]  # 4 speakers
    assert old.shape[0] == 4
    for n, mode in ((6, "resize"), (2, "resize"), (6, "reinit"), (4, "keep")):
        cfg = _ft(base, tmp_path, init_from=base.output_dir, init_speakers=mode)
        cfg.data.n_speakers = n
        torch.manual_seed(0)
        state = build_state(cfg, "cpu")
        fresh = state.net_g.emb_g.weight.detach().clone()
        load_init(state, cfg)
        w = state.net_g.emb_g.weight.detach()
        assert w.shape == (n, old.shape[1])
        if mode == "reinit":
            assert torch.equal(w, fresh)
            continue
        k = min(n, 4)
        assert torch.equal(w[:k], old[:k])
        if n > 4:
            assert torch.allclose(w[4:], old.mean(0).expand(n - 4, -1))
        # everything else is loaded as is
        assert torch.equal(
            state.net_g.dec.conv_pre.weight,
            load_checkpoint(res.checkpoint)["train_state"]["net_g"]["dec.conv_pre.weight"],
        )
    cfg = _ft(base, tmp_path, init_from=base.output_dir, init_speakers="keep")
    cfg.data.n_speakers = 3
    with pytest.raises(InitError, match="init_speakers=keep"):
        load_init(build_state(cfg, "cpu"), cfg)


def test_bad_init_sources_fail_clearly(pretrained, tmp_path):
    base, _ = pretrained
    cfg = _ft(base, tmp_path)
    with pytest.raises(InitError, match="no such checkpoint file or trial directory"):
        resolve_init_path(str(tmp_path / "nope"), cfg)
    with pytest.raises(InitError, match=r"'sweep:pt/missing': no checkpoint of that trial"):
        resolve_init_path("sweep:pt/missing", cfg)
    with pytest.raises(InitError, match="expected 'sweep:<name>/<trial_id>'"):
        resolve_init_path("sweep:pt", cfg)
    # a sweep trial finds its sibling trial of the named sweep under the same storage
    sib = _ft(base, tmp_path)
    sib.output_dir, sib.sweep = str(tmp_path / "store" / "ft_sweep" / "trials" / "x"), "ft_sweep"
    (tmp_path / "store" / "pt" / "trials").mkdir(parents=True)
    (tmp_path / "store" / "pt" / "trials" / "pre0").symlink_to(base.output_dir)
    assert resolve_init_path("sweep:pt/pre0", sib).name.startswith("ckpt_")
    # a different model
    cfg = _ft(base, tmp_path, init_from=base.output_dir)
    cfg.model.hidden_channels = cfg.model.inter_channels = 16
    with pytest.raises(InitError, match=r"model differs.*model.hidden_channels: 32 -> 16"):
        load_init(build_state(cfg, "cpu"), cfg)
    cfg = _ft(base, tmp_path, init_from=base.output_dir, init_speakers="fresh")
    with pytest.raises(ConfigError, match="train.init_speakers"):
        load_init(build_state(cfg, "cpu"), cfg)
