"""Small tensor helpers shared by the generator: masks, segment slicing, alignment paths, init.

Shapes follow the VITS convention: channels-first sequences ``(B, C, T)``, masks ``(B, 1, T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def init_weights(m: nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    """HiFi-GAN initialisation for convolutions (used with ``module.apply``)."""
    if "Conv" in m.__class__.__name__:
        w = m.parametrizations.weight.original1 if hasattr(m, "parametrizations") else m.weight
        w.data.normal_(mean, std)


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of an odd kernel with dilation."""
    return (kernel_size * dilation - dilation) // 2


def sequence_mask(lengths: Tensor, max_length: int | None = None) -> Tensor:
    """``(B,)`` lengths -> ``(B, max_length)`` bool mask, True on valid positions."""
    if max_length is None:
        max_length = int(lengths.max())
    pos = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return pos.unsqueeze(0) < lengths.unsqueeze(1)


def slice_segments(x: Tensor, ids_str: Tensor, segment_size: int) -> Tensor:
    """Take ``x[b, :, ids_str[b] : ids_str[b] + segment_size]`` for every item (positions past the end are 0).

    Works for any ``(B, C, T)`` tensor (spectrogram frames or waveform samples); one gather, no python loop.
    """
    b, c, t = x.shape
    idx = ids_str.to(x.device).long().view(b, 1, 1) + torch.arange(segment_size, device=x.device).view(
        1, 1, -1
    )
    valid = idx < t
    out = torch.gather(x, 2, idx.clamp(max=t - 1).expand(b, c, segment_size))
    return out * valid.to(out.dtype)


def rand_slice_segments(
    x: Tensor, x_lengths: Tensor | None = None, segment_size: int = 4
) -> tuple[Tensor, Tensor]:
    """A random window of ``segment_size`` frames per item, inside its valid length when possible.

    Items shorter than the window start at 0 (and the tail is zero-padded), as VITS does.
    """
    b, _, t = x.shape
    if x_lengths is None:
        x_lengths = torch.full((b,), t, device=x.device, dtype=torch.long)
    ids_str_max = (x_lengths.to(x.device) - segment_size + 1).clamp(min=1)
    ids_str = (torch.rand(b, device=x.device) * ids_str_max).long()
    return slice_segments(x, ids_str, segment_size), ids_str


def generate_path(duration: Tensor, mask: Tensor) -> Tensor:
    """Hard monotonic alignment from integer durations.

    duration: ``(B, 1, T_x)``; mask: ``(B, 1, T_y, T_x)`` -> path ``(B, 1, T_y, T_x)`` with
    ``path[b, 0, y, x] = 1`` iff frame ``y`` belongs to token ``x``.
    """
    b, _, t_y, t_x = mask.shape
    cum = torch.cumsum(duration, -1).view(b * t_x)
    path = sequence_mask(cum, t_y).to(mask.dtype).view(b, t_x, t_y)
    path = path - F.pad(path, (0, 0, 1, 0, 0, 0))[:, :-1]
    return path.unsqueeze(1).transpose(2, 3) * mask


def fused_add_tanh_sigmoid_multiply(input_a: Tensor, input_b: Tensor, n_channels: int) -> Tensor:
    """WaveNet gate: ``tanh(a+b)[:n] * sigmoid(a+b)[n:]`` over the channel dimension."""
    s = input_a + input_b
    return torch.tanh(s[:, :n_channels]) * torch.sigmoid(s[:, n_channels:])
