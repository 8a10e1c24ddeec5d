"""Discriminators of the Style-Bert-VITS2 JP-Extra arrangement, with a channel-width multiplier.

- ``MultiPeriodDiscriminator``: HiFi-GAN's period discriminators (periods 2, 3, 5, 7, 11) plus one scale
  discriminator on the raw waveform, as VITS bundles them. At ``width=1.0`` it has the public 46,747,132
  parameters (weight norm counts a gain ``g`` per output channel on top of each weight ``v``).
- ``DurationDiscriminator``: judges log durations (from the alignment vs. predicted) given the text encoder's
  hidden states; outputs a probability per phone.
- ``WavLMDiscriminator``: a small conv stack over the stacked hidden states of a frozen WavLM (JP-Extra);
  ``WavLMFeatures`` loads that WavLM through ``transformers`` and resamples audio to its rate.

``width`` multiplies every hidden channel count (rounded, at least 1); grouped convolutions keep their
channels-per-group so the group count always divides both sides. A sweep can keep the discriminator fixed
(``width=1.0``) or shrink it with the generator: at small generator sizes a full-size discriminator
dominates the cost of a training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from model.commons import get_padding

LRELU_SLOPE = 0.1

# public channel plans (width 1.0)
PERIOD_CHANNELS = [32, 128, 512, 1024, 1024]
SCALE_CHANNELS = [16, 64, 256, 1024, 1024, 1024]
SCALE_KERNELS = [15, 41, 41, 41, 41, 5]
SCALE_STRIDES = [1, 4, 4, 4, 4, 1]
SCALE_GROUPS = [1, 4, 16, 64, 256, 1]


def scaled(channels: int, width: float) -> int:
    """A hidden channel count times ``width``, rounded, never below 1."""
    return max(1, int(round(channels * width)))


def _groups(c_in: int, c_out: int, groups: int, width: float) -> int:
    """Scale a group count with the channels (keeping channels per group) and make it divide both sides."""
    g = max(1, min(int(round(groups * width)), c_in, c_out))
    while c_in % g or c_out % g:
        g -= 1
    return g


def _norm(use_spectral_norm: bool):
    return spectral_norm if use_spectral_norm else weight_norm


class DiscriminatorP(nn.Module):
    """Folds the waveform into (T / period, period) and runs 2-D convs along time, one column per phase."""

    def __init__(
        self,
        period: int,
        width: float = 1.0,
        kernel_size: int = 5,
        stride: int = 3,
        use_spectral_norm: bool = False,
    ):
        super().__init__()
        self.period = period
        norm = _norm(use_spectral_norm)
        chans = [1] + [scaled(c, width) for c in PERIOD_CHANNELS]
        strides = [stride] * (len(PERIOD_CHANNELS) - 1) + [1]
        self.convs = nn.ModuleList(
            norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (s, 1), padding=(get_padding(kernel_size), 0)))
            for c_in, c_out, s in zip(chans[:-1], chans[1:], strides, strict=True)
        )
        self.conv_post = norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` (B, 1, T) -> (scores (B, n), feature maps)."""
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class DiscriminatorS(nn.Module):
    """The scale discriminator: strided, grouped 1-D convs over the raw waveform."""

    def __init__(self, width: float = 1.0, use_spectral_norm: bool = False):
        super().__init__()
        norm = _norm(use_spectral_norm)
        chans = [1] + [scaled(c, width) for c in SCALE_CHANNELS]
        layers = []
        for i, (k, s, g) in enumerate(zip(SCALE_KERNELS, SCALE_STRIDES, SCALE_GROUPS, strict=True)):
            c_in, c_out = chans[i], chans[i + 1]
            layers.append(
                norm(
                    nn.Conv1d(
                        c_in, c_out, k, s, groups=_groups(c_in, c_out, g, width), padding=get_padding(k)
                    )
                )
            )
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv1d(chans[-1], 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """One scale discriminator and one period discriminator per period (VITS's ``net_d``)."""

    def __init__(
        self,
        periods: list[int] | tuple[int, ...] = (2, 3, 5, 7, 11),
        width: float = 1.0,
        use_spectral_norm: bool = False,
    ):
        super().__init__()
        self.discriminators = nn.ModuleList(
            [DiscriminatorS(width, use_spectral_norm)]
            + [DiscriminatorP(p, width, use_spectral_norm=use_spectral_norm) for p in periods]
        )

    @classmethod
    def from_config(cls, model_cfg) -> MultiPeriodDiscriminator:
        return cls(list(model_cfg.disc_periods), model_cfg.disc_width, model_cfg.use_spectral_norm)

    def run(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """One set of waveforms (B, 1, T) -> (scores per discriminator, feature maps per discriminator)."""
        scores, fmaps = [], []
        for d in self.discriminators:
            score, fmap = d(x)
            scores.append(score)
            fmaps.append(fmap)
        return scores, fmaps

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        """Real ``y`` and generated ``y_hat`` (B, 1, T) -> (real scores, fake scores, real fmaps, fake fmaps).

        Both go through each discriminator as one batch (half the kernel launches); results are split.
        """
        b = y.shape[0]
        x = torch.cat([y, y_hat], dim=0)
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            score, fmap = d(x)
            y_d_rs.append(score[:b])
            y_d_gs.append(score[b:])
            fmap_rs.append([f[:b] for f in fmap])
            fmap_gs.append([f[b:] for f in fmap])
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


# ----------------------------------------------------------------------------------------------------
# duration discriminator


class DurationDiscriminator(nn.Module):
    """Real-vs-predicted log durations, conditioned on the text encoder's hidden states.

    Two conv + layer-norm blocks over ``hidden_x`` (detached from the encoder graph: the discriminator
    judges durations, not the text encoder), each duration track projected to the same width and
    concatenated, a bidirectional LSTM over phones, and a sigmoid per phone.
    """

    def __init__(
        self,
        in_channels: int,
        filter_channels: int = 256,
        kernel_size: int = 3,
        p_dropout: float = 0.1,
        gin_channels: int = 0,
        width: float = 1.0,
    ):
        super().__init__()
        fc = scaled(filter_channels, width)
        self.filter_channels = fc
        self.drop = nn.Dropout(p_dropout)
        self.conv_1 = nn.Conv1d(in_channels, fc, kernel_size, padding=kernel_size // 2)
        self.norm_1 = nn.LayerNorm(fc)
        self.conv_2 = nn.Conv1d(fc, fc, kernel_size, padding=kernel_size // 2)
        self.norm_2 = nn.LayerNorm(fc)
        self.dur_proj = nn.Conv1d(1, fc, 1)
        self.lstm = nn.LSTM(2 * fc, fc, batch_first=True, bidirectional=True)
        self.output_layer = nn.Linear(2 * fc, 1)
        self.cond = nn.Conv1d(gin_channels, in_channels, 1) if gin_channels else None

    @classmethod
    def from_config(cls, model_cfg) -> DurationDiscriminator:
        return cls(model_cfg.hidden_channels, 256, 3, 0.1, model_cfg.gin_channels, model_cfg.disc_width)

    def _block(self, x, x_mask, conv, norm):
        x = torch.relu(conv(x * x_mask))
        x = norm(x.transpose(1, 2)).transpose(1, 2)
        return self.drop(x)

    def _probability(self, x: torch.Tensor, dur: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, self.dur_proj(dur)], dim=1).transpose(1, 2)  # (B, T, 2 fc)
        x, _ = self.lstm(x)
        return torch.sigmoid(self.output_layer(x))  # (B, T, 1)

    def forward(self, x, x_mask, dur_r, dur_hat, g=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, hidden, T), ``x_mask`` (B, 1, T), ``dur_*`` (B, 1, T) log durations -> probabilities."""
        x = torch.detach(x)
        if g is not None and self.cond is not None:
            x = x + self.cond(torch.detach(g))
        x = self._block(x, x_mask, self.conv_1, self.norm_1)
        x = self._block(x, x_mask, self.conv_2, self.norm_2)
        return self._probability(x, dur_r), self._probability(x, dur_hat)


# ----------------------------------------------------------------------------------------------------
# WavLM-feature discriminator (JP-Extra)


class WavLMDiscriminator(nn.Module):
    """Convs over the concatenated hidden states of every WavLM layer: (B, hidden * nlayers, T') -> scores."""

    def __init__(
        self,
        slm_hidden: int = 768,
        slm_layers: int = 13,
        initial_channel: int = 64,
        use_spectral_norm: bool = False,
        width: float = 1.0,
    ):
        super().__init__()
        norm = _norm(use_spectral_norm)
        c = scaled(initial_channel, width)
        self.pre = norm(nn.Conv1d(slm_hidden * slm_layers, c, 1))
        self.convs = nn.ModuleList(
            [
                norm(nn.Conv1d(c, 2 * c, 5, padding=2)),
                norm(nn.Conv1d(2 * c, 4 * c, 5, padding=2)),
                norm(nn.Conv1d(4 * c, 4 * c, 5, padding=2)),
            ]
        )
        self.conv_post = norm(nn.Conv1d(4 * c, 1, 3, padding=1))

    @classmethod
    def from_config(cls, model_cfg) -> WavLMDiscriminator:
        slm = model_cfg.slm
        return cls(
            int(slm.get("hidden", 768)),
            int(slm.get("nlayers", 13)),
            int(slm.get("initial_channel", 64)),
            model_cfg.use_spectral_norm,
            model_cfg.disc_width,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
        return torch.flatten(self.conv_post(x), 1, -1)


class WavLMFeatures(nn.Module):
    """A frozen WavLM from ``transformers`` (a hub name or a local path) that maps audio to hidden states.

    ``forward(wav)`` takes (B, T) or (B, 1, T) audio at ``sampling_rate``, resamples it to the WavLM rate
    and returns every layer's hidden states stacked: (B, hidden * nlayers, T'). Gradients flow to the
    input audio (the generator learns through it) but never into WavLM's weights.
    """

    def __init__(self, name_or_path: str, sampling_rate: int, slm_sr: int = 16000):
        super().__init__()
        import torchaudio
        from transformers import WavLMModel

        self.wavlm = WavLMModel.from_pretrained(name_or_path)
        self.wavlm.eval()
        self.wavlm.requires_grad_(False)
        self.resample = (
            torchaudio.transforms.Resample(sampling_rate, slm_sr)
            if sampling_rate != slm_sr
            else nn.Identity()
        )
        cfg = self.wavlm.config
        self.hidden = int(cfg.hidden_size)
        self.nlayers = int(cfg.num_hidden_layers) + 1  # the embedding output plus each layer

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> WavLMFeatures:
        slm = model_cfg.slm
        return cls(
            str(slm.get("model", "microsoft/wavlm-base-plus")),
            data_cfg.sampling_rate,
            int(slm.get("sr", 16000)),
        )

    def train(self, mode: bool = True):  # WavLM stays in eval mode (no dropout) whatever the trainer does
        super().train(mode)
        self.wavlm.eval()
        return self

    def hidden_states(self, wav: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if wav.dim() == 3:
            wav = wav.squeeze(1)
        wav16 = self.resample(wav.float())
        return self.wavlm(input_values=wav16, output_hidden_states=True).hidden_states

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        hs = self.hidden_states(wav)  # nlayers x (B, T', hidden)
        return torch.stack(hs, dim=1).transpose(-1, -2).flatten(1, 2)  # (B, nlayers * hidden, T')


__all__ = [
    "DiscriminatorP",
    "DiscriminatorS",
    "DurationDiscriminator",
    "MultiPeriodDiscriminator",
    "WavLMDiscriminator",
    "WavLMFeatures",
    "scaled",
]
