"""The device-agnostic training step: outputs, updates, clipping, optional discriminators, checkpoints,
and a tiny model overfitting one batch."""

from __future__ import annotations

import io
import math

import pytest
import torch
from _batches import random_batch

from model.audio import spec_from_config
from model.config import tiny_config
from model.discriminators import WavLMFeatures
from model.step import TrainState, build_train_state, scheduled_lr, train_step
from model.train.schedule import lr_lambda, plan_schedule

METRICS = {
    "loss_mel",
    "loss_kl",
    "loss_dur",
    "loss_gen",
    "loss_fm",
    "loss_disc",
    "loss_g_total",
    "grad_norm_g",
    "grad_norm_d",
}


def tone_batch(cfg, batch: int = 2, frames: tuple[int, int] = (40, 48), seed: int = 0) -> dict:
    """A contract batch whose audio is a learnable harmonic tone (a different pitch per item)."""
    b = random_batch(cfg, batch, seed=seed, frames=frames)
    hop, sr = cfg.data.hop_length, cfg.data.sampling_rate
    n = b["wav"].shape[-1]
    t = torch.arange(n) / sr
    wav = torch.zeros(batch, 1, n)
    for i in range(batch):
        f0 = 180.0 + 70.0 * i
        tone = sum(math.pow(0.6, k) * torch.sin(2 * math.pi * f0 * (k + 1) * t) for k in range(4))
        env = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t + i)
        wav[i, 0] = 0.3 * tone * env
    mask = (torch.arange(n).unsqueeze(0) < b["wav_lengths"].unsqueeze(1)).unsqueeze(1)
    wav = wav * mask
    spec = spec_from_config(wav, cfg.data)
    fmask = (torch.arange(spec.shape[-1]).unsqueeze(0) < b["spec_lengths"].unsqueeze(1)).unsqueeze(1)
    b["wav"], b["spec"] = wav, spec * fmask
    assert b["spec"].shape[-1] * hop == n
    return b


def make_state(cfg=None, seed: int = 0, **kw) -> TrainState:
    cfg = cfg or tiny_config()
    torch.manual_seed(seed)
    return build_train_state(cfg, "cpu", **kw)


def test_train_step_outputs_are_detached_scalars_and_nets_update():
    state = make_state()
    assert state.autocast_dtype is None  # CPU: fp32, no autocast
    g0 = [p.detach().clone() for p in state.net_g.parameters()]
    d0 = [p.detach().clone() for p in state.net_d.parameters()]
    out = train_step(state, random_batch(state.cfg, 2))
    assert set(out) == METRICS
    for k, v in out.items():
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad, k
        assert torch.isfinite(v), k
    assert state.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(g0, state.net_g.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, state.net_d.parameters(), strict=True))
    # the discriminator is trainable again after the generator step froze it
    assert all(p.requires_grad for p in state.net_d.parameters())
    # weighted total = what was back-propagated
    t = state.cfg.train
    total = (
        t.c_mel * out["loss_mel"]
        + t.c_kl * out["loss_kl"]
        + t.c_dur * out["loss_dur"]
        + t.c_adv * out["loss_gen"]
        + t.c_fm * out["loss_fm"]
    )
    torch.testing.assert_close(out["loss_g_total"], total)
    # the noise-scaled MAS schedule advanced with the step
    m = state.cfg.model
    assert state.net_g.current_mas_noise_scale == pytest.approx(
        m.mas_noise_scale_initial - m.mas_noise_scale_delta
    )


def _grad_norm(net) -> float:
    return float(
        torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in net.parameters() if p.grad is not None))
    )


def test_gradient_clipping_bounds_the_update_norm():
    cfg = tiny_config()
    assert (cfg.train.grad_clip_g, cfg.train.grad_clip_d) == (500.0, None)  # SBV2: generator only
    cfg.train.grad_clip_g, cfg.train.grad_clip_d = 1e-3, 2e-3
    state = make_state(cfg)
    out = train_step(state, random_batch(cfg, 2))
    # the reported norms are the pre-clip ones; the gradients the optimizers used are clipped
    assert float(out["grad_norm_g"]) > 1e-3 and float(out["grad_norm_d"]) > 2e-3
    assert _grad_norm(state.net_g) <= 1e-3 * 1.01
    assert _grad_norm(state.net_d) <= 2e-3 * 1.01
    cfg.train.grad_clip_g = cfg.train.grad_clip_d = None  # no clipping: the norms are still reported
    state = make_state(cfg)
    out = train_step(state, random_batch(cfg, 2))
    assert float(out["grad_norm_g"]) == pytest.approx(_grad_norm(state.net_g), rel=1e-4)
    assert float(out["grad_norm_d"]) == pytest.approx(_grad_norm(state.net_d), rel=1e-4)


def test_every_optimizer_follows_the_schedule_and_the_step_advances_it():
    cfg = tiny_config()
    cfg.model.use_duration_discriminator = True
    cfg.train.lr_schedule, cfg.train.warmup_steps = "cosine", 2
    plan = plan_schedule(cfg.train, 4)
    state = make_state(cfg, lr_factor=lr_lambda(plan))
    lr0 = cfg.train.learning_rate
    expected = [lr0 * 0.5, lr0, lr0 * (0.1 + 0.9 * 0.5), lr0 * 0.1]  # warm-up, then cosine to 0.1
    assert len(state.schedulers()) == len(state.optimizers()) == 3
    batch = random_batch(cfg, 2)
    for step, lr in enumerate(expected):
        for opt in state.optimizers().values():  # the lr this update uses, in every optimizer
            assert opt.param_groups[0]["lr"] == pytest.approx(lr)
            assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["eps"] == 1e-9
        assert scheduled_lr(state.sched_d, step) == pytest.approx(lr)
        train_step(state, batch)
    # a state without a schedule keeps train.learning_rate
    plain = make_state(cfg)
    train_step(plain, batch)
    assert all(o.param_groups[0]["lr"] == lr0 for o in plain.optimizers().values())


def test_duration_discriminator_trains_when_enabled():
    cfg = tiny_config()
    cfg.model.use_duration_discriminator = True
    state = make_state(cfg)
    assert state.net_dur_disc is not None and state.optim_dur_disc is not None
    before = [p.detach().clone() for p in state.net_dur_disc.parameters()]
    out = train_step(state, random_batch(cfg, 2))
    assert {"loss_dur_disc", "loss_dur_gen"} <= set(out)
    assert any(not torch.equal(a, b) for a, b in zip(before, state.net_dur_disc.parameters(), strict=True))


def test_wavlm_discriminator_with_a_tiny_local_wavlm(tmp_path):
    from transformers import WavLMConfig, WavLMModel

    wcfg = WavLMConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        num_buckets=16,
        max_bucket_distance=40,
    )
    WavLMModel(wcfg).save_pretrained(tmp_path / "wavlm")
    cfg = tiny_config()
    cfg.model.use_wavlm_discriminator = cfg.model.wavlm_discriminator = True
    cfg.model.slm = {
        "model": str(tmp_path / "wavlm"),
        "sr": 16000,
        "hidden": 16,
        "nlayers": 3,
        "initial_channel": 8,
    }
    state = make_state(cfg)  # loads the WavLM by path through transformers
    assert isinstance(state.wavlm, WavLMFeatures) and state.net_wd is not None
    frozen = [p.detach().clone() for p in state.wavlm.parameters()]
    before = [p.detach().clone() for p in state.net_wd.parameters()]
    out = train_step(state, random_batch(cfg, 2, frames=(40, 48)))
    assert {"loss_wavlm_disc", "loss_wavlm_fm", "loss_wavlm_gen"} <= set(out)
    assert any(not torch.equal(a, b) for a, b in zip(before, state.net_wd.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen, state.wavlm.parameters(), strict=True))
    assert "wavlm" not in state.state_dict()  # the frozen WavLM is not checkpointed


def test_state_dict_round_trip_resumes_identically():
    cfg = tiny_config()
    cfg.train.lr_schedule = "sbv2"
    cfg.train.scheduler_per = "step"
    factor = lr_lambda(plan_schedule(cfg.train, 10))
    batch = random_batch(cfg, 2)
    a = make_state(cfg, seed=0, lr_factor=factor)
    train_step(a, batch)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_state(cfg, seed=1, lr_factor=factor)  # different init
    b.load_state_dict(torch.load(buf, weights_only=False))
    assert b.step == 1
    assert (
        b.optim_g.param_groups[0]["lr"]
        == a.optim_g.param_groups[0]["lr"]
        == cfg.train.learning_rate * 0.99996
    )
    for pa, pb in zip(a.net_g.parameters(), b.net_g.parameters(), strict=True):
        assert torch.equal(pa, pb)
    torch.manual_seed(5)
    out_a = train_step(a, batch)
    torch.manual_seed(5)
    out_b = train_step(b, batch)
    for k in METRICS:
        torch.testing.assert_close(out_a[k], out_b[k], msg=k)
    with pytest.raises(KeyError, match="optim_d"):
        b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "optim_d"})


def test_tiny_model_overfits_one_batch():
    """Mel L1 on a fixed batch falls to at most half its starting value within a few hundred steps."""
    cfg = tiny_config()
    cfg.model.p_dropout = 0.0
    state = make_state(cfg, seed=0)
    batch = tone_batch(cfg, 2, frames=(32, 32))
    losses = []
    for step in range(300):
        out = train_step(state, batch)
        losses.append(out["loss_mel"])
        if step >= 40 and step % 20 == 0:
            recent = float(torch.stack(losses[-10:]).mean())
            if recent <= 0.4 * float(torch.stack(losses[:5]).mean()):
                break
    start = float(torch.stack(losses[:5]).mean())
    end = float(torch.stack(losses[-10:]).mean())
    assert math.isfinite(end)
    assert end <= 0.5 * start, (start, end, len(losses))


def test_mixed_precision_path_runs_under_bf16_autocast(monkeypatch):
    """The CUDA bf16 code path, exercised with CPU autocast: losses and norms come back float32."""
    cfg = tiny_config()
    cfg.model.use_duration_discriminator = True
    state = make_state(cfg)
    monkeypatch.setattr(TrainState, "autocast_dtype", property(lambda self: torch.bfloat16))
    out = train_step(state, random_batch(cfg, 2))
    for k, v in out.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), k
    assert all(p.dtype == torch.float32 for p in state.net_g.parameters())
