"""The functional forms the fits use. Plain numpy; every function broadcasts over its array arguments.

Notation (Hoffmann et al. 2022, "Chinchilla"): N parameters, D data (audio seconds here, tokens there),
C training compute in FLOPs, L a loss to be minimised.
"""

from __future__ import annotations

import numpy as np


def power_law(x, E, A, alpha):
    """Single-variable law with an irreducible term: L(x) = E + A * x^-alpha (x = N, D or C)."""
    return E + A * np.power(np.asarray(x, dtype=float), -alpha)


def chinchilla(N, D, E, A, B, alpha, beta):
    """Chinchilla's parametric loss: L(N, D) = E + A / N^alpha + B / D^beta."""
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return E + A * np.power(N, -alpha) + B * np.power(D, -beta)


def effective_data(U, D, R_star):
    """Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models"), their eq. for D'.

    U unique data, D data seen (so U_D * (1 + R_D) = D with R_D = D/U - 1 repetitions beyond the first
    epoch). Repeated data decays in value with a characteristic R*_D:
    D' = U + U * R* * (1 - exp(-R_D / R*)). One epoch (D <= U) gives D' = D.
    """
    U = np.asarray(U, dtype=float)
    D = np.asarray(D, dtype=float)
    one_epoch = D <= U
    R = np.maximum(D / U - 1.0, 0.0)
    rep = U + U * R_star * (1.0 - np.exp(-R / R_star))
    return np.where(one_epoch, D, rep)


def saturating(x, M, A, alpha, x_ref=1.0):
    """Bounded quality metric rising to a ceiling: y(x) = M - A * (x / x_ref)^-alpha (MOS vs compute)."""
    return M - A * np.power(np.asarray(x, dtype=float) / x_ref, -alpha)


def logistic(L, floor, ceiling, k, L0):
    """Monotone saturating map from a loss to a quality metric.

    y = floor + (ceiling - floor) / (1 + exp(k * (L - L0))): k > 0 means the metric rises as the loss falls
    (the usual case: lower val_nelbo, higher MOS); k < 0 the reverse (a metric that is itself an error).
    """
    z = np.clip(k * (np.asarray(L, dtype=float) - L0), -60.0, 60.0)
    return floor + (ceiling - floor) / (1.0 + np.exp(z))


def compute_optimal(C, A, B, alpha, beta, k=6.0):
    """Minimise E + A/N^alpha + B/D^beta subject to k * N * D = C (Chinchilla eq. 4).

    Returns (N_opt, D_opt). With G = (alpha A / (beta B))^(1/(alpha+beta)):
    N_opt = G (C/k)^a, D_opt = G^-1 (C/k)^b, a = beta/(alpha+beta), b = alpha/(alpha+beta).
    ``k`` is the FLOPs per parameter per unit of data: 6 for a transformer LM per token; for VITS it is
    measured from the sweep (median of C / (N * D)), see ``analysis.allocate.flops_per_param_unit``.
    """
    C = np.asarray(C, dtype=float)
    G = np.power(alpha * A / (beta * B), 1.0 / (alpha + beta))
    a = beta / (alpha + beta)
    b = alpha / (alpha + beta)
    return G * np.power(C / k, a), np.power(C / k, b) / G
