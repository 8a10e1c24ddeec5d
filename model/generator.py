"""The VITS generator in the Style-Bert-VITS2 JP-Extra arrangement (``SynthesizerTrn``).

Training path (``forward``): text encoder -> prior N(m_p, logs_p) per token; posterior encoder on the
linear spectrogram -> z; flow z -> z_p; monotonic alignment search of z_p against the prior gives token
durations; duration predictors (stochastic + deterministic) learn them; a random window of z goes through
the HiFi-GAN decoder. Inference (``infer``): predicted durations expand the prior, sample z_p, invert the
flow, decode.

Submodule names follow VITS (``enc_p``, ``enc_q``, ``flow``, ``dec``, ``sdp``, ``dp``, ``emb_g``) and
the layer names inside follow the public layout, so public checkpoints map by name (weight-norm
parameters aside: see ``model.modules``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

from model import attentions, commons, modules
from model.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from model.mas import maximum_path

# ----------------------------------------------------------------------------------------------------
# encoders


class TextEncoder(nn.Module):
    """Phones + tones + language (+ BERT features, + style vector) -> transformer -> prior mean/log-std."""

    def __init__(
        self,
        n_vocab: int,
        num_tones: int,
        num_languages: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float,
        gin_channels: int = 0,
        bert_dim: int = 1024,
        style_dim: int = 256,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.bert_dim = bert_dim
        self.style_dim = style_dim
        self.emb = nn.Embedding(n_vocab, hidden_channels)
        self.tone_emb = nn.Embedding(num_tones, hidden_channels)
        self.language_emb = nn.Embedding(num_languages, hidden_channels)
        for e in (self.emb, self.tone_emb, self.language_emb):
            nn.init.normal_(e.weight, 0.0, hidden_channels**-0.5)
        if bert_dim:
            self.bert_proj = nn.Conv1d(bert_dim, hidden_channels, 1)
        if style_dim:
            self.style_proj = nn.Linear(style_dim, hidden_channels)
        self.encoder = attentions.Encoder(
            hidden_channels,
            filter_channels,
            n_heads,
            n_layers,
            kernel_size,
            p_dropout,
            gin_channels=gin_channels,
        )
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self,
        x: Tensor,
        x_lengths: Tensor,
        tone: Tensor,
        language: Tensor,
        bert: Tensor | None = None,
        style: Tensor | None = None,
        g: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> hidden (B, H, T), m_p, logs_p (B, inter, T), x_mask (B, 1, T)."""
        h = self.emb(x) + self.tone_emb(tone) + self.language_emb(language)  # (B, T, H)
        if self.bert_dim:
            if bert is None or bert.shape[1] != self.bert_dim or bert.shape[2] != x.shape[1]:
                got = None if bert is None else tuple(bert.shape)
                raise ValueError(f"bert must be (B, {self.bert_dim}, T={x.shape[1]}), got {got}")
            h = h + self.bert_proj(bert).transpose(1, 2)
        if self.style_dim:
            if style is None or style.shape[-1] != self.style_dim:
                got = None if style is None else tuple(style.shape)
                raise ValueError(f"style must be (B, {self.style_dim}), got {got}")
            h = h + self.style_proj(style).unsqueeze(1)
        h = (h * math.sqrt(self.hidden_channels)).transpose(1, 2)
        x_mask = commons.sequence_mask(x_lengths, h.shape[2]).unsqueeze(1).to(h.dtype)
        h = self.encoder(h * x_mask, x_mask, g=g)
        stats = self.proj(h) * x_mask
        m, logs = stats.split(self.out_channels, dim=1)
        return h, m, logs, x_mask


class PosteriorEncoder(nn.Module):
    """Linear spectrogram -> WaveNet -> q(z | spec) (mean, log-std) and a sample z."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = modules.WN(
            hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels
        )
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, x: Tensor, x_lengths: Tensor, g: Tensor | None = None):
        x_mask = commons.sequence_mask(x_lengths, x.shape[2]).unsqueeze(1).to(x.dtype)
        x = self.enc(self.pre(x) * x_mask, x_mask, g=g)
        stats = self.proj(x) * x_mask
        m, logs = stats.split(self.out_channels, dim=1)
        z = (m + torch.randn_like(m) * torch.exp(logs)) * x_mask
        return z, m, logs, x_mask


# ----------------------------------------------------------------------------------------------------
# flows


class TransformerCouplingLayer(nn.Module):
    """Mean-only affine coupling whose shift comes from a (speaker-conditioned) transformer encoder."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        n_layers: int,
        n_heads: int,
        p_dropout: float = 0.0,
        filter_channels: int = 0,
        mean_only: bool = False,
        shared_encoder: attentions.Encoder | None = None,
        gin_channels: int = 0,
    ):
        if channels % 2:
            raise ValueError(f"flow channels must be even, got {channels}")
        super().__init__()
        self.half_channels = channels // 2
        self.mean_only = mean_only
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = shared_encoder or attentions.Encoder(
            hidden_channels,
            filter_channels,
            n_heads,
            n_layers,
            kernel_size,
            p_dropout,
            gin_channels=gin_channels,
            isflow=True,
        )
        self.post = nn.Conv1d(hidden_channels, self.half_channels * (2 - mean_only), 1)
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None, reverse: bool = False):
        h = self.enc(self.pre(x[:, : self.half_channels]) * x_mask, x_mask, g=g)
        return modules.affine_coupling(self, x, x_mask, h, reverse)


class _FlowBlock(nn.Module):
    """Runs ``self.flows`` forward (z -> z_p) or in reverse; checkpoints each layer when asked."""

    gradient_checkpointing = False

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None, reverse: bool = False) -> Tensor:
        if reverse:
            for flow in reversed(self.flows):
                x = flow(x, x_mask, g=g, reverse=True)
            return x
        ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for flow in self.flows:
            if ckpt and not isinstance(flow, modules.Flip):
                x, _ = checkpoint(flow, x, x_mask, g, use_reentrant=False)
            else:
                x, _ = flow(x, x_mask, g=g)
        return x


class TransformerCouplingBlock(_FlowBlock):
    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float,
        n_flows: int = 4,
        gin_channels: int = 0,
        share_parameter: bool = False,
    ):
        super().__init__()
        self.wn = (
            attentions.Encoder(
                hidden_channels,
                filter_channels,
                n_heads,
                n_layers,
                kernel_size,
                p_dropout,
                gin_channels=gin_channels,
                isflow=True,
            )
            if share_parameter
            else None
        )
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                TransformerCouplingLayer(
                    channels,
                    hidden_channels,
                    kernel_size,
                    n_layers,
                    n_heads,
                    p_dropout,
                    filter_channels,
                    mean_only=True,
                    shared_encoder=self.wn,
                    gin_channels=gin_channels,
                )
            )
            self.flows.append(modules.Flip())


class ResidualCouplingBlock(_FlowBlock):
    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        n_flows: int = 4,
        gin_channels: int = 0,
    ):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                modules.ResidualCouplingLayer(
                    channels,
                    hidden_channels,
                    kernel_size,
                    dilation_rate,
                    n_layers,
                    gin_channels=gin_channels,
                    mean_only=True,
                )
            )
            self.flows.append(modules.Flip())


# ----------------------------------------------------------------------------------------------------
# decoder


class Generator(nn.Module):
    """HiFi-GAN: transposed-conv upsampling by prod(upsample_rates), multi-receptive-field resblocks."""

    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes: list[int],
        resblock_dilation_sizes: list[list[int]],
        upsample_rates: list[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: list[int],
        gin_channels: int = 0,
    ):
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        block = modules.ResBlock1 if str(resblock) == "1" else modules.ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            c_in, ch = upsample_initial_channel // 2**i, upsample_initial_channel // 2 ** (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_in, ch, k, u, padding=(k - u) // 2)))
            for rk, rd in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(ch, rk, tuple(rd)))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        self.ups.apply(commons.init_weights)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def forward(self, x: Tensor, g: Tensor | None = None) -> Tensor:
        x = self.conv_pre(x)
        if g is not None and hasattr(self, "cond"):
            x = x + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, modules.LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(rb(x) for rb in blocks) / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)

    def remove_weight_norm(self) -> None:
        modules.remove_weight_norm(self)


# ----------------------------------------------------------------------------------------------------
# duration predictors


class StochasticDurationPredictor(nn.Module):
    """Flow-based duration model (VITS): variational dequantisation + spline flows, NLL in training."""

    def __init__(
        self,
        in_channels: int,
        filter_channels: int,
        kernel_size: int,
        p_dropout: float,
        n_flows: int = 4,
        gin_channels: int = 0,
    ):
        super().__init__()
        fc = filter_channels
        self.log_flow = modules.Log()
        self.flows = nn.ModuleList([modules.ElementwiseAffine(2)])
        for _ in range(n_flows):
            self.flows.append(modules.ConvFlow(2, fc, kernel_size, n_layers=3))
            self.flows.append(modules.Flip())
        self.post_pre = nn.Conv1d(1, fc, 1)
        self.post_proj = nn.Conv1d(fc, fc, 1)
        self.post_convs = modules.DDSConv(fc, kernel_size, n_layers=3, p_dropout=p_dropout)
        self.post_flows = nn.ModuleList([modules.ElementwiseAffine(2)])
        for _ in range(4):
            self.post_flows.append(modules.ConvFlow(2, fc, kernel_size, n_layers=3))
            self.post_flows.append(modules.Flip())
        self.pre = nn.Conv1d(in_channels, fc, 1)
        self.proj = nn.Conv1d(fc, fc, 1)
        self.convs = modules.DDSConv(fc, kernel_size, n_layers=3, p_dropout=p_dropout)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, fc, 1)

    def forward(
        self,
        x: Tensor,
        x_mask: Tensor,
        w: Tensor | None = None,
        g: Tensor | None = None,
        reverse: bool = False,
        noise_scale: float = 1.0,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Training: ``w`` (B, 1, T) durations -> NLL upper bound (B,). Reverse: sampled log-durations
        (``noise``: the (B, 2, T) standard normal draw to use instead of a fresh one, e.g. an ONNX input)."""
        x = self.pre(x.detach())
        if g is not None and hasattr(self, "cond"):
            x = x + self.cond(g.detach())
        x = self.convs(x, x_mask)
        x = self.proj(x) * x_mask
        b, _, t = x.shape
        if reverse:
            flows = list(reversed(self.flows))
            flows = flows[:-2] + [flows[-1]]  # drop a flow that only acts on the unused channel
            z = torch.randn(b, 2, t, device=x.device, dtype=x.dtype) if noise is None else noise
            z = z * noise_scale
            for flow in flows:
                z = flow(z, x_mask, g=x, reverse=True)
            return z[:, :1]
        if w is None:
            raise ValueError("StochasticDurationPredictor needs durations w in the forward direction")
        # q(u, nu | w, x): dequantisation noise u in (0, 1) and the second channel nu
        h_w = self.post_proj(self.post_convs(self.post_pre(w), x_mask)) * x_mask
        e_q = torch.randn(b, 2, t, device=x.device, dtype=x.dtype) * x_mask
        z_q = e_q
        logdet_q = 0.0
        for flow in self.post_flows:
            z_q, ld = flow(z_q, x_mask, g=x + h_w)
            logdet_q = logdet_q + ld
        z_u, z1 = z_q[:, :1], z_q[:, 1:]
        u = torch.sigmoid(z_u) * x_mask
        z0 = (w - u) * x_mask
        logdet_q = logdet_q + torch.sum((F.logsigmoid(z_u) + F.logsigmoid(-z_u)) * x_mask, [1, 2])
        logq = torch.sum(-0.5 * (math.log(2 * math.pi) + e_q**2) * x_mask, [1, 2]) - logdet_q
        # p(w - u, nu | x)
        z0, logdet = self.log_flow(z0, x_mask)
        z = torch.cat([z0, z1], 1)
        for flow in self.flows:
            z, ld = flow(z, x_mask, g=x)
            logdet = logdet + ld
        nll = torch.sum(0.5 * (math.log(2 * math.pi) + z**2) * x_mask, [1, 2]) - logdet
        return nll + logq


class DurationPredictor(nn.Module):
    """Deterministic log-duration regressor: two conv + ReLU + LayerNorm blocks."""

    def __init__(
        self,
        in_channels: int,
        filter_channels: int,
        kernel_size: int,
        p_dropout: float,
        gin_channels: int = 0,
    ):
        super().__init__()
        self.drop = nn.Dropout(p_dropout)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_1 = modules.LayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_2 = modules.LayerNorm(filter_channels)
        self.proj = nn.Conv1d(filter_channels, 1, 1)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, in_channels, 1)

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None) -> Tensor:
        x = x.detach()
        if g is not None and hasattr(self, "cond"):
            x = x + self.cond(g.detach())
        x = self.drop(self.norm_1(torch.relu(self.conv_1(x * x_mask))))
        x = self.drop(self.norm_2(torch.relu(self.conv_2(x * x_mask))))
        return self.proj(x * x_mask) * x_mask


# ----------------------------------------------------------------------------------------------------
# the synthesizer


@dataclass
class GeneratorOutput:
    y_hat: Tensor  # (B, 1, segment_size) waveform of the sliced window
    ids_slice: Tensor  # (B,) start frame of the window
    l_length: Tensor  # (B,) duration loss (SDP NLL + DP MSE, each divided by the batch's token count)
    attn: Tensor  # (B, 1, T_y, T_x) MAS alignment
    x_mask: Tensor  # (B, 1, T_x)
    z_mask: Tensor  # (B, 1, T_y)
    z: Tensor  # (B, inter, T_y) posterior sample
    z_p: Tensor  # flow(z)
    m_p: Tensor  # prior mean expanded to frames (B, inter, T_y)
    logs_p: Tensor
    m_q: Tensor  # posterior mean (B, inter, T_y)
    logs_q: Tensor
    logw: Tensor  # (B, 1, T_x) deterministic predictor's log-durations
    logw_: Tensor  # (B, 1, T_x) log of MAS durations (target)
    hidden_x: Tensor  # (B, H, T_x) text encoder output
    g: Tensor  # (B, gin, 1) speaker embedding


class SynthesizerTrn(nn.Module):
    """The JP-Extra generator. Fixed public choices: posterior encoder WN with 16 layers, kernel 5
    (``n_layers_q`` is accepted for config compatibility but, as in the public model, not used); flow FFN
    kernel 5; duration predictors of width 192 (stochastic) / 256 (deterministic) unless configured.

    ``mas_impl``: numba on CPU tensors, batched torch on CUDA (``auto``), or forced. Noise-scaled MAS adds
    ``std(valid scores) * N(0, 1) * current_mas_noise_scale`` to the alignment scores in training; the
    trainer calls ``update_mas_noise_scale(step)`` after each optimizer step.
    """

    def __init__(
        self,
        n_vocab: int,
        spec_channels: int,
        segment_size: int,
        inter_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float,
        resblock: str,
        resblock_kernel_sizes: list[int],
        resblock_dilation_sizes: list[list[int]],
        upsample_rates: list[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: list[int],
        n_speakers: int,
        gin_channels: int,
        num_tones: int,
        num_languages: int,
        bert_dim: int = 1024,
        style_dim: int = 256,
        n_layers_q: int = 3,
        use_transformer_flow: bool = True,
        n_layers_trans_flow: int = 6,
        n_flow_layer: int = 4,
        flow_share_parameter: bool = False,
        use_spk_conditioned_encoder: bool = True,
        use_noise_scaled_mas: bool = True,
        mas_noise_scale_initial: float = 0.01,
        mas_noise_scale_delta: float = 2e-6,
        mas_impl: str = "auto",
        gradient_checkpointing: bool = False,
        sdp_filter_channels: int | None = None,
        dp_filter_channels: int = 256,
    ):
        super().__init__()
        self.segment_size = segment_size  # frames
        self.hop_length = math.prod(upsample_rates)
        self.n_speakers = n_speakers
        self.use_spk_conditioned_encoder = use_spk_conditioned_encoder
        self.use_noise_scaled_mas = use_noise_scaled_mas
        self.mas_noise_scale_initial = mas_noise_scale_initial
        self.mas_noise_scale_delta = mas_noise_scale_delta
        self.current_mas_noise_scale = mas_noise_scale_initial if use_noise_scaled_mas else 0.0
        self.mas_impl = mas_impl
        self.enc_p = TextEncoder(
            n_vocab,
            num_tones,
            num_languages,
            inter_channels,
            hidden_channels,
            filter_channels,
            n_heads,
            n_layers,
            kernel_size,
            p_dropout,
            gin_channels=gin_channels if use_spk_conditioned_encoder else 0,
            bert_dim=bert_dim,
            style_dim=style_dim,
        )
        self.dec = Generator(
            inter_channels,
            resblock,
            resblock_kernel_sizes,
            resblock_dilation_sizes,
            upsample_rates,
            upsample_initial_channel,
            upsample_kernel_sizes,
            gin_channels=gin_channels,
        )
        self.enc_q = PosteriorEncoder(
            spec_channels, inter_channels, hidden_channels, 5, 1, 16, gin_channels=gin_channels
        )
        if use_transformer_flow:
            self.flow = TransformerCouplingBlock(
                inter_channels,
                hidden_channels,
                filter_channels,
                n_heads,
                n_layers_trans_flow,
                5,
                p_dropout,
                n_flow_layer,
                gin_channels=gin_channels,
                share_parameter=flow_share_parameter,
            )
        else:
            self.flow = ResidualCouplingBlock(
                inter_channels, hidden_channels, 5, 1, n_flow_layer, gin_channels=gin_channels
            )
        # SBV2's SDP takes its filter width from its input width (hidden_channels): None follows it
        sdp_width = hidden_channels if sdp_filter_channels is None else sdp_filter_channels
        self.sdp = StochasticDurationPredictor(
            hidden_channels, sdp_width, 3, 0.5, 4, gin_channels=gin_channels
        )
        self.dp = DurationPredictor(hidden_channels, dp_filter_channels, 3, 0.5, gin_channels=gin_channels)
        self.emb_g = nn.Embedding(n_speakers, gin_channels)
        self.set_gradient_checkpointing(gradient_checkpointing)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls, model_cfg: ModelConfig, data_cfg: DataConfig, segment_size: int | None = None
    ) -> SynthesizerTrn:
        """Build from the config sections; ``segment_size`` in samples (``train.segment_size``; default
        ``TrainConfig().segment_size``)."""
        from model.text import (
            symbols,  # the model.text package loads pyopenjtalk (g2p); nets need only the table
        )
        from model.text.features import bert_input_dim  # same package (pyopenjtalk)

        m, d = model_cfg, data_cfg
        segment_size = TrainConfig().segment_size if segment_size is None else segment_size
        hop = math.prod(m.upsample_rates)
        if hop != d.hop_length:
            raise ConfigError(
                f"model.upsample_rates {m.upsample_rates} upsample by {hop}, but data.hop_length is {d.hop_length}"
            )
        for u, k in zip(m.upsample_rates, m.upsample_kernel_sizes, strict=False):
            if (k - u) % 2:
                raise ConfigError(f"model.upsample_kernel_sizes: kernel {k} - rate {u} must be even")
        if len(m.upsample_rates) != len(m.upsample_kernel_sizes):
            raise ConfigError("model.upsample_kernel_sizes: needs one kernel per upsample rate")
        if len(m.resblock_kernel_sizes) != len(m.resblock_dilation_sizes):
            raise ConfigError("model.resblock_dilation_sizes: needs one dilation list per resblock kernel")
        if m.hidden_channels % m.n_heads:
            raise ConfigError(
                f"model.n_heads: {m.n_heads} does not divide hidden_channels {m.hidden_channels}"
            )
        if m.inter_channels % 2:
            raise ConfigError(f"model.inter_channels must be even, got {m.inter_channels}")
        if m.upsample_initial_channel // 2 ** len(m.upsample_rates) < 1:
            raise ConfigError("model.upsample_initial_channel too small for the number of upsampling layers")
        if d.n_speakers < 1:
            raise ConfigError(f"data.n_speakers must be >= 1, got {d.n_speakers}")
        if segment_size % hop:
            raise ConfigError(f"train.segment_size {segment_size} is not a multiple of hop_length {hop}")
        spec_channels = d.n_mel_channels if m.use_mel_posterior_encoder else d.filter_length // 2 + 1
        return cls(
            n_vocab=m.n_vocab if m.n_vocab is not None else symbols.NUM_SYMBOLS,
            spec_channels=spec_channels,
            segment_size=segment_size // hop,
            inter_channels=m.inter_channels,
            hidden_channels=m.hidden_channels,
            filter_channels=m.filter_channels,
            n_heads=m.n_heads,
            n_layers=m.n_layers,
            kernel_size=m.kernel_size,
            p_dropout=m.p_dropout,
            resblock=m.resblock,
            resblock_kernel_sizes=m.resblock_kernel_sizes,
            resblock_dilation_sizes=m.resblock_dilation_sizes,
            upsample_rates=m.upsample_rates,
            upsample_initial_channel=m.upsample_initial_channel,
            upsample_kernel_sizes=m.upsample_kernel_sizes,
            n_speakers=d.n_speakers,
            gin_channels=m.gin_channels,
            num_tones=m.num_tones if m.num_tones is not None else symbols.NUM_TONES,
            num_languages=m.num_languages if m.num_languages is not None else symbols.NUM_LANGUAGES,
            bert_dim=bert_input_dim(m, d),
            style_dim=m.style_dim,
            n_layers_q=m.n_layers_q,
            use_transformer_flow=m.use_transformer_flow,
            n_layers_trans_flow=m.n_layers_trans_flow,
            n_flow_layer=m.n_flow_layer,
            flow_share_parameter=m.flow_share_parameter,
            use_spk_conditioned_encoder=m.use_spk_conditioned_encoder,
            use_noise_scaled_mas=m.use_noise_scaled_mas,
            mas_noise_scale_initial=m.mas_noise_scale_initial,
            mas_noise_scale_delta=m.mas_noise_scale_delta,
            mas_impl=m.mas_impl,
            gradient_checkpointing=m.gradient_checkpointing,
            sdp_filter_channels=m.sdp_filter_channels,
            dp_filter_channels=m.dp_filter_channels,
        )

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute text-encoder layers and flow layers in the backward pass instead of storing them."""
        self.enc_p.encoder.gradient_checkpointing = enabled
        self.flow.gradient_checkpointing = enabled

    def update_mas_noise_scale(self, step: int | None = None) -> float:
        """Noise-scaled MAS schedule: one decay step (``step=None``) or the value after ``step`` steps."""
        if not self.use_noise_scaled_mas:
            return 0.0
        if step is None:
            self.current_mas_noise_scale = max(self.current_mas_noise_scale - self.mas_noise_scale_delta, 0.0)
        else:
            self.current_mas_noise_scale = max(
                self.mas_noise_scale_initial - self.mas_noise_scale_delta * step, 0.0
            )
        return self.current_mas_noise_scale

    # ------------------------------------------------------------------ training

    def forward(
        self,
        phones: Tensor,
        phone_lengths: Tensor,
        spec: Tensor,
        spec_lengths: Tensor,
        speakers: Tensor,
        tones: Tensor,
        languages: Tensor,
        bert: Tensor | None = None,
        style: Tensor | None = None,
    ) -> GeneratorOutput:
        g = self.emb_g(speakers).unsqueeze(-1)  # (B, gin, 1)
        g_enc = g if self.use_spk_conditioned_encoder else None
        x, m_p, logs_p, x_mask = self.enc_p(phones, phone_lengths, tones, languages, bert, style, g=g_enc)
        z, m_q, logs_q, y_mask = self.enc_q(spec, spec_lengths, g=g)
        z_p = self.flow(z, y_mask, g=g)

        attn = self._align(z_p, m_p, logs_p, x_mask, y_mask)  # (B, 1, T_y, T_x), no grad
        w = attn.sum(2)  # (B, 1, T_x) frames per token

        n_tokens = torch.sum(x_mask)
        l_length_sdp = self.sdp(x, x_mask, w, g=g) / n_tokens
        logw_ = torch.log(w + 1e-6) * x_mask
        logw = self.dp(x, x_mask, g=g)
        l_length_dp = torch.sum((logw - logw_) ** 2, [1, 2]) / n_tokens
        l_length = l_length_dp + l_length_sdp

        # expand the prior from tokens to frames
        a = attn.squeeze(1).to(m_p.dtype)
        m_p = torch.matmul(a, m_p.transpose(1, 2)).transpose(1, 2)
        logs_p = torch.matmul(a, logs_p.transpose(1, 2)).transpose(1, 2)

        z_slice, ids_slice = commons.rand_slice_segments(z, spec_lengths, self.segment_size)
        y_hat = self.dec(z_slice, g=g)
        return GeneratorOutput(
            y_hat=y_hat,
            ids_slice=ids_slice,
            l_length=l_length,
            attn=attn,
            x_mask=x_mask,
            z_mask=y_mask,
            z=z,
            z_p=z_p,
            m_p=m_p,
            logs_p=logs_p,
            m_q=m_q,
            logs_q=logs_q,
            logw=logw,
            logw_=logw_,
            hidden_x=x,
            g=g,
        )

    @torch.no_grad()
    def _align(self, z_p: Tensor, m_p: Tensor, logs_p: Tensor, x_mask: Tensor, y_mask: Tensor) -> Tensor:
        """Log-likelihood of every frame under every token's prior (float32), plus MAS noise -> path."""
        with torch.autocast(device_type=z_p.device.type, enabled=False):
            z_p, m_p, logs_p = z_p.float(), m_p.float(), logs_p.float()
            s_p_sq_r = torch.exp(-2 * logs_p)  # (B, D, T_x)
            neg_cent = (
                torch.sum(-0.5 * math.log(2 * math.pi) - logs_p, [1], keepdim=True)
                + torch.matmul(-0.5 * (z_p**2).transpose(1, 2), s_p_sq_r)
                + torch.matmul(z_p.transpose(1, 2), m_p * s_p_sq_r)
                + torch.sum(-0.5 * (m_p**2) * s_p_sq_r, [1], keepdim=True)
            )  # (B, T_y, T_x)
            mask = (x_mask.unsqueeze(2) * y_mask.unsqueeze(-1)).squeeze(1).float()  # (B, T_y, T_x)
            if self.use_noise_scaled_mas and self.training and self.current_mas_noise_scale > 0:
                # std over the valid cells only (no host sync)
                n = mask.sum().clamp_min(2)
                mean = (neg_cent * mask).sum() / n
                std = torch.sqrt((((neg_cent - mean) * mask) ** 2).sum() / (n - 1))
                neg_cent = neg_cent + std * torch.randn_like(neg_cent) * self.current_mas_noise_scale
            attn = maximum_path(neg_cent, mask, impl=self.mas_impl)
        return attn.unsqueeze(1)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def infer(
        self,
        phones: Tensor,
        phone_lengths: Tensor,
        speakers: Tensor,
        tones: Tensor,
        languages: Tensor,
        bert: Tensor | None = None,
        style: Tensor | None = None,
        noise_scale: float = 0.667,
        length_scale: float = 1.0,
        noise_scale_w: float = 0.8,
        sdp_ratio: float = 0.0,
        max_len: int | None = None,
        noise_w: Tensor | None = None,
        noise_z: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> audio (B, 1, T_y * hop), attn (B, 1, T_y, T_x), y_mask (B, 1, T_y), durations (B, T_x) long.

        Item ``b``'s audio is valid for its first ``durations[b].sum() * hop`` samples (``max(1, ...)``).
        ``noise_w`` (B, 2, T_x) and ``noise_z`` (B, inter_channels, >= T_y: its first T_y frames are used)
        replace the standard normal draws of the duration and prior samples (fixed noise: tests, ONNX).
        With ``sdp_ratio`` a tensor (the ONNX export, ``model.onnx_export``) both duration predictors run
        and the frame count stays a tensor, so a traced graph keeps every length dynamic.
        """
        graph = isinstance(sdp_ratio, Tensor)
        g = self.emb_g(speakers).unsqueeze(-1)
        g_enc = g if self.use_spk_conditioned_encoder else None
        x, m_p, logs_p, x_mask = self.enc_p(phones, phone_lengths, tones, languages, bert, style, g=g_enc)
        logw = 0.0
        if graph or sdp_ratio > 0:
            logw_sdp = self.sdp(x, x_mask, g=g, reverse=True, noise_scale=noise_scale_w, noise=noise_w)
            logw = logw + logw_sdp * sdp_ratio
        if graph or sdp_ratio < 1:
            logw = logw + self.dp(x, x_mask, g=g) * (1 - sdp_ratio)
        w_ceil = torch.ceil(torch.exp(logw) * x_mask * length_scale)
        y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
        y_max = y_lengths.max() if graph else None  # a tensor: torch.arange keeps it dynamic in a trace
        y_mask = commons.sequence_mask(y_lengths, y_max).unsqueeze(1).to(x_mask.dtype)
        attn_mask = x_mask.unsqueeze(2) * y_mask.unsqueeze(-1)
        attn = commons.generate_path(w_ceil, attn_mask)  # (B, 1, T_y, T_x)
        a = attn.squeeze(1)
        m_p = torch.matmul(a, m_p.transpose(1, 2)).transpose(1, 2)
        logs_p = torch.matmul(a, logs_p.transpose(1, 2)).transpose(1, 2)
        eps = torch.randn_like(m_p) if noise_z is None else noise_z[:, :, : m_p.shape[2]]
        z_p = m_p + eps * torch.exp(logs_p) * noise_scale
        z = self.flow(z_p, y_mask, g=g, reverse=True)
        audio = self.dec((z * y_mask)[:, :, :max_len], g=g)
        return audio, attn, y_mask, w_ceil.squeeze(1).long()
