"""Synthetic tables from known laws, for tests, the bench and demos: the fits must recover what went in."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import laws

# Besiroglu et al. 2024's refit of Chinchilla's data (their Table 1, Approach 3 replication).
CHINCHILLA = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
# A VITS-scale law (N ~ 1e6..1e8 parameters, D in audio seconds): illustrative values, not measured.
VITS_LIKE = {"E": 1.2, "A": 60.0, "B": 25.0, "alpha": 0.32, "beta": 0.30}
# logistic val_nelbo -> MOS map used with VITS_LIKE
MOS_MAP = {"floor": 1.3, "ceiling": 4.4, "k": 3.0, "L0": 3.2}


def chinchilla_points(
    n=250, *, params=CHINCHILLA, noise=0.01, seed=0, N_range=(7e7, 1.6e10), D_range=(5e9, 5e11)
) -> pd.DataFrame:
    """n points with N and D log-uniform over Chinchilla's ranges, C = 6 N D, L with log-normal noise."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(*np.log(N_range), n))
    D = np.exp(rng.uniform(*np.log(D_range), n))
    L = laws.chinchilla(N, D, **params) * np.exp(rng.normal(0, noise, n))
    return pd.DataFrame({"trial": [f"t{i}" for i in range(n)], "N": N, "D": D, "C": 6 * N * D, "L": L})


def isoflop_table(
    budgets, *, n_per=9, span_dex=1.2, k=6.0, params=CHINCHILLA, noise=0.005, seed=0, metric="L"
) -> pd.DataFrame:
    """Per budget C, ``n_per`` model sizes log-spaced over ``span_dex`` decades centred on the true
    compute-optimal N, D = C / (k N), loss from ``params`` with log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        N0, _ = laws.compute_optimal(C, params["A"], params["B"], params["alpha"], params["beta"], k)
        for N in N0 * np.logspace(-span_dex / 2, span_dex / 2, n_per):
            D = C / (k * N)
            L = laws.chinchilla(N, D, **params) * np.exp(rng.normal(0, noise))
            rows.append({"trial": f"c{C:.2g}_n{N:.3g}", "N": N, "D": D, "C": C, metric: L, "budget": C})
    return pd.DataFrame(rows)


def curves_table(sizes, *, D_max, n_steps=40, k=6.0, params=CHINCHILLA, noise=0.002, seed=0) -> pd.DataFrame:
    """One training curve per model size: evaluations at log-spaced data seen up to D_max (long format:
    trial, step, N, C, D, L)."""
    rng = np.random.default_rng(seed)
    rows = []
    for j, N in enumerate(sizes):
        for s, D in enumerate(np.geomspace(D_max / 1e3, D_max, n_steps)):
            L = laws.chinchilla(N, D, **params) * np.exp(rng.normal(0, noise))
            rows.append({"trial": f"m{j}", "step": s, "N": N, "C": k * N * D, "D": D, "L": L})
    return pd.DataFrame(rows)


def sweep_table(
    *,
    sizes=(1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7, 6.4e7),
    hours=(0.5, 1, 2, 4, 8, 16),
    steps_epochs=1.0,
    k=40.0,
    params=VITS_LIKE,
    mos_map=MOS_MAP,
    loss_noise=0.01,
    mos_noise=0.03,
    seed=0,
    loss="val_nelbo",
    quality="dnsmos_ovrl",
) -> pd.DataFrame:
    """A grid sweep in the tidy-table layout: model sizes x data hours, each trained for ``steps_epochs``
    passes over its data (D = epochs * hours * 3600 s), C = k N D, val_nelbo from ``params`` and
    dnsmos_ovrl = logistic(true val_nelbo) plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, N in enumerate(sizes):
        for j, h in enumerate(hours):
            D = steps_epochs * h * 3600.0
            Lt = laws.chinchilla(N, D, **params)
            rows.append(
                {
                    "trial": f"{i * len(hours) + j}",
                    "status": "finished",
                    "axis.model_size": float(N),
                    "axis.data_hours": float(h),
                    "N": float(N),
                    "D": D,
                    "C": k * N * D,
                    "data_hours": float(h),
                    loss: Lt * np.exp(rng.normal(0, loss_noise)),
                    quality: float(laws.logistic(Lt, **mos_map) + rng.normal(0, mos_noise)),
                }
            )
    return pd.DataFrame(rows)


# The CPU demo's shape (sweeps/demo.yaml): generator sizes of the tiny preset at width 16/32 x text-encoder
# depth 1/2 (N spans 2.2x), 0.05 / 0.2 h of unique data, three budgets. Illustrative values, not measured.
DEMO_SIZES = {(16, 1): 1.21e5, (16, 2): 1.33e5, (32, 1): 2.45e5, (32, 2): 2.66e5}
DEMO_LAW = {"E": 40.0, "A": 2000.0, "B": 400.0, "alpha": 0.5, "beta": 0.4}


def demo_like_table(
    *,
    sizes=DEMO_SIZES,
    hours=(0.05, 0.2),
    budgets=(5e10, 1.2e11, 3e11),
    seeds=(0,),
    k=1000.0,
    params=DEMO_LAW,
    R_star=5.0,
    loss_noise=0.01,
    mos_noise=0.05,
    seed=0,
) -> pd.DataFrame:
    """A table shaped like ``make demo``'s sweep (24 trials at one seed): axes width x n_layers x
    data_hours x compute_budget (x seed), D = C / (k N) audio seconds seen (repeating the unique data
    ``data_hours * 3600`` s, so the loss follows Approach 3 on Muennighoff et al.'s effective data with
    ``R_star``), val_nelbo with log-normal noise ``loss_noise``, dnsmos_ovrl a logistic of it plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for (w, depth), N in sizes.items():
        for h in hours:
            for C in budgets:
                for s in seeds:
                    D = C / (k * N)
                    Lt = laws.chinchilla(N, laws.effective_data(h * 3600.0, D, R_star), **params)
                    L = Lt * np.exp(rng.normal(0, loss_noise))
                    rows.append(
                        {
                            "trial": f"w{w}_l{depth}_h{h:g}_c{C:.2g}_s{s}",
                            "status": "finished",
                            "axis.width": w,
                            "axis.n_layers": depth,
                            "axis.data_hours": h,
                            "axis.compute_budget": C,
                            "axis.seed": s,
                            "N": float(N),
                            "D": float(D),
                            "C": float(C),
                            "data_hours": float(h),
                            "val_nelbo": float(L),
                            "dnsmos_ovrl": float(
                                laws.logistic(Lt, 1.3, 3.0, 0.15, 60.0) + rng.normal(0, mos_noise)
                            ),
                        }
                    )
    return pd.DataFrame(rows)
