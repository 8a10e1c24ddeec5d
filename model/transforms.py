"""Monotonic rational-quadratic spline (Durkan et al. 2019, "Neural Spline Flows").

The spline maps [-B, B] onto itself through ``K`` bins with learned widths, heights and interior knot
derivatives; with ``tails="linear"`` it is the identity outside the interval (the boundary derivatives
are fixed to 1 so the map is C1). Used by the stochastic duration predictor's ``ConvFlow``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def piecewise_rational_quadratic_transform(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool = False,
    tails: str | None = "linear",
    tail_bound: float = 1.0,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Apply the spline elementwise; parameters have the input's shape plus a trailing bin dimension.

    ``tails=None``: constrained spline on [0, 1] with ``K + 1`` derivatives given. ``tails="linear"``:
    spline on [-tail_bound, tail_bound], identity outside, ``K - 1`` interior derivatives given.
    Returns ``(outputs, log|d outputs / d inputs|)``.
    """
    if tails is None:
        return rational_quadratic_spline(
            inputs,
            unnormalized_widths,
            unnormalized_heights,
            unnormalized_derivatives,
            inverse=inverse,
            min_bin_width=min_bin_width,
            min_bin_height=min_bin_height,
            min_derivative=min_derivative,
        )
    if tails != "linear":
        raise ValueError(f"unsupported spline tails {tails!r} (None or 'linear')")
    # boundary derivative 1: softplus(c) + min_derivative = 1
    const = math.log(math.exp(1 - min_derivative) - 1)
    derivs = F.pad(unnormalized_derivatives, (1, 1), value=const)
    # evaluate everywhere on clamped inputs (no data-dependent indexing: no host sync on GPU), then keep
    # the identity outside the interval
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    out_in, lad_in = rational_quadratic_spline(
        inputs.clamp(-tail_bound, tail_bound),
        unnormalized_widths,
        unnormalized_heights,
        derivs,
        inverse=inverse,
        left=-tail_bound,
        right=tail_bound,
        bottom=-tail_bound,
        top=tail_bound,
        min_bin_width=min_bin_width,
        min_bin_height=min_bin_height,
        min_derivative=min_derivative,
    )
    outputs = torch.where(inside, out_in, inputs)
    logabsdet = torch.where(inside, lad_in, torch.zeros_like(lad_in))
    return outputs, logabsdet


def _knots(unnormalized: Tensor, lo: float, hi: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Bin sizes (softmax, floored at ``min_size``) -> knot positions (K+1) and exact bin sizes (K)."""
    k = unnormalized.shape[-1]
    if min_size * k > 1.0:
        raise ValueError(f"minimal bin size {min_size} too large for {k} bins")
    sizes = min_size + (1 - min_size * k) * F.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    knots = (hi - lo) * knots + lo
    knots = torch.cat(
        [torch.full_like(knots[..., :1], lo), knots[..., 1:-1], torch.full_like(knots[..., :1], hi)], -1
    )
    return knots, knots[..., 1:] - knots[..., :-1]


def _bin_index(knots: Tensor, x: Tensor) -> Tensor:
    """Index k with knots[k] <= x < knots[k+1] (the last bin includes its right edge)."""
    k = knots.shape[-1] - 1
    # the count of knots <= x (what searchsorted(right=True) gives for sorted knots), written with a
    # comparison so that the ONNX export (model.onnx_export) has an operator for it
    idx = (x.unsqueeze(-1) >= knots).sum(-1, keepdim=True) - 1
    return idx.clamp(0, k - 1)


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool = False,
    left: float = 0.0,
    right: float = 1.0,
    bottom: float = 0.0,
    top: float = 1.0,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """The spline on [left, right] -> [bottom, top] with K+1 knot derivatives (softplus + floor)."""
    xk, widths = _knots(unnormalized_widths, left, right, min_bin_width)
    yk, heights = _knots(unnormalized_heights, bottom, top, min_bin_height)
    derivs = min_derivative + F.softplus(unnormalized_derivatives)

    idx = _bin_index(yk if inverse else xk, inputs)  # (..., 1)

    def pick(t: Tensor) -> Tensor:
        return t.gather(-1, idx).squeeze(-1)

    x0, w = pick(xk[..., :-1]), pick(widths)
    y0, h = pick(yk[..., :-1]), pick(heights)
    d0, d1 = pick(derivs[..., :-1]), pick(derivs[..., 1:])
    s = h / w  # slope of the bin's chord

    if not inverse:
        theta = (inputs - x0) / w
        t1 = theta * (1 - theta)
        denom = s + (d0 + d1 - 2 * s) * t1
        outputs = y0 + h * (s * theta.pow(2) + d0 * t1) / denom
        deriv = s.pow(2) * (d1 * theta.pow(2) + 2 * s * t1 + d0 * (1 - theta).pow(2))
        return outputs, torch.log(deriv) - 2 * torch.log(denom)

    # invert y = y0 + h (s θ² + d0 θ(1-θ)) / (s + (d0 + d1 - 2s) θ(1-θ)): a quadratic in θ
    dy = inputs - y0
    c_ = d0 + d1 - 2 * s
    a = h * (s - d0) + dy * c_
    b = h * d0 - dy * c_
    c = -s * dy
    disc = (b.pow(2) - 4 * a * c).clamp_min(0)
    theta = (2 * c) / (-b - torch.sqrt(disc))  # the numerically stable root in [0, 1]
    outputs = theta * w + x0
    t1 = theta * (1 - theta)
    denom = s + c_ * t1
    deriv = s.pow(2) * (d1 * theta.pow(2) + 2 * s * t1 + d0 * (1 - theta).pow(2))
    return outputs, -(torch.log(deriv) - 2 * torch.log(denom))
