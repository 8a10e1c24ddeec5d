"""Evaluation: the NELBO is exactly repeatable, leaves training's RNG alone, and its terms add up."""

from __future__ import annotations

import math

import pytest
import torch
from _batches import random_batch

from model.config import tiny_config
from model.step import build_train_state
from model.train.evaluate import evaluate, laplace_scale
from model.train.loop import warm_numba_threads


@pytest.fixture(scope="module")
def setup():
    warm_numba_threads()
    cfg = tiny_config()
    torch.manual_seed(0)
    net = build_train_state(cfg, "cpu").net_g
    batches = [random_batch(cfg, 2, seed=s, frames=(60, 90)) for s in range(2)]
    return cfg, net, batches


def test_nelbo_is_deterministic_and_rng_neutral(setup):
    cfg, net, batches = setup
    torch.manual_seed(7)
    a = evaluate(net, batches, cfg, synthesis=False).metrics
    after_eval = torch.rand(3)
    torch.manual_seed(7)
    expected = torch.rand(3)
    assert torch.equal(after_eval, expected)  # evaluation draws from its own seeded generator
    b = evaluate(net, batches, cfg, synthesis=False).metrics
    assert a == b
    assert net.training  # train mode restored
    cfg2 = type(cfg).from_dict(cfg.to_dict())
    cfg2.eval.seed += 1  # a different noise seed gives a different posterior sample
    assert evaluate(net, batches, cfg2, synthesis=False).metrics["val_nelbo_kl"] != a["val_nelbo_kl"]


def test_nelbo_terms(setup):
    cfg, net, batches = setup
    m = evaluate(net, batches, cfg, synthesis=False).metrics
    assert m["val_nelbo"] == pytest.approx(m["val_nelbo_recon"] + m["val_nelbo_kl"] + m["val_nelbo_dur"])
    assert m["val_kl"] == m["val_nelbo_kl"]
    n_mels = cfg.data.n_mel_channels
    b = laplace_scale(cfg)
    assert b == pytest.approx(n_mels / cfg.train.c_mel)
    # recon per frame = sum over mels of |x - mu| / b + log(2b)
    assert m["val_nelbo_recon"] == pytest.approx(n_mels * (m["val_mel_l1"] / b + math.log(2 * b)), rel=1e-5)
    cfg.eval.nelbo_laplace_scale = 2.0
    m2 = evaluate(net, batches, cfg, synthesis=False).metrics
    assert m2["val_nelbo_recon"] == pytest.approx(n_mels * (m["val_mel_l1"] / 2.0 + math.log(4.0)), rel=1e-5)
    assert m2["val_nelbo_kl"] == m["val_nelbo_kl"] and m2["val_nelbo_dur"] == m["val_nelbo_dur"]
    cfg.eval.nelbo_laplace_scale = None


def test_synthesis_metrics_and_wavs(setup, tmp_path):
    cfg, net, batches = setup
    cfg = type(cfg).from_dict(cfg.to_dict())
    cfg.eval.n_utterances, cfg.eval.n_audio_samples, cfg.eval.mos_backend = 2, 1, "none"
    res = evaluate(net, batches, cfg, audio_dir=tmp_path)
    m = res.metrics
    for k in ("val_mcd", "val_mcd_synth", "val_vuv_error", "val_vuv_error_synth", "rtf"):
        assert k in m and math.isfinite(m[k]), k
    assert [p.name for p in res.wavs] == ["rand_0_0_synth.wav", "rand_0_0_recon.wav"]
    assert all(p.stat().st_size > 44 for p in res.wavs)
