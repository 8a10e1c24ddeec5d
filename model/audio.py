"""Spectrograms and mel filterbanks: one implementation shared by the feature cache, the losses and metrics.

Magnitude linear spectrogram with reflect padding of (n_fft - hop) / 2 on each side and ``center=False``
(the VITS convention: frames = len(wav) // hop), and a Slaney-normalised mel filterbank applied to it,
then natural-log compression with a 1e-5 floor.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import torchaudio


@functools.lru_cache(maxsize=32)
def _window(win_length: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(win_length, device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _mel_basis(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, device: str, dtype: torch.dtype
):
    fb = torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=fmin,
        f_max=fmax if fmax is not None else sr / 2,
        n_mels=n_mels,
        sample_rate=sr,
        norm="slaney",
        mel_scale="slaney",
    )  # (freq, mels)
    return fb.T.contiguous().to(device=device, dtype=dtype)


def spectrogram(wav: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """``wav`` (B, T) or (B, 1, T) in [-1, 1] -> magnitude (B, n_fft // 2 + 1, T // hop)."""
    if wav.dim() == 3:
        wav = wav.squeeze(1)
    pad = (n_fft - hop) // 2
    x = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    w = _window(win, str(x.device), x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=w, center=False, return_complex=True)
    return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-6)


def spec_to_mel(
    spec: torch.Tensor, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax=None
) -> torch.Tensor:
    """Linear magnitude (B, F, T) -> log mel (B, n_mels, T)."""
    basis = _mel_basis(sr, n_fft, n_mels, float(fmin), fmax, str(spec.device), spec.dtype)
    return torch.log(torch.clamp(basis @ spec, min=1e-5))


def mel_spectrogram(
    wav: torch.Tensor, sr: int, n_fft: int, n_mels: int, hop: int, win: int, fmin=0.0, fmax=None
):
    """Waveform -> log mel in one call (used for the mel loss on generated audio)."""
    return spec_to_mel(spectrogram(wav, n_fft, hop, win), sr, n_fft, n_mels, fmin, fmax)


def mel_from_config(wav: torch.Tensor, data_cfg) -> torch.Tensor:
    d = data_cfg
    return mel_spectrogram(
        wav,
        d.sampling_rate,
        d.filter_length,
        d.n_mel_channels,
        d.hop_length,
        d.win_length,
        d.mel_fmin,
        d.mel_fmax,
    )


def spec_from_config(wav: torch.Tensor, data_cfg) -> torch.Tensor:
    d = data_cfg
    return spectrogram(wav, d.filter_length, d.hop_length, d.win_length)
