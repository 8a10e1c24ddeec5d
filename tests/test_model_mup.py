"""``model.parametrization``: standard is today's code bit for bit, muP equals it at the base width, every
parameter is classified, the init and lr factors are the documented ones, bad input is refused when the
config is built, and the coordinate check: activation scales after a few steps stay flat across widths
with muP and grow with the standard parametrization."""

from __future__ import annotations

import math

import pytest
import torch
from _batches import random_batch

from model import parametrization
from model.config import ConfigError, TrialConfig, load_config, tiny_config
from model.generator import SynthesizerTrn
from model.step import build_discriminators, build_generator, build_train_state, train_step

BASE = 16


def width_config(width: int, mode: str = "mup", base: int | None = BASE, lr: float | None = None):
    """The tiny config at ``width`` (hidden = inter = width, filter = 2 x width), without dropout."""
    cfg = parametrization.at_width(tiny_config(), width)
    cfg.model.p_dropout = 0.0
    cfg.model.parametrization, cfg.model.mup_base_width = mode, base
    if lr is not None:
        cfg.train.learning_rate = lr
    return cfg


def state_at(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return build_train_state(cfg, "cpu")


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


# ----------------------------------------------------------------------------------------------------
# standard is unchanged; muP at the base width is standard


def test_standard_is_bitwise_the_code_before_parametrization():
    """Same weights as building the modules directly, and a step identical to one with the optimizers
    built as before (one AdamW over the trainable parameter list, lr/betas/eps from train, foreach on CPU)."""
    cfg = width_config(32, mode="standard", base=None)
    torch.manual_seed(0)
    direct = SynthesizerTrn.from_config(cfg.model, cfg.data, segment_size=cfg.train.segment_size)
    torch.manual_seed(0)
    assert_same_params(build_generator(cfg), direct)

    new, old = state_at(cfg), state_at(cfg)
    t = cfg.train
    for net_key, opt_key, sched_key in (("net_g", "optim_g", "sched_g"), ("net_d", "optim_d", "sched_d")):
        params = [p for p in getattr(old, net_key).parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=t.learning_rate, betas=tuple(t.betas), eps=t.eps, foreach=True)
        setattr(old, opt_key, opt)
        factor = getattr(new, sched_key).lr_lambdas[0]  # the same schedule: only the optimizer is compared
        setattr(old, sched_key, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=factor))
    assert len(new.optim_g.param_groups) == 1
    assert new.optim_g.state_dict()["param_groups"] == old.optim_g.state_dict()["param_groups"]
    batch = random_batch(cfg, 2)
    for seed in (1, 2):
        torch.manual_seed(seed)
        out_new = train_step(new, batch)
        torch.manual_seed(seed)
        out_old = train_step(old, batch)
        for k in out_new:
            assert torch.equal(out_new[k], out_old[k]), k
    assert_same_params(new.net_g, old.net_g)
    assert_same_params(new.net_d, old.net_d)


def test_mup_at_the_base_width_is_the_standard_model():
    std = state_at(width_config(BASE, mode="standard"))
    mup = state_at(width_config(BASE, mode="mup"))
    assert_same_params(mup.net_g, std.net_g)
    assert_same_params(mup.net_d, std.net_d)
    for opt_key in ("optim_g", "optim_d"):
        groups = getattr(mup, opt_key).param_groups
        assert len(groups) == 1 and groups[0]["lr_mult"] == 1.0
        ref = getattr(std, opt_key).param_groups[0]
        assert groups[0]["lr"] == ref["lr"] and groups[0]["weight_decay"] == ref["weight_decay"]
    batch = random_batch(std.cfg, 2)
    torch.manual_seed(3)
    out_std = train_step(std, batch)
    torch.manual_seed(3)
    out_mup = train_step(mup, batch)
    assert all(torch.equal(out_std[k], out_mup[k]) for k in out_std)
    assert_same_params(mup.net_g, std.net_g)


def test_apply_init_draws_no_random_numbers():
    cfg = width_config(64)
    torch.manual_seed(0)
    with torch.device("meta"):
        net = SynthesizerTrn.from_config(cfg.model, cfg.data, segment_size=cfg.train.segment_size)
    state = torch.random.get_rng_state()
    parametrization.apply_init(net, cfg)
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------------------------------
# classification and factors


def variant_configs():
    a = width_config(64)
    a.model.use_duration_discriminator = True
    b = width_config(48)
    b.model.use_transformer_flow = False  # residual-coupling (WaveNet) flow
    c = width_config(64)
    c.model.flow_share_parameter = True
    c.model.use_spk_conditioned_encoder = False
    d = width_config(8)  # narrower than the base: the factors invert
    return [a, b, c, d]


@pytest.mark.parametrize("cfg", variant_configs(), ids=["dur-disc", "wn-flow", "shared-flow", "narrow"])
def test_every_parameter_is_classified(cfg):
    with torch.device("meta"):
        nets = {"net_g": build_generator(cfg), **build_discriminators(cfg)}
    m = cfg.model.hidden_channels / BASE
    for name, net in nets.items():
        table = parametrization.scalings(net, cfg)
        assert table.keys() == dict(net.named_parameters()).keys(), name
        for pname, s in table.items():
            assert s.role in parametrization.ROLES, pname
            assert s.init > 0 and s.lr > 0, pname
        if name == "net_d":  # the period/scale discriminators read audio only: untouched
            assert all(s.role in ("fixed", "vector") and s.init == s.lr == 1.0 for s in table.values())
    g = parametrization.scalings(nets["net_g"], cfg)
    if cfg.model.use_transformer_flow:
        q = g["enc_p.encoder.attn_layers.0.conv_q.weight"]
        assert q.role == "hidden" and q.lr == pytest.approx(m**-1.5) and q.init == pytest.approx(m**-0.5)
        flow_k = [s for n, s in g.items() if n.startswith("flow.") and n.endswith("conv_k.weight")]
        assert flow_k and all(k.role == "hidden" and k.lr == pytest.approx(1 / m) for k in flow_k)
    else:
        v = g["flow.flows.0.enc.in_layers.0.parametrizations.weight.original1"]
        assert v.role == "hidden" and v.lr == pytest.approx(1 / m) and v.init == 1.0
    assert g["dec.conv_pre.weight"].role == "output"
    assert g["dec.conv_pre.weight"].init == pytest.approx(m**-0.5)  # std x 1/m relative to base
    assert g["enc_p.emb.weight"].role == "input" and g["enc_p.emb.weight"].lr == pytest.approx(m**-0.5)
    assert g["enc_q.pre.weight"].role == "input" and g["enc_q.pre.weight"].lr == 1.0
    assert g["dec.ups.0.parametrizations.weight.original1"].role == "fixed"


def test_standard_init_scales_as_the_rules_assume():
    """Every weight whose shape changes with width has today's std proportional to fan-in^-1/2 (torch's
    convention), or is zero: the premise of the relative init factors (checked on real draws)."""
    torch.manual_seed(0)
    base = build_generator(width_config(BASE, mode="standard"))
    torch.manual_seed(1)
    wide = build_generator(width_config(64, mode="standard"))
    bp = dict(base.named_parameters())
    checked = 0
    for name, p in wide.named_parameters():
        q = bp[name].detach()
        p = p.detach()
        gain = name.endswith("original0")  # weight norm's g: a row norm per output channel, a vector
        if p.dim() < 2 or gain or p.shape == q.shape or float(q.std()) == 0.0:
            continue
        expected = math.sqrt((q.shape[1] * q[0, 0].numel()) / (p.shape[1] * p[0, 0].numel()))
        ratio = float(p.std()) / float(q.std())
        assert abs(math.log(ratio / expected)) < math.log(1.3), (name, ratio, expected)
        checked += 1
    assert checked > 30


def test_mup_init_is_the_base_init_times_the_role_factor():
    """Empirical stds of a muP net at 4x the base width against the standard net at the base width."""
    torch.manual_seed(0)
    base = dict(build_generator(width_config(BASE, mode="standard")).named_parameters())
    torch.manual_seed(1)
    wide = dict(build_generator(width_config(4 * BASE)).named_parameters())
    expect = {  # name: std factor relative to the standard init at base width
        "enc_p.encoder.ffn_layers.0.conv_2.weight": 0.5,  # hidden: sqrt(1/4)
        "enc_p.encoder.attn_layers.0.conv_k.weight": 0.5,  # hidden
        "enc_p.encoder.attn_layers.0.conv_q.weight": 0.25,  # hidden x sqrt(d_base/d) (1/d logits)
        "dec.conv_pre.weight": 0.25,  # output-like: 1/4
        "enc_p.encoder.attn_layers.0.emb_rel_k": 1.0,  # input-like (a table over offsets)
        "enc_p.bert_proj.weight": 0.5,  # input-like behind the sqrt(hidden) multiplier
        "enc_q.pre.weight": 1.0,  # input-like
    }
    for name, f in expect.items():
        ratio = float(wide[name].detach().std()) / float(base[name].detach().std())
        assert abs(math.log(ratio / f)) < math.log(1.25), (name, ratio, f)


def test_param_groups_carry_the_lr_factors():
    cfg = width_config(64, lr=2e-4)
    state = state_at(cfg)
    groups = state.optim_g.param_groups
    assert groups[0]["lr_mult"] == 1.0 and groups[0]["lr"] == 2e-4  # the logged lr stays the configured one
    table = parametrization.scalings(state.net_g, cfg)
    by_param = {id(p): g for g in groups for p in g["params"]}
    wd = parametrization.adamw_default_weight_decay()
    for name, p in state.net_g.named_parameters():
        g = by_param[id(p)]
        assert g["lr"] == pytest.approx(2e-4 * table[name].lr), name
        assert g["lr"] * g["weight_decay"] == pytest.approx(2e-4 * wd), name  # decay per step as at base
    assert sum(len(g["params"]) for g in groups) == len(list(state.net_g.parameters()))
    assert {g["lr_mult"] for g in groups} >= {1.0, 0.25, 0.125}
    assert len(state.optim_d.param_groups) == 1  # the audio discriminators are not width-scaled
    out = train_step(state, random_batch(cfg, 2))
    assert all(torch.isfinite(v) for v in out.values())


def test_frozen_parameters_stay_out_of_the_groups():
    cfg = width_config(32)
    net = build_generator(cfg)
    net.enc_p.requires_grad_(False)
    groups = parametrization.param_groups(net, cfg)
    ids = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in ids for p in net.enc_p.parameters())
    assert len(ids) == sum(p.requires_grad for p in net.parameters())


# ----------------------------------------------------------------------------------------------------
# bad input


def test_mup_without_or_with_a_bad_base_width_is_refused_when_built(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.model\.mup_base_width: parametrization 'mup' needs"):
        TrialConfig.from_dict({"model": {"parametrization": "mup"}})
    for bad in (0, -16):
        with pytest.raises(ConfigError, match=rf"model\.mup_base_width: must be a positive.*got {bad}"):
            TrialConfig.from_dict({"model": {"parametrization": "mup", "mup_base_width": bad}})
        with pytest.raises(ConfigError, match=r"model\.mup_base_width"):  # refused in standard mode too
            TrialConfig.from_dict({"model": {"mup_base_width": bad}})
    with pytest.raises(ConfigError, match=r"model\.mup_base_width: 15 is not divisible by n_heads 2"):
        TrialConfig.from_dict({"model": {"parametrization": "mup", "mup_base_width": 15}})
    with pytest.raises(ConfigError, match=r"model\.parametrization.*allowed: standard, mup"):
        TrialConfig.from_dict({"model": {"parametrization": "mu-p"}})
    p = tmp_path / "trial.yaml"
    p.write_text("model:\n  parametrization: mup\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{p}\.model\.mup_base_width"):
        load_config(p)
    cfg = TrialConfig.from_dict({"model": {"parametrization": "mup", "mup_base_width": 64}})
    assert cfg.model.mup_base_width == 64
    cfg.model.mup_base_width = None  # set after the build: refused before any net is built
    with pytest.raises(ConfigError, match=r"model\.mup_base_width"):
        build_generator(cfg)


# ----------------------------------------------------------------------------------------------------
# coordinate check

COORD_WIDTHS = (16, 32, 64, 128)
COORD_LR = 3e-3  # large enough that 4 Adam steps, not the init, set the scales at width 128
COORD_STEPS = 4
HIDDEN_OUTPUTS = {  # module outputs whose size muP keeps flat (hidden layers and the first upsample)
    "enc_p.attn0": "enc_p.encoder.attn_layers.0",
    "enc_p.ffn0": "enc_p.encoder.ffn_layers.0",
    "enc_p.attn1": "enc_p.encoder.attn_layers.1",
    "enc_p.ffn1": "enc_p.encoder.ffn_layers.1",
    "enc_p.proj": "enc_p.proj",
    "enc_q.proj": "enc_q.proj",
    "flow.attn0": "flow.flows.0.enc.attn_layers.0",
    "flow.ffn0": "flow.flows.0.enc.ffn_layers.0",
    "dec.ups0": "dec.ups.0",
}
LAYERS = {**HIDDEN_OUTPUTS, "flow.post0": "flow.flows.0.post", "dec.conv_pre": "dec.conv_pre"}


def activation_scales(mode: str) -> dict[str, list[float]]:
    """Mean |output| of each layer in ``LAYERS``, per width, after ``COORD_STEPS`` steps on one batch."""
    out: dict[str, list[float]] = {k: [] for k in LAYERS}
    for width in COORD_WIDTHS:
        cfg = width_config(width, mode=mode, lr=COORD_LR)
        state = state_at(cfg, seed=0)
        batch = random_batch(cfg, 2, seed=0)  # the same batch at every width
        for _ in range(COORD_STEPS):
            train_step(state, batch)
        seen: dict[str, float] = {}
        hooks = [
            state.net_g.get_submodule(path).register_forward_hook(
                lambda _m, _i, o, k=k, seen=seen: seen.__setitem__(k, float(o.abs().mean()))
            )
            for k, path in LAYERS.items()
        ]
        try:
            torch.manual_seed(123)
            with torch.no_grad():
                state.net_g(
                    batch["phones"], batch["phone_lengths"], batch["spec"], batch["spec_lengths"],
                    batch["speakers"], batch["tones"], batch["languages"], batch["bert"], batch["style"],
                )  # fmt: skip
        finally:
            for h in hooks:
                h.remove()
        for k in LAYERS:
            out[k].append(seen[k])
    return out


def test_coordinate_check_mup_flat_standard_grows():
    """Widths 16-128 (base 16), lr 3e-3, 4 steps. Measured (3 seeds): muP max/min across widths <= 1.9
    for every hidden output, standard parametrization's widest/narrowest ratio 5-9x for the text
    encoder's second FFN and 5-7x for the posterior projection; the decoder's input layer under muP
    shrinks as sqrt(base/width) = 0.35 (0.35-0.39), the output-like init muP prescribes."""
    std, mup = activation_scales("standard"), activation_scales("mup")
    for k in HIDDEN_OUTPUTS:
        spread = max(mup[k]) / min(mup[k])
        assert spread < 2.5, (k, mup[k])
    growth = {k: std[k][-1] / std[k][0] for k in HIDDEN_OUTPUTS}
    assert growth["enc_p.ffn1"] > 3.0, std["enc_p.ffn1"]
    assert max(growth.values()) > 4.0, growth
    assert max(mup["flow.post0"]) / min(mup["flow.post0"]) < 4.0, mup["flow.post0"]
    conv_pre = mup["dec.conv_pre"][-1] / mup["dec.conv_pre"][0]
    assert 0.2 < conv_pre < 0.6, mup["dec.conv_pre"]
