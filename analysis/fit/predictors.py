"""The one registry of predictors: ``FitResult.law`` names an entry, ``FitResult.predict`` calls it.

Each predictor is ``f(params, meta, *x) -> prediction``: the fitted parameters, the law's constants from
``FitResult.meta`` (``x_ref``, the reference quality level) and the law's inputs. Every law any fit in
``analysis`` produces is listed here, the quality-level ("efficiency") and transfer laws of
``analysis.transfer`` included, so predicting never depends on which modules happen to be imported.
"""

from __future__ import annotations

import numpy as np

from analysis import laws


def _efficiency(p, m, N, D, level):
    """Approach 3 with the data of quality level q worth m[q] reference hours (``fit_efficiency``)."""
    mult = np.array([1.0 if str(q) == m["reference"] else p[f"m[{q}]"] for q in np.atleast_1d(level)])
    return laws.chinchilla(N, np.asarray(D, float) * mult, p["E"], p["A"], p["B"], p["alpha"], p["beta"])


def _transfer(p, m, DF, N):
    """Effective data transferred D_T = k * D_F^alpha_T * N^beta_T (``fit_transfer``)."""
    return (
        p["k"] * np.power(np.asarray(DF, float), p["alpha_T"]) * np.power(np.asarray(N, float), p["beta_T"])
    )


PREDICTORS = {
    "power_law": lambda p, m, x: laws.power_law(x, p["E"], p["A"], p["alpha"]),
    "chinchilla": lambda p, m, N, D: laws.chinchilla(N, D, p["E"], p["A"], p["B"], p["alpha"], p["beta"]),
    "data_constrained": lambda p, m, N, D, U: laws.chinchilla(
        N, laws.effective_data(U, D, p["R_star"]), p["E"], p["A"], p["B"], p["alpha"], p["beta"]
    ),
    "saturating": lambda p, m, x: laws.saturating(x, p["M"], p["A"], p["alpha"], m.get("x_ref", 1.0)),
    "logistic": lambda p, m, L: laws.logistic(L, p["floor"], p["ceiling"], p["k"], p["L0"]),
    # N_opt = N_coef * C^a and D_opt = D_coef * C^b (Approaches 1 and 2): predict returns (N_opt, D_opt)
    "allocation": lambda p, m, C: (
        p["N_coef"] * np.power(np.asarray(C, float), p["a"]),
        p["D_coef"] * np.power(np.asarray(C, float), p["b"]),
    ),
    "efficiency": _efficiency,
    "transfer": _transfer,
}
