"""The VITS generator (Style-Bert-VITS2 JP-Extra layout): shapes, alignment, inference lengths, flows,
spline, relative attention, parameter counts against the public model, gradient checkpointing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _batches import generator_inputs, random_batch

from model.attentions import MultiHeadAttention
from model.config import ConfigError, TrialConfig, tiny_config
from model.generator import SynthesizerTrn
from model.text import symbols
from model.transforms import piecewise_rational_quadratic_transform


def _tiny(dropout: float | None = None, **model_overrides) -> tuple[TrialConfig, SynthesizerTrn]:
    cfg = tiny_config()  # SDP as wide as hidden (32), DP pinned to 32 (public: fixed 256)
    if dropout is not None:
        cfg.model.p_dropout = dropout
    for k, v in model_overrides.items():
        setattr(cfg.model, k, v)
    torch.manual_seed(0)
    return cfg, SynthesizerTrn.from_config(cfg.model, cfg.data, cfg.train.segment_size)


def _loss(out) -> torch.Tensor:
    return (
        out.y_hat.abs().mean()
        + out.l_length.sum()
        + (out.z_p - out.m_p).pow(2).mean()
        + out.logs_q.mean()
        + out.hidden_x.pow(2).mean()
    )


# ----------------------------------------------------------------------------------------------------
# forward / backward


def test_forward_backward_shapes_and_gradients():
    cfg, net = _tiny()
    b = random_batch(cfg, batch=2)
    out = net(**generator_inputs(b))
    B, t_x, t_y = 2, b["phones"].shape[1], b["spec"].shape[2]
    seg = cfg.train.segment_size
    inter, hidden, gin = cfg.model.inter_channels, cfg.model.hidden_channels, cfg.model.gin_channels
    assert out.y_hat.shape == (B, 1, seg)
    assert out.ids_slice.shape == (B,)
    assert out.l_length.shape == (B,) and torch.isfinite(out.l_length).all()
    assert out.attn.shape == (B, 1, t_y, t_x)
    assert out.x_mask.shape == (B, 1, t_x) and out.z_mask.shape == (B, 1, t_y)
    for name in ("z", "z_p", "m_p", "logs_p", "m_q", "logs_q"):
        assert getattr(out, name).shape == (B, inter, t_y), name
    assert out.logw.shape == out.logw_.shape == (B, 1, t_x)
    assert out.hidden_x.shape == (B, hidden, t_x)
    assert out.g.shape == (B, gin, 1)
    # the window lies inside each item's frames
    hop = cfg.data.hop_length
    assert torch.all(out.ids_slice + seg // hop <= torch.clamp(b["spec_lengths"], min=seg // hop))

    _loss(out).backward()
    for name in ("enc_p", "enc_q", "flow", "dec", "sdp", "dp", "emb_g"):
        grads = [p.grad for p in getattr(net, name).parameters() if p.grad is not None]
        assert grads, f"{name} got no gradient"
        assert all(torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_alignment_is_monotonic_and_covers_every_frame():
    cfg, net = _tiny()
    b = random_batch(cfg, batch=3, seed=1)
    out = net(**generator_inputs(b))
    attn = out.attn.squeeze(1)
    for i in range(3):
        ty, tx = int(b["spec_lengths"][i]), int(b["phone_lengths"][i])
        a = attn[i]
        assert a[ty:].sum() == 0 and a[:, tx:].sum() == 0
        assert torch.all(a[:ty, :tx].sum(1) == 1)
        assert torch.all(a[:ty, :tx].sum(0) >= 1)
        tok = a[:ty, :tx].argmax(1)
        assert torch.all(torch.diff(tok) >= 0) and torch.all(torch.diff(tok) <= 1)
    # durations (targets of the predictors) add up to the frame counts
    w = torch.exp(out.logw_).squeeze(1) * out.x_mask.squeeze(1)
    assert torch.allclose(w.sum(1), b["spec_lengths"].float(), atol=1e-3)


def test_mas_noise_schedule():
    _, net = _tiny()
    assert net.current_mas_noise_scale == pytest.approx(0.01)
    net.update_mas_noise_scale()
    assert net.current_mas_noise_scale == pytest.approx(0.01 - 2e-6)
    assert net.update_mas_noise_scale(step=1000) == pytest.approx(0.01 - 2e-3)
    assert net.update_mas_noise_scale(step=10**6) == 0.0


def test_residual_coupling_flow_variant_and_no_bert_no_style():
    cfg, net = _tiny(use_transformer_flow=False, bert_dim=0, style_dim=0)
    assert not hasattr(net.enc_p, "bert_proj") and not hasattr(net.enc_p, "style_proj")
    b = random_batch(cfg, batch=2, seed=2)
    out = net(**generator_inputs(b))
    _loss(out).backward()
    assert out.y_hat.shape == (2, 1, cfg.train.segment_size)


def test_shared_flow_encoder_is_counted_once():
    _, net = _tiny(flow_share_parameter=True)
    enc = sum(p.numel() for p in net.flow.wn.parameters())
    per_layer = sum(p.numel() for n, p in net.flow.flows[0].named_parameters() if not n.startswith("enc."))
    n_couplings = len(net.flow.flows) // 2
    assert all(f.enc is net.flow.wn for f in net.flow.flows[::2])
    assert sum(p.numel() for p in net.flow.parameters()) == enc + n_couplings * per_layer


def test_torch_mas_in_forward_matches_numba():
    cfg, net = _tiny()
    net.eval()  # no MAS noise, no dropout: alignment depends only on the inputs
    b = random_batch(cfg, batch=2, seed=3)
    torch.manual_seed(5)
    a = net(**generator_inputs(b)).attn
    net.mas_impl = "torch"
    torch.manual_seed(5)
    assert torch.equal(net(**generator_inputs(b)).attn, a)


# ----------------------------------------------------------------------------------------------------
# inference


@pytest.mark.parametrize("sdp_ratio", [0.0, 0.5, 1.0])
def test_inference_length_follows_durations(sdp_ratio: float):
    cfg, net = _tiny()
    net.eval()
    b = random_batch(cfg, batch=2, seed=4)
    hop = cfg.data.hop_length
    audio, attn, y_mask, dur = net.infer(
        b["phones"], b["phone_lengths"], b["speakers"], b["tones"], b["languages"], b["bert"], b["style"],
        sdp_ratio=sdp_ratio, length_scale=1.3,
    )  # fmt: skip
    frames = dur.sum(1).clamp(min=1)
    assert dur.shape == b["phones"].shape and dur.dtype == torch.long
    assert torch.all(dur[1, int(b["phone_lengths"][1]) :] == 0), "padding tokens get no frames"
    assert audio.shape == (2, 1, int(frames.max()) * hop)
    assert torch.equal(y_mask.squeeze(1).sum(1).long(), frames)
    assert torch.all(attn.squeeze(1).sum(1) == dur)  # each token covers exactly its frames
    assert audio.abs().max() <= 1.0
    # a single utterance: exactly sum(durations) * hop samples
    one = {k: v[:1] for k, v in b.items() if k != "ids"}
    one["phones"] = one["phones"][:, : int(one["phone_lengths"][0])]
    a1, _, _, d1 = net.infer(
        one["phones"], one["phone_lengths"], one["speakers"], one["tones"][:, : one["phones"].shape[1]],
        one["languages"][:, : one["phones"].shape[1]], one["bert"][:, :, : one["phones"].shape[1]], one["style"],
        sdp_ratio=sdp_ratio,
    )  # fmt: skip
    assert a1.shape[-1] == int(d1.sum()) * hop
    a2, *_ = net.infer(
        one["phones"], one["phone_lengths"], one["speakers"], one["tones"][:, : one["phones"].shape[1]],
        one["languages"][:, : one["phones"].shape[1]], one["bert"][:, :, : one["phones"].shape[1]], one["style"],
        max_len=3,
    )  # fmt: skip
    assert a2.shape[-1] == 3 * hop


# ----------------------------------------------------------------------------------------------------
# invertible parts


@pytest.mark.parametrize("transformer", [True, False])
def test_flow_is_invertible(transformer: bool):
    _, net = _tiny(use_transformer_flow=transformer)
    net.eval()
    for p in net.flow.parameters():  # zero-initialised posts make the flow the identity; perturb them
        p.data.add_(torch.randn_like(p) * 0.05)
    z = torch.randn(2, 32, 17)
    mask = torch.ones(2, 1, 17)
    mask[1, :, 11:] = 0
    z = z * mask
    g = torch.randn(2, 16, 1)
    z_p = net.flow(z, mask, g=g)
    assert not torch.allclose(z_p, z)
    assert torch.allclose(net.flow(z_p, mask, g=g, reverse=True), z, atol=1e-4)


def test_spline_inverse_and_log_det():
    torch.manual_seed(0)
    x = torch.linspace(-7, 7, 301)  # includes both linear tails
    bins = 10
    # one spline for every input, so the outputs trace a single monotonic curve
    w, h = torch.randn(bins).expand(301, bins), torch.randn(bins).expand(301, bins)
    d = torch.randn(bins - 1).expand(301, bins - 1)
    x = x.requires_grad_(True)
    y, logdet = piecewise_rational_quadratic_transform(x, w, h, d, tails="linear", tail_bound=5.0)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(logdet, torch.log(dydx), atol=1e-4)
    outside = x.detach().abs() > 5
    assert torch.equal(y[outside], x.detach()[outside]) and torch.all(logdet[outside] == 0)
    x_back, logdet_inv = piecewise_rational_quadratic_transform(
        y.detach(), w, h, d, inverse=True, tails="linear", tail_bound=5.0
    )
    assert torch.allclose(x_back, x.detach(), atol=1e-4)
    assert torch.allclose(logdet_inv, -logdet.detach(), atol=1e-4)
    assert torch.all(torch.diff(y.detach()) > 0), "monotonic"


def test_stochastic_duration_predictor_nll_and_sampling():
    _, net = _tiny()
    x = torch.randn(2, 32, 9)
    mask = torch.ones(2, 1, 9)
    mask[1, :, 6:] = 0
    w = torch.randint(1, 6, (2, 1, 9)).float() * mask
    nll = net.sdp(x, mask, w)
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    logw = net.sdp(x, mask, reverse=True, noise_scale=0.8)
    assert logw.shape == (2, 1, 9) and torch.all(logw[1, :, 6:] == 0)


# ----------------------------------------------------------------------------------------------------
# relative attention against the definition (Shaw et al.): score_ij = q_i.(k_j + a^K_{j-i}) / sqrt(d)


def test_relative_attention_matches_naive_definition():
    torch.manual_seed(0)
    ch, heads, t, win = 8, 2, 7, 2
    mha = MultiHeadAttention(ch, ch, heads, window_size=win).eval()
    x = torch.randn(1, ch, t)
    mask = torch.ones(1, 1, t, t)
    mask[..., 5:] = 0
    mask[..., 5:, :] = 0
    got = mha(x, x, mask)
    d = ch // heads
    q = mha.conv_q(x).view(heads, d, t)
    k = mha.conv_k(x).view(heads, d, t)
    v = mha.conv_v(x).view(heads, d, t)
    ek, ev = mha.emb_rel_k[0], mha.emb_rel_v[0]
    out = torch.zeros(heads, d, t)
    for h in range(heads):
        for i in range(t):
            s = torch.empty(t)
            for j in range(t):
                r = j - i
                rel = ek[r + win] if abs(r) <= win else torch.zeros(d)
                s[j] = q[h, :, i] @ (k[h, :, j] + rel) / math.sqrt(d)
                if mask[0, 0, i, j] == 0:
                    s[j] = -1e4
            p = torch.softmax(s, 0)
            for j in range(t):
                r = j - i
                rel = ev[r + win] if abs(r) <= win else torch.zeros(d)
                out[h, :, i] += p[j] * (v[h, :, j] + rel)
    want = mha.conv_o(out.reshape(1, ch, t))
    assert torch.allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# gradient checkpointing


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg, net = _tiny(dropout=0.0)
    net_ckpt = copy.deepcopy(net)
    net_ckpt.set_gradient_checkpointing(True)
    b = random_batch(cfg, batch=2, seed=6)
    grads = []
    for m in (net, net_ckpt):
        torch.manual_seed(11)
        _loss(m(**generator_inputs(b))).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5), n


# ----------------------------------------------------------------------------------------------------
# configuration


def test_config_errors_name_the_field():
    cfg = tiny_config()
    cfg.data.hop_length = 256
    with pytest.raises(ConfigError, match="hop_length"):
        SynthesizerTrn.from_config(cfg.model, cfg.data, cfg.train.segment_size)
    cfg = tiny_config()
    cfg.model.n_heads = 3
    with pytest.raises(ConfigError, match="n_heads"):
        SynthesizerTrn.from_config(cfg.model, cfg.data, cfg.train.segment_size)


# ----------------------------------------------------------------------------------------------------
# parameter counts at the Style-Bert-VITS2 JP-Extra default config vs. the public implementation

PUBLIC_COUNTS = {
    "enc_p": 6_661_632,
    "enc_p.encoder": 6_316_992,
    "dec": 14_662_144,
    "enc_q": 10_494_336,
    "flow": 39_572_352,
    "sdp": 1_415_664,
    "dp": 444_353,
    "emb_g": 262_144,
    "total": 73_512_625,
}


def test_parameter_counts_match_public_jp_extra():
    cfg = TrialConfig()
    net = SynthesizerTrn.from_config(cfg.model, cfg.data, cfg.train.segment_size)

    def n(m):
        return sum(p.numel() for p in m.parameters())

    got = {k: n(getattr(net, k)) for k in ("enc_p", "dec", "enc_q", "flow", "sdp", "dp", "emb_g")}
    got["enc_p.encoder"] = n(net.enc_p.encoder)
    got["total"] = n(net)
    for k, want in PUBLIC_COUNTS.items():
        assert abs(got[k] - want) <= 0.03 * want, (k, got[k], want)
    # every part except the phone table is exact; the table differs only by the symbol count
    rows = symbols.NUM_SYMBOLS + symbols.NUM_TONES + symbols.NUM_LANGUAGES
    assert got["enc_p"] - PUBLIC_COUNTS["enc_p"] == (rows - 127) * cfg.model.hidden_channels
    for k in ("enc_p.encoder", "dec", "enc_q", "flow", "sdp", "dp", "emb_g"):
        assert got[k] == PUBLIC_COUNTS[k], k


def test_sdp_width_follows_hidden_channels_unless_overridden():
    """SBV2's SDP takes its filter width from its input (hidden) width; sdp_filter_channels overrides it."""

    def sdp(hidden, override=None):
        cfg = tiny_config()
        cfg.model.hidden_channels = cfg.model.inter_channels = hidden
        cfg.model.sdp_filter_channels = override
        net = SynthesizerTrn.from_config(cfg.model, cfg.data, cfg.train.segment_size)
        return net.sdp.pre.out_channels, sum(p.numel() for p in net.sdp.parameters())

    assert tiny_config().model.sdp_filter_channels is None and TrialConfig().model.sdp_filter_channels is None
    (w16, n16), (w64, n64) = sdp(16), sdp(64)
    assert (w16, w64) == (16, 64) and n64 > 3 * n16  # roughly quadratic in width
    assert sdp(64, override=64) == (w64, n64)  # None is exactly "= hidden_channels"
    assert sdp(64, override=24)[0] == 24  # an explicit width stays possible
    with pytest.raises(ConfigError, match="model.sdp_filter_channels"):
        TrialConfig.from_dict({"model": {"sdp_filter_channels": 0}})
