"""Width-aware parametrization of the nets: ``model.parametrization: standard | mup``.

``standard`` is the code as it always was: every parameter at its module's own initialisation and one
learning rate per optimizer. ``mup`` is the Maximal Update Parametrization for Adam (Yang et al. 2022,
"Tensor Programs V"), relative to a base model: the same config with ``hidden_channels`` =
``model.mup_base_width`` (``inter_channels`` and ``filter_channels`` scaled in proportion, as the sweep's
``width`` axis and ``filter_ratio`` move them). At the base width both parametrizations are the same model
with the same optimizer; away from it muP rescales init and Adam learning rate per tensor so that every
activation, and every activation's change per step, keeps its size as width grows, which is what lets a
learning rate tuned at one width hold at the others. docs/mup.md has the table and the reasons.

The rules, per tensor, from its shape in the trial's net against the same-named tensor in the base net
(``fan_in_mult`` = fan-in / base fan-in; a tensor whose shape does not change is left alone):

- hidden (fan-in and fan-out both grow): Adam lr x 1/fan_in_mult; init std x sqrt(1/fan_in_mult) relative
  to the standard init at base width (which the standard fan-in inits already give: factor 1 here);
- output-like (fan-in grows, fan-out fixed): lr x 1/fan_in_mult; init std x 1/fan_in_mult relative to base;
- input-like (fan-in fixed, fan-out grows), biases, norm gains, weight-norm gains: lr and init as at base;
- forward multipliers the code already has are corrected, not removed: the text encoder scales its summed
  input embeddings by sqrt(hidden), so ``emb``/``tone_emb``/``language_emb`` (lr) and ``bert_proj``/
  ``style_proj`` (init and lr) get x sqrt(base/hidden); attention divides the logits by sqrt(d), and muP
  divides by d, so every ``conv_q`` gets init and lr x sqrt(d_base / d) on top of the hidden rule (for Adam a
  constant multiplier c on a weight is the same as init x c and lr x c, so the forward code is unchanged);
- weight-normalised layers (forward invariant to the scale of ``v``): the gain ``g`` carries the init
  factor of the effective weight and ``v`` the learning rate that gives the effective weight its update;
- AdamW's decoupled weight decay is applied as lr x weight_decay per step, so a group whose lr is scaled by
  c gets weight_decay / c (the decay per step stays what it is at base width, as the ``mup`` package does).

Relative init assumes today's init of every tensor whose shape changes with width has std proportional to
its fan-in (torch convention: ``shape[1] * prod(shape[2:])``) to the power -1/2, or is zero; that is true of
every such tensor here (torch's default conv/linear init, xavier on the square q/k/v, the text embeddings'
N(0, hidden^-1/2), the relative-position tables' N(0, d^-1/2), the zero-initialised coupling outputs) and
``tests/test_model_mup.py`` checks it on the built nets.

Neither the decoder's own width (``upsample_initial_channel``) nor the discriminators' (``disc_width``) is
part of the muP width: they keep the standard parametrization; only their layers that read a width-scaled
input (the decoder's ``conv_pre`` from ``inter_channels``, the duration discriminator's first conv from
``hidden_channels``) are output-like. Why: docs/mup.md.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass

import torch
from torch import nn

from model.attentions import MultiHeadAttention
from model.config import TrialConfig
from model.generator import SynthesizerTrn, TextEncoder

ROLES = ("hidden", "output", "input", "vector", "fixed")
TEXT_INPUT_WEIGHTS = ("emb", "tone_emb", "language_emb")  # embeddings scaled by sqrt(hidden) in forward
TEXT_INPUT_PROJECTIONS = ("bert_proj", "style_proj")  # projections summed into the same scaled input
WEIGHT_NORM_PARTS = {"original0": "gain", "original1": "direction"}  # torch weight_norm's (g, v)
CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)  # weight (in, out/groups, k)
LINEAR_OR_CONV = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # weight (out, in/groups, k)


@dataclass(frozen=True)
class Scaling:
    """What muP does to one parameter: its role, its fan-in multiplier and the factors on init and lr."""

    role: str  # one of ROLES ("fixed": no dimension changes with width)
    fan_in_mult: float  # fan-in / base fan-in (1.0 for vectors and fixed tensors)
    init: float  # factor applied to the standard initialisation
    lr: float  # factor on the optimizer's learning rate


def adamw_default_weight_decay() -> float:
    """torch.optim.AdamW's default ``weight_decay`` (what ``model.step`` uses: it passes none)."""
    return float(inspect.signature(torch.optim.AdamW).parameters["weight_decay"].default)


def is_mup(cfg: TrialConfig) -> bool:
    """Whether ``cfg`` asks for muP; refuses a muP config without a valid base width (``ConfigError``)."""
    cfg.model.validate("model")
    return cfg.model.parametrization == "mup"


def at_width(cfg: TrialConfig, width: int) -> TrialConfig:
    """A copy of ``cfg`` with ``hidden_channels`` = ``width`` and ``inter_channels`` and ``filter_channels``
    scaled by the same ratio (inter kept even, as the flows split it in halves): the dimensions muP calls
    width. Everything else, the decoder's and the discriminators' widths included, is unchanged."""
    m = cfg.model
    r = width / m.hidden_channels
    out = copy.deepcopy(cfg)
    out.model.hidden_channels = width
    out.model.inter_channels = max(2, 2 * round(m.inter_channels * r / 2))
    out.model.filter_channels = max(1, round(m.filter_channels * r))
    return out


def base_config(cfg: TrialConfig) -> TrialConfig:
    """The base model's config: ``cfg`` at width ``model.mup_base_width`` (``at_width``)."""
    return at_width(cfg, cfg.model.mup_base_width)


def build_like(net: nn.Module, cfg: TrialConfig) -> nn.Module:
    """A net of ``net``'s class built from ``cfg`` (the generator or any discriminator with ``from_config``)."""
    if isinstance(net, SynthesizerTrn):
        return SynthesizerTrn.from_config(cfg.model, cfg.data, segment_size=cfg.train.segment_size)
    from_config = getattr(type(net), "from_config", None)
    if from_config is None:
        raise TypeError(f"muP: no from_config on {type(net).__name__}, so its base model cannot be built")
    return from_config(cfg.model)


# ----------------------------------------------------------------------------------------------------
# classification


def _fans(owner: nn.Module, attr: str, shape: torch.Size) -> tuple[int, int] | None:
    """(fan-in, fan-out) of a weight-like tensor of ``owner`` (None: a vector or an unknown kind)."""
    if len(shape) < 2:
        return None
    if isinstance(owner, MultiHeadAttention) and attr in ("emb_rel_k", "emb_rel_v"):
        return shape[1], shape[2]  # (heads, offsets, d): a table of d-vectors indexed by offset
    if isinstance(owner, nn.Embedding):
        return shape[0], shape[1]
    if isinstance(owner, CONV_TRANSPOSE):
        return shape[0], shape[1] * math.prod(shape[2:])
    if isinstance(owner, LINEAR_OR_CONV):
        return shape[1] * math.prod(shape[2:]), shape[0]
    return None


def _torch_fan_in(shape: torch.Size) -> int:
    """The fan-in torch's init functions use (dim 1 times the receptive field), which sets today's std."""
    return shape[1] * math.prod(shape[2:])


def _owner(net: nn.Module, name: str) -> tuple[nn.Module, str, str | None]:
    """(module holding the parameter, its attribute, weight-norm part or None) for a parameter name."""
    if ".parametrizations." in name:
        path, rest = name.split(".parametrizations.", 1)
        attr, original = rest.split(".")
        part = WEIGHT_NORM_PARTS.get(original) if original != "original" else "spectral"
        return net.get_submodule(path), attr, part
    path, _, attr = name.rpartition(".")
    return (net.get_submodule(path) if path else net), attr, None


def _multipliers(net: nn.Module, base: nn.Module) -> dict[str, float]:
    """Extra factor (on both init and lr) for parameters behind a width-dependent forward multiplier."""
    out: dict[str, float] = {}
    for path, mod in net.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(mod, TextEncoder):
            c = math.sqrt(base.get_submodule(path).hidden_channels / mod.hidden_channels)
            for child in TEXT_INPUT_WEIGHTS:
                out[f"{prefix}{child}.weight"] = c
            for child in TEXT_INPUT_PROJECTIONS:
                if hasattr(mod, child):
                    out[f"{prefix}{child}.weight"] = out[f"{prefix}{child}.bias"] = c
        elif isinstance(mod, MultiHeadAttention):
            c = math.sqrt(base.get_submodule(path).k_channels / mod.k_channels)  # 1/d logits, not 1/sqrt(d)
            out[f"{prefix}conv_q.weight"] = out[f"{prefix}conv_q.bias"] = c
    return out


def scalings(net: nn.Module, cfg: TrialConfig) -> dict[str, Scaling]:
    """The muP scaling of every parameter of ``net`` (built from ``cfg``), by parameter name.

    Raises ``ValueError`` naming a parameter whose shape changes with width but whose kind this module
    does not know (a new layer type must be classified here before muP can train it).
    """
    with torch.device("meta"):
        base = build_like(net, base_config(cfg))
    base_params = dict(base.named_parameters())
    mults = _multipliers(net, base)
    out: dict[str, Scaling] = {}
    for name, p in net.named_parameters():
        if name not in base_params:
            raise ValueError(f"muP: parameter {name} has no counterpart in the base-width model")
        owner, attr, part = _owner(net, name)
        c = mults.get(name, 1.0)
        if part == "gain":  # weight norm's g: set by the direction tensor's role below
            v_name = name[: -len("original0")] + "original1"
            out[name] = _gain_scaling(net, v_name, base_params[v_name].shape, owner, attr)
            continue
        shape, base_shape = p.shape, base_params[name].shape
        fans, base_fans = _fans(owner, attr, shape), _fans(owner, attr, base_shape)
        if shape == base_shape:
            out[name] = Scaling("fixed" if fans else "vector", 1.0, c, c)
            continue
        if fans is None:
            if len(shape) >= 2:
                raise ValueError(
                    f"muP: parameter {name} ({type(owner).__name__}.{attr}, {tuple(shape)}) changes shape "
                    "with width but its fan-in is unknown; classify it in model/parametrization.py"
                )
            out[name] = Scaling("vector", 1.0, c, c)
            continue
        if part == "spectral":
            raise ValueError(f"muP: spectral-normalised {name} changes shape with width; not handled")
        fi_mult = fans[0] / base_fans[0]
        role = _role(fans, base_fans)
        sp = math.sqrt(_torch_fan_in(base_shape) / _torch_fan_in(shape))  # today's std, relative to base
        target = {"hidden": math.sqrt(1 / fi_mult), "output": 1 / fi_mult}.get(role, 1.0)
        lr = 1 / fi_mult if role in ("hidden", "output") else 1.0
        if part == "direction":  # the gain carries the init; v's lr gives W = g v/|v| its update
            out[name] = Scaling(role, fi_mult, 1.0, lr / (target / sp))
        else:
            out[name] = Scaling(role, fi_mult, target / sp * c, lr * c)
    return out


def _role(fans: tuple[int, int], base_fans: tuple[int, int]) -> str:
    grows_in, grows_out = fans[0] != base_fans[0], fans[1] != base_fans[1]
    if grows_in:
        return "hidden" if grows_out else "output"
    return "input" if grows_out else "fixed"


def _gain_scaling(net: nn.Module, v_name: str, v_base_shape, owner: nn.Module, attr: str) -> Scaling:
    """Weight norm's gain g: the init factor of the effective weight (1 unless output-like), same on lr."""
    v_shape = net.get_parameter(v_name).shape
    fans, base_fans = _fans(owner, attr, v_shape), _fans(owner, attr, v_base_shape)
    if fans is None or v_shape == v_base_shape:
        return Scaling("vector", 1.0, 1.0, 1.0)
    fi_mult = fans[0] / base_fans[0]
    if _role(fans, base_fans) != "output":
        return Scaling("vector", fi_mult, 1.0, 1.0)
    f = (1 / fi_mult) / math.sqrt(_torch_fan_in(v_base_shape) / _torch_fan_in(v_shape))
    return Scaling("output", fi_mult, f, f)


# ----------------------------------------------------------------------------------------------------
# the two hooks model.step calls


def apply_init(net: nn.Module, cfg: TrialConfig) -> nn.Module:
    """Rescale ``net``'s freshly initialised parameters in place for muP (no-op for ``standard``, and for
    every tensor whose factor is exactly 1, e.g. all of them at the base width); returns ``net``.

    Multiplies only: draws no random numbers, so the training RNG stream is the same in both modes."""
    if not is_mup(cfg):
        return net
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, s in scalings(net, cfg).items():
            if s.init != 1.0:
                params[name].mul_(s.init)
    return net


def param_groups(net: nn.Module, cfg: TrialConfig, defaults: dict | None = None) -> list[dict]:
    """AdamW parameter groups for ``net``'s trainable parameters.

    ``standard``: one group of every trainable parameter in ``net.parameters()`` order, no keys of its own
    (the optimizer's defaults apply: exactly what passing the parameter list did). ``mup``: one group per
    distinct lr factor, with ``lr`` = base lr x factor, ``weight_decay`` = base decay / factor and the factor
    as ``lr_mult``; the group of factor 1 (biases, norms, fixed layers) comes first, so
    ``param_groups[0]["lr"]`` is still the configured lr. ``defaults``: the optimizer's keyword arguments
    (``lr``, and ``weight_decay`` if given; else ``train.learning_rate`` and torch's AdamW default).
    Schedulers that scale each group's own lr keep the factors.
    """
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not is_mup(cfg):
        return [{"params": [p for _, p in trainable]}] if trainable else []  # [] is refused as before
    defaults = defaults or {}
    lr = float(defaults.get("lr", cfg.train.learning_rate))
    wd = float(defaults.get("weight_decay", adamw_default_weight_decay()))
    table = scalings(net, cfg)
    groups: dict[float, list[nn.Parameter]] = {1.0: []}
    for name, p in trainable:
        groups.setdefault(table[name].lr, []).append(p)
    return [
        {"params": ps, "lr": lr * mult, "weight_decay": wd / mult, "lr_mult": mult}
        for mult, ps in groups.items()
        if ps
    ]
