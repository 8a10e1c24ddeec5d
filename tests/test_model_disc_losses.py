"""Discriminators (shapes, width scaling, public parameter count) and the training losses."""

from __future__ import annotations

import pytest
import torch

from model.discriminators import (
    DiscriminatorP,
    DiscriminatorS,
    DurationDiscriminator,
    MultiPeriodDiscriminator,
    WavLMDiscriminator,
    WavLMFeatures,
)
from model.losses import (
    discriminator_loss,
    duration_loss,
    feature_loss,
    generator_loss,
    kl_loss,
    lsgan_d,
    lsgan_g,
    mel_loss,
    wavlm_feature_loss,
)

PUBLIC_MPD_PARAMS = 46_747_132


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mpd_public_parameter_count():
    with torch.device("meta"):  # shapes only: no 190 MB of weights
        mpd = MultiPeriodDiscriminator()
    n = n_params(mpd)
    assert abs(n - PUBLIC_MPD_PARAMS) / PUBLIC_MPD_PARAMS < 0.01
    assert n == PUBLIC_MPD_PARAMS  # weight norm's gain g per output channel included
    assert len(mpd.discriminators) == 6
    assert isinstance(mpd.discriminators[0], DiscriminatorS)
    assert [d.period for d in mpd.discriminators[1:]] == [2, 3, 5, 7, 11]


def test_width_scales_parameters_roughly_quadratically():
    with torch.device("meta"):
        counts = {w: n_params(MultiPeriodDiscriminator(width=w)) for w in (1.0, 0.5, 0.25, 1 / 16)}
    assert counts[1.0] > counts[0.5] > counts[0.25] > counts[1 / 16]
    # dominated by the 1024x1024 convs: halving width quarters the count (first layers are linear)
    assert 3.5 < counts[1.0] / counts[0.5] < 4.5
    assert 3.5 < counts[0.5] / counts[0.25] < 4.5


@pytest.mark.parametrize("width", [1.0, 0.5, 0.3, 1 / 16, 0.01])
def test_group_counts_divide_channels(width):
    with torch.device("meta"):
        d = DiscriminatorS(width=width)
    for conv in d.convs:
        assert conv.in_channels % conv.groups == 0 and conv.out_channels % conv.groups == 0
    if width == 0.5:  # channels per group kept at the public 4
        assert [c.in_channels // c.groups for c in d.convs[1:5]] == [4, 4, 4, 4]


def test_mpd_forward_shapes_and_feature_maps():
    torch.manual_seed(0)
    mpd = MultiPeriodDiscriminator(periods=[2, 3, 5], width=1 / 16)
    y, y_hat = torch.randn(2, 1, 2000), torch.randn(2, 1, 2000, requires_grad=True)
    y_d_rs, y_d_gs, fmap_rs, fmap_gs = mpd(y, y_hat)
    assert len(y_d_rs) == len(y_d_gs) == len(fmap_rs) == len(fmap_gs) == 4
    for r, g in zip(y_d_rs, y_d_gs, strict=True):
        assert r.shape == g.shape and r.shape[0] == 2 and r.dim() == 2
    assert len(fmap_rs[0]) == 7  # scale discriminator: 6 convs + post
    assert all(len(f) == 6 for f in fmap_rs[1:])  # period: 5 convs + post
    # the concatenated pass equals separate passes
    scores, fmaps = mpd.run(y)
    for a, b in zip(scores, y_d_rs, strict=True):
        torch.testing.assert_close(a, b)
    # the period discriminator pads lengths that are not a multiple of the period
    s, fm = DiscriminatorP(7, width=1 / 16)(y)
    assert fm[0].shape[-1] == 7


def test_duration_discriminator_probabilities_and_grad():
    torch.manual_seed(0)
    dd = DurationDiscriminator(in_channels=16, filter_channels=256, gin_channels=8, width=1 / 16)
    assert dd.filter_channels == 16
    x = torch.randn(2, 16, 11, requires_grad=True)
    mask = torch.ones(2, 1, 11)
    mask[1, :, 7:] = 0
    logw_r, logw_g = torch.randn(2, 1, 11), torch.randn(2, 1, 11, requires_grad=True)
    p_r, p_g = dd(x, mask, logw_r, logw_g, torch.randn(2, 8, 1))
    assert p_r.shape == p_g.shape == (2, 11, 1)
    assert torch.all((p_r > 0) & (p_r < 1))
    lsgan_g(p_g).backward()
    assert logw_g.grad is not None and x.grad is None  # hidden states are detached inside


def _tiny_wavlm_dir(tmp_path):
    from transformers import WavLMConfig, WavLMModel

    cfg = WavLMConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8, 8, 8, 8, 8, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        num_buckets=16,
        max_bucket_distance=40,
    )
    torch.manual_seed(0)
    WavLMModel(cfg).save_pretrained(tmp_path / "wavlm")
    return str(tmp_path / "wavlm")


def test_wavlm_features_and_discriminator_from_local_path(tmp_path):
    feats = WavLMFeatures(_tiny_wavlm_dir(tmp_path), sampling_rate=24000)
    assert feats.hidden == 16 and feats.nlayers == 3
    assert all(not p.requires_grad for p in feats.parameters())
    feats.train()
    assert not feats.wavlm.training  # stays in eval mode
    y_hat = (0.1 * torch.randn(2, 1, 24000)).requires_grad_(True)  # 1 s at 24 kHz -> 16 kHz inside
    h = feats(y_hat)
    assert h.shape[:2] == (2, 16 * 3) and 45 <= h.shape[2] <= 50  # 20 ms hop
    wd = WavLMDiscriminator(slm_hidden=16, slm_layers=3, initial_channel=64, width=0.25)
    score = wd(h)
    assert score.shape == (2, h.shape[2])
    with torch.no_grad():
        real = feats.hidden_states(0.1 * torch.randn(2, 24000))
    loss = lsgan_g(score) + wavlm_feature_loss(real, feats.hidden_states(y_hat))
    loss.backward()
    assert y_hat.grad is not None and torch.isfinite(y_hat.grad).all()
    assert all(p.grad is None for p in feats.parameters())


# ----------------------------------------------------------------------------------------------------
# losses


def test_least_squares_losses():
    ones, zeros = [torch.ones(2, 5)], [torch.zeros(2, 5)]
    loss, r, g = discriminator_loss(ones, zeros)  # perfect discriminator
    assert float(loss) == 0.0 and float(r[0]) == 0.0 and float(g[0]) == 0.0
    loss, _, _ = discriminator_loss(zeros * 2, ones * 2)  # fully fooled, two discriminators
    assert float(loss) == pytest.approx(4.0)
    assert float(generator_loss(ones)[0]) == 0.0
    assert float(generator_loss([torch.full((3,), 0.5)])[0]) == pytest.approx(0.25)
    assert float(lsgan_d(torch.ones(3), torch.zeros(3))) == 0.0
    assert float(lsgan_g(torch.zeros(3))) == 1.0


def test_feature_loss_is_twice_mean_abs_and_real_is_constant():
    r = [[torch.zeros(2, 3), torch.zeros(2, 4)]]
    g = [[torch.ones(2, 3, requires_grad=True), torch.full((2, 4), 2.0, requires_grad=True)]]
    loss = feature_loss(r, g)
    assert float(loss.detach()) == pytest.approx(2 * (1.0 + 2.0))
    rr = [[torch.zeros(2, 3, requires_grad=True)]]
    feature_loss(rr, [[torch.ones(2, 3, requires_grad=True)]]).backward()
    assert rr[0][0].grad is None


def test_kl_loss_matches_closed_form_mean():
    torch.manual_seed(0)
    b, c, t = 2, 3, 7
    z_p, logs_q, m_p, logs_p = (torch.randn(b, c, t) for _ in range(4))
    mask = torch.ones(b, 1, t)
    mask[1, :, 4:] = 0
    expected = []
    for i in range(b):
        n = int(mask[i].sum())
        kl = logs_p[i, :, :n] - logs_q[i, :, :n] - 0.5
        kl = kl + 0.5 * (z_p[i, :, :n] - m_p[i, :, :n]) ** 2 * torch.exp(-2 * logs_p[i, :, :n])
        expected.append(kl.sum())
    want = sum(expected) / mask.sum()
    torch.testing.assert_close(kl_loss(z_p, logs_q, m_p, logs_p, mask), want)
    # identical distributions, sample at the mean: -0.5 per element, summed over channels, per frame
    zeros = torch.zeros(b, c, t)
    assert float(kl_loss(zeros, zeros, zeros, zeros, torch.ones(b, 1, t))) == pytest.approx(-0.5 * c)


def test_mel_and_duration_losses():
    a, b = torch.zeros(2, 4, 5), torch.ones(2, 4, 5)
    assert float(mel_loss(a, b)) == 1.0
    assert float(duration_loss(torch.tensor([0.5, 1.5]))) == 2.0
    # bf16 inputs are promoted to float32
    assert mel_loss(a.bfloat16(), b.bfloat16()).dtype == torch.float32
