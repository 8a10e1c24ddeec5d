"""Transformer encoder of the VITS text encoder and of the transformer-coupling flow.

Each layer: multi-head self-attention with windowed relative positions (Shaw et al. 2018: learned key and
value embeddings for offsets -window..window, shared across heads), then a convolutional feed-forward
block; post-norm residuals with a channel LayerNorm. Speaker conditioning (Style-Bert-VITS2): a linear map
of the speaker embedding is added to the hidden states before layer ``cond_layer_idx`` (2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.modules import LayerNorm


class MultiHeadAttention(nn.Module):
    def __init__(
        self,
        channels: int,
        out_channels: int,
        n_heads: int,
        p_dropout: float = 0.0,
        window_size: int | None = 4,
        heads_share: bool = True,
    ):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"hidden_channels ({channels}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        if window_size is not None:
            n_rel = 1 if heads_share else n_heads
            std = self.k_channels**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(n_rel, 2 * window_size + 1, self.k_channels) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(n_rel, 2 * window_size + 1, self.k_channels) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: Tensor, c: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x: queries (B, C, T_q); c: keys/values (B, C, T_k); attn_mask (B, 1, T_q, T_k)."""
        q, k, v = self.conv_q(x), self.conv_k(c), self.conv_v(c)
        b, ch, t_q = q.shape
        t_k = k.shape[2]
        h, d = self.n_heads, self.k_channels
        q = q.view(b, h, d, t_q).transpose(2, 3) / math.sqrt(d)  # (B, H, T_q, d)
        k = k.view(b, h, d, t_k).transpose(2, 3)
        v = v.view(b, h, d, t_k).transpose(2, 3)
        scores = q @ k.transpose(-2, -1)  # (B, H, T_q, T_k)
        if self.window_size is not None:
            if t_q != t_k:
                raise ValueError("relative attention needs self-attention (equal query and key lengths)")
            rel_idx, rel_valid = self._offsets(t_q, q.device)
            rel_logits = q @ self.emb_rel_k.transpose(-2, -1)  # (B, H, T, 2w+1)
            local = rel_logits.gather(-1, rel_idx.expand(b, h, t_q, t_k))
            scores = scores + local * rel_valid
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, -1e4)
        p = self.drop(F.softmax(scores, dim=-1))
        out = p @ v  # (B, H, T_q, d)
        if self.window_size is not None:
            # attention weight on the key at each relative offset -> (B, H, T, 2w+1)
            w = self.window_size
            j = torch.arange(t_q, device=q.device).unsqueeze(1) + torch.arange(-w, w + 1, device=q.device)
            j_valid = (j >= 0) & (j < t_k)
            rel_p = p.gather(-1, j.clamp(0, t_k - 1).expand(b, h, t_q, 2 * w + 1)) * j_valid
            out = out + rel_p @ self.emb_rel_v
        out = out.transpose(2, 3).reshape(b, ch, t_q)
        return self.conv_o(out)

    def _offsets(self, t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """For every (query i, key j): index of offset j - i into the 2w+1 table, and whether |j - i| <= w."""
        w = self.window_size
        rel = torch.arange(t, device=device).unsqueeze(0) - torch.arange(t, device=device).unsqueeze(1)
        valid = rel.abs() <= w
        return (rel.clamp(-w, w) + w), valid


class FFN(nn.Module):
    """conv(kernel) -> relu/gelu -> dropout -> conv(kernel), 'same' (or causal) padding, masked."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filter_channels: int,
        kernel_size: int,
        p_dropout: float = 0.0,
        activation: str | None = None,
        causal: bool = False,
    ):
        super().__init__()
        self.kernel_size = kernel_size
        self.activation = activation
        self.causal = causal
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def _pad(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        if k == 1:
            return x
        return F.pad(x, (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2))

    def forward(self, x: Tensor, x_mask: Tensor) -> Tensor:
        x = self.conv_1(self._pad(x * x_mask))
        x = x * torch.sigmoid(1.702 * x) if self.activation == "gelu" else torch.relu(x)
        x = self.drop(x)
        x = self.conv_2(self._pad(x * x_mask))
        return x * x_mask


class Encoder(nn.Module):
    """Stack of ``n_layers`` relative-attention layers with optional speaker conditioning.

    Submodule names follow the public VITS layout (``attn_layers``, ``norm_layers_1``, ``ffn_layers``,
    ``norm_layers_2``, ``spk_emb_linear``) so public checkpoints map onto it by name. ``isflow`` marks the
    instance inside a transformer-coupling flow; the public JP-Extra model uses the same layout there
    (only the FFN kernel differs, 5, which the caller passes), so the flag is recorded, not structural.
    """

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        p_dropout: float = 0.0,
        window_size: int = 4,
        gin_channels: int = 0,
        cond_layer_idx: int = 2,
        isflow: bool = False,
    ):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.isflow = isflow
        h = hidden_channels
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList(
            MultiHeadAttention(h, h, n_heads, p_dropout, window_size) for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(LayerNorm(h) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FFN(h, h, filter_channels, kernel_size, p_dropout) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(LayerNorm(h) for _ in range(n_layers))
        self.gin_channels = gin_channels
        # conditioning goes in before layer cond_layer_idx (clamped for shallow stacks)
        self.cond_layer_idx = min(cond_layer_idx, max(n_layers - 1, 0)) if gin_channels else n_layers
        if gin_channels:
            self.spk_emb_linear = nn.Linear(gin_channels, h)
        self.gradient_checkpointing = False

    def _layer(self, i: int, x: Tensor, x_mask: Tensor, attn_mask: Tensor) -> Tensor:
        x = self.norm_layers_1[i](x + self.drop(self.attn_layers[i](x, x, attn_mask)))
        return self.norm_layers_2[i](x + self.drop(self.ffn_layers[i](x, x_mask)))

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None) -> Tensor:
        """x (B, C, T), x_mask (B, 1, T), g (B, gin, 1) or None."""
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)
        x = x * x_mask
        ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i in range(self.n_layers):
            if i == self.cond_layer_idx and g is not None:
                x = (x + self.spk_emb_linear(g.transpose(1, 2)).transpose(1, 2)) * x_mask
            if ckpt:
                x = checkpoint(self._layer, i, x, x_mask, attn_mask, use_reentrant=False)
            else:
                x = self._layer(i, x, x_mask, attn_mask)
        return x * x_mask
