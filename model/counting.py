"""Parameter counts per submodule and FLOPs per training step.

Parameters
    ``count_parameters(module)`` counts every parameter (trainable or not) of the module and of each direct
    child. For the generator the children are ``enc_p``, ``enc_q``, ``flow``, ``dec``, ``sdp``, ``dp``,
    ``emb_g``; for the discriminators ``mpd`` (the multi-period discriminator with the scale discriminator
    inside, 46,747,132 at width 1.0), ``dur_disc`` and ``wavlm_disc`` when enabled. The frozen WavLM the
    WavLM discriminator reads is not counted (it is not trained).

FLOPs per training step
    One call of ``model.step.train_step`` run under ``torch.utils.flop_counter.FlopCounterMode`` on the
    ``meta`` device (shapes only, no arithmetic, so a full-size model costs about a second to count):

    - generator forward, the discriminator step (forward + backward of the MPD on real and generated
      segments, plus the duration / WavLM discriminators when enabled, including the frozen WavLM's
      forward) and the generator step (discriminator forward on real and generated segments, backward to
      the generator, generator backward);
    - what ``FlopCounterMode`` counts: matrix multiplies and convolutions (``mm``, ``addmm``, ``bmm``,
      ``baddbmm``, ``convolution`` and their backward, attention kernels), 2 FLOPs per multiply-accumulate;
      elementwise ops, normalisation, activations, FFTs (the mel loss's STFT), optimizer updates and the
      monotonic alignment search (a dynamic programme without multiplies) count 0. MAS is replaced by an
      all-zero path while counting: the matmuls that build its score matrix are still counted. LSTMs
      (duration discriminator) are counted as their input and recurrent projections (4 gates), batched
      over time.

    The step's shapes: ``batch_size`` utterances, each ``utterance_s`` seconds long (default 4 s: frames =
    ceil(4 s * sampling_rate / hop), never fewer than one segment) with ``round(utterance_s *
    PHONES_PER_SECOND)`` phones (blank-interleaved to 2n + 1 tokens when ``data.add_blank``), and a decoder /
    discriminator segment of ``segment_size`` samples. Defaults come from ``train.batch_size`` and
    ``train.segment_size``. FLOPs scale linearly in batch size; encoder and flow terms scale with the
    utterance length, decoder and discriminator terms with the segment size.

Results are cached in memory per (config hash, batch, segment, frames, phones).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import model.mas as mas
import model.step as model_step  # attributes looked up at call time: tests replace train_step
from model.config import TrialConfig
from model.discriminators import WavLMFeatures
from model.text.features import bert_input_dim

DEFAULT_UTTERANCE_S = 4.0
PHONES_PER_SECOND = 14.0  # Japanese read speech: about 7-8 morae, 14 phones per second
GENERATOR_PARTS = ("enc_p", "enc_q", "flow", "dec", "sdp", "dp", "emb_g")
DISC_NAMES = {"net_d": "mpd", "net_dur_disc": "dur_disc", "net_wd": "wavlm_disc"}
DATA_KEYS = (
    "sampling_rate",
    "filter_length",
    "hop_length",
    "win_length",
    "n_mel_channels",
    "mel_fmin",
    "mel_fmax",
    "add_blank",
    "n_speakers",
)

_CACHE: dict[tuple, Any] = {}


# ----------------------------------------------------------------------------------------------------
# parameters


def count_parameters(module: nn.Module) -> dict[str, int]:
    """``{"total": N, <child>: N, ...}`` over the module's direct children (parameters of the module
    itself, outside any child, are in the total only)."""
    out = {"total": sum(p.numel() for p in module.parameters())}
    for name, child in module.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n:
            out[name] = n
    return out


def config_hash(cfg: TrialConfig) -> str:
    """Hash of everything that changes the nets' shapes (the model section and the feature settings)."""
    d = {"model": dataclasses.asdict(cfg.model), "data": {k: getattr(cfg.data, k) for k in DATA_KEYS}}
    d["model"]["bert_dim"] = bert_input_dim(cfg.model, cfg.data)  # the width the nets are built with
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _meta_nets(cfg: TrialConfig) -> dict[str, nn.Module]:
    with torch.device("meta"):
        nets = {"net_g": model_step.build_generator(cfg)}
        nets.update(model_step.build_discriminators(cfg))
    return nets


def parameter_counts(cfg: TrialConfig) -> dict[str, dict[str, int]]:
    """``{"generator": {...}, "discriminator": {"total": N, "mpd": N, ...}}`` (built on ``meta``: no memory)."""
    key = ("params", config_hash(cfg))
    if key not in _CACHE:
        nets = _meta_nets(cfg)
        gen = count_parameters(nets.pop("net_g"))
        parts = {"total": gen["total"]}
        parts.update({k: gen.get(k, 0) for k in GENERATOR_PARTS})
        parts.update({k: v for k, v in gen.items() if k not in parts})
        disc = {DISC_NAMES[k]: count_parameters(v)["total"] for k, v in nets.items()}
        _CACHE[key] = {"generator": parts, "discriminator": {"total": sum(disc.values()), **disc}}
    return json.loads(json.dumps(_CACHE[key]))


# ----------------------------------------------------------------------------------------------------
# FLOPs


@dataclass(frozen=True)
class StepShape:
    batch_size: int
    segment_size: int  # samples
    frames: int  # spectrogram frames per utterance
    phones: int  # tokens per utterance (after blank interleaving)


def step_shape(
    cfg: TrialConfig,
    batch_size: int | None = None,
    segment_size: int | None = None,
    utterance_s: float = DEFAULT_UTTERANCE_S,
    phones: int | None = None,
) -> StepShape:
    d, t = cfg.data, cfg.train
    b = int(t.batch_size if batch_size is None else batch_size)  # 0 is refused below, never replaced
    seg = int(t.segment_size if segment_size is None else segment_size)
    if b <= 0:
        raise ValueError(f"batch_size must be positive, got {b}")
    if seg <= 0 or seg % d.hop_length:
        raise ValueError(f"segment_size must be a positive multiple of hop_length {d.hop_length}, got {seg}")
    frames = max(math.ceil(utterance_s * d.sampling_rate / d.hop_length), seg // d.hop_length)
    if phones is None:
        n = max(1, round(utterance_s * PHONES_PER_SECOND))
        phones = 2 * n + 1 if d.add_blank else n
    return StepShape(b, seg, frames, int(phones))


def meta_batch(cfg: TrialConfig, shape: StepShape, device: str | torch.device = "meta") -> dict[str, Any]:
    """A batch of the contract's shapes (values meaningless on ``meta``)."""
    d, m = cfg.data, cfg.model
    b, t, f = shape.batch_size, shape.phones, shape.frames
    kw = {"device": device}
    return {
        "phones": torch.zeros(b, t, dtype=torch.long, **kw),
        "tones": torch.zeros(b, t, dtype=torch.long, **kw),
        "languages": torch.zeros(b, t, dtype=torch.long, **kw),
        "phone_lengths": torch.full((b,), t, dtype=torch.long, **kw),
        "bert": torch.zeros(b, bert_input_dim(cfg.model, cfg.data), t, **kw),
        "style": torch.zeros(b, m.style_dim, **kw),
        "spec": torch.zeros(
            b, d.n_mel_channels if m.use_mel_posterior_encoder else d.filter_length // 2 + 1, f, **kw
        ),
        "spec_lengths": torch.full((b,), f, dtype=torch.long, **kw),
        "wav": torch.zeros(b, 1, f * d.hop_length, **kw),
        "wav_lengths": torch.full((b,), f * d.hop_length, dtype=torch.long, **kw),
        "speakers": torch.zeros(b, dtype=torch.long, **kw),
        "ids": [f"meta{i}" for i in range(b)],
    }


@contextlib.contextmanager
def _zero_alignment(net_g: nn.Module):
    """While counting on ``meta``, alignment returns an all-zero path (MAS is a data-dependent DP with
    numba / python loops that cannot run on ``meta``). The two matmuls that build MAS's score matrix
    (frames x tokens x channels each) still run, so their FLOPs are counted."""

    def zero_align(z_p, m_p, logs_p, x_mask, y_mask):
        with torch.no_grad():
            s_p_sq_r = torch.exp(-2 * logs_p.float())
            z = z_p.float().transpose(1, 2)
            score = torch.matmul(-0.5 * z**2, s_p_sq_r) + torch.matmul(z, m_p.float() * s_p_sq_r)
            return torch.zeros_like(score).unsqueeze(1)  # (B, 1, T_y, T_x)

    def zero_path(value, mask, *args, **kwargs):
        return torch.zeros_like(value)

    had_align = "_align" in vars(type(net_g))
    saved_path = mas.maximum_path
    if had_align:
        net_g._align = zero_align  # instance attribute shadows the method
    mas.maximum_path = zero_path
    try:
        yield
    finally:
        if had_align:
            del net_g._align
        mas.maximum_path = saved_path


@contextlib.contextmanager
def _lstm_as_matmuls(nets: list[nn.Module]):
    """While counting, each LSTM runs as the same matmuls batched over time (input and recurrent
    projections per layer and direction): equal matmul FLOPs forward and backward, but a handful of ops
    instead of a python-level loop over time steps, which is slow on ``meta``."""

    def forward(self, x, hx=None):
        if not self.batch_first:
            x = x.transpose(0, 1)
        h_size = self.hidden_size
        for layer in range(self.num_layers):
            outs = []
            for d in range(2 if self.bidirectional else 1):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                gates = x @ getattr(self, "weight_ih" + sfx).T
                prev = gates[..., :h_size]  # a stand-in for the previous hidden states, in the graph
                gates = gates + prev @ getattr(self, "weight_hh" + sfx).T
                outs.append(torch.tanh(gates[..., :h_size]))
            x = torch.cat(outs, -1)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return x, (None, None)

    lstms = [m for net in nets for m in net.modules() if isinstance(m, nn.LSTM)]
    for m in lstms:
        m.forward = forward.__get__(m)
    try:
        yield
    finally:
        for m in lstms:
            del m.forward


def _meta_wavlm(cfg: TrialConfig):
    """A WavLM of the configured size on ``meta`` (counting needs shapes, not pretrained weights)."""
    from transformers import (  # heavy, and only for a config with the WavLM discriminator
        WavLMConfig,
        WavLMModel,
    )

    slm = cfg.model.slm
    try:  # the configured model's own architecture when it is on disk (never downloads)
        wcfg = WavLMConfig.from_pretrained(str(slm.get("model", "")), local_files_only=True)
    except (OSError, ValueError):  # otherwise WavLM-base(-plus) shapes at the configured width / depth
        wcfg = WavLMConfig(
            hidden_size=int(slm.get("hidden", 768)), num_hidden_layers=int(slm.get("nlayers", 13)) - 1
        )
    feats = WavLMFeatures.__new__(WavLMFeatures)
    nn.Module.__init__(feats)
    feats.wavlm = WavLMModel(wcfg).eval().requires_grad_(False)
    sr, slm_sr = cfg.data.sampling_rate, int(slm.get("sr", 16000))
    if sr != slm_sr:
        import torchaudio

        with torch.device("cpu"):
            feats.resample = torchaudio.transforms.Resample(sr, slm_sr).to("meta")
    else:
        feats.resample = nn.Identity()
    feats.hidden, feats.nlayers = wcfg.hidden_size, wcfg.num_hidden_layers + 1
    return feats


def _source_digest() -> str:
    """Hash of the code whose FLOPs are counted: a disk-cached count is only reused for the same code."""
    h = hashlib.sha1()
    root = Path(__file__).resolve().parent
    for name in sorted(p.name for p in root.glob("*.py")):
        h.update(name.encode() + (root / name).read_bytes())
    return h.hexdigest()[:12]


def _disk_lookup(disk_cache: str | Path | None, key: str) -> int | None:
    if disk_cache is None:
        return None
    f = Path(disk_cache) / "flops" / f"{key}.json"
    try:
        return int(json.loads(f.read_text())["flops"])
    except (OSError, ValueError, KeyError):
        return None


def _disk_store(disk_cache: str | Path | None, key: str, flops: int) -> None:
    if disk_cache is None:
        return
    d = Path(disk_cache) / "flops"
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"flops": flops}))
        os.replace(tmp, d / f"{key}.json")  # atomic: concurrent trials never read half a file
    except OSError:
        pass  # the cache is an optimisation; counting again is always correct


def step_flops(cfg: TrialConfig, shape: StepShape, *, disk_cache: str | Path | None = None) -> int:
    """FLOPs of one ``train_step`` at ``shape`` (see the module docstring for what is counted).

    Cached in memory, and under ``disk_cache/flops/`` when given (keyed by config, shape and the hash of
    this package's source), so the trials of a sweep, each in its own process, count each size once."""
    key = ("flops", config_hash(cfg), shape)
    if key in _CACHE:
        return _CACHE[key]
    disk_key = hashlib.sha1(repr((key, _source_digest())).encode()).hexdigest()[:20]
    cached = _disk_lookup(disk_cache, disk_key)
    if cached is not None:
        _CACHE[key] = cached
        return cached
    cfg = TrialConfig.from_dict(cfg.to_dict())
    cfg.train.batch_size, cfg.train.segment_size = shape.batch_size, shape.segment_size
    with torch.device("meta"):
        net_g = model_step.build_generator(cfg)
        wavlm = (
            _meta_wavlm(cfg)
            if (cfg.model.use_wavlm_discriminator and cfg.model.wavlm_discriminator)
            else None
        )
        state = model_step.build_train_state(cfg, "meta", net_g=net_g, wavlm=wavlm)
    batch = meta_batch(cfg, shape)
    nets = list(state.nets().values())
    with _zero_alignment(state.net_g), _lstm_as_matmuls(nets), FlopCounterMode(display=False) as counter:
        model_step.train_step(state, batch, update=False)
    flops = int(counter.get_total_flops())
    _CACHE[key] = flops
    _disk_store(disk_cache, disk_key, flops)
    return flops


def flops_per_step(
    cfg: TrialConfig,
    batch_size: int | None = None,
    segment_size: int | None = None,
    *,
    utterance_s: float = DEFAULT_UTTERANCE_S,
    phones: int | None = None,
    disk_cache: str | Path | None = None,
) -> int:
    """FLOPs of one training step (generator + discriminators, forward + backward) for this config.

    The trainer divides a FLOPs budget by this to get a step count.
    """
    shape = step_shape(cfg, batch_size, segment_size, utterance_s, phones)
    return step_flops(cfg, shape, disk_cache=disk_cache)


def model_info(
    cfg: TrialConfig,
    batch_size: int | None = None,
    segment_size: int | None = None,
    *,
    utterance_s: float = DEFAULT_UTTERANCE_S,
) -> dict[str, Any]:
    """``{"generator": {...}, "discriminator": {...}, "flops_per_step": F, "batch_size": B, "segment_size": S}``."""
    shape = step_shape(cfg, batch_size, segment_size, utterance_s)
    info: dict[str, Any] = parameter_counts(cfg)
    info["flops_per_step"] = step_flops(cfg, shape)
    info["batch_size"] = shape.batch_size
    info["segment_size"] = shape.segment_size
    return info


def clear_cache() -> None:
    _CACHE.clear()
