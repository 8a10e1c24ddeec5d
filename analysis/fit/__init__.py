"""Scaling-law fits with bootstrap intervals, on plain arrays. Every fit returns a ``FitResult`` (parameters,
intervals, residual statistics, number of points) or raises ``FitRefused`` naming why the data cannot
support it (too few points, a single size, NaN / infinite values, non-positive values).

Fits:
- ``fit_power_law``: L(x) = E + A x^-alpha (L(N) per data size, L(D) per size, the L(C) frontier).
- ``fit_approach3``: Chinchilla Approach 3, L(N, D) = E + A/N^alpha + B/D^beta, Huber loss (delta 1e-3) on
  log residuals in the log-sum-exp parametrisation, L-BFGS from a grid of initialisations, bootstrap CIs.
- ``fit_approach2``: IsoFLOP profiles -> N_opt(C), D_opt(C) power laws.
- ``fit_approach1``: the minimum-loss envelope of training curves -> N_opt(C), D_opt(C) power laws.
- ``fit_data_constrained``: Approach 3 with Muennighoff et al. 2023 effective data for repeated epochs.
- ``fit_saturating``: y = M - A (x/x_ref)^-alpha for bounded quality metrics (MOS vs compute).
- ``fit_logistic``: the monotone loss -> metric map used by ``analysis.predict``.

Modules, lowest first: ``predictors`` (the ``PREDICTORS`` registry, every law), ``results`` (``FitResult``,
``FitRefused``, the ``fit_result`` builder), ``checks`` (input checks and refusals), ``solvers`` (Approach 3
and logistic solvers, the bootstrap loop, residual statistics), then one module per family of fits:
``single``, ``saturating``, ``approaches``, ``data_constrained``. This package re-exports their public names.
"""

from __future__ import annotations

from analysis.fit.approaches import (
    bootstrap_thetas,
    fit_approach1,
    fit_approach2,
    fit_approach3,
    group_budgets,
)
from analysis.fit.checks import (
    BOUND_TOL,
    DISTINCT_REL_TOL,
    FLAT_TERM_REL,
    check_inputs,
    distinct_levels,
    refuse_at_bounds,
    refuse_flat_term,
)
from analysis.fit.data_constrained import fit_data_constrained
from analysis.fit.predictors import PREDICTORS
from analysis.fit.results import FitRefused, FitResult, fit_result, percentile_ci
from analysis.fit.saturating import fit_logistic, fit_saturating
from analysis.fit.single import PL_ALPHA_BOUNDS, fit_frontier, fit_power_law, pareto_frontier
from analysis.fit.solvers import (
    A3_BOUNDS,
    A3_GRID,
    A3_GRID_COARSE,
    LBFGS_BOOT,
    LBFGS_OPTIONS,
    a3_grid_values,
    a3_objective,
    a3_params,
    a3_refine,
    a3_solve,
    bootstrap_draws,
    bootstrap_refit,
    bootstrap_weights,
    lbfgs_best,
    logistic_solve,
    residual_stats,
    single_threaded,
)

# The solvers' names before they were public. tests/test_analysis_fit.py and bench/fit_bootstrap.py still
# reach them as attributes of this module (``F._a3_solve``); new code imports the public names above.
_a3_solve = a3_solve
_a3_refine = a3_refine
_a3_params = a3_params

__all__ = [
    "A3_BOUNDS",
    "A3_GRID",
    "A3_GRID_COARSE",
    "BOUND_TOL",
    "DISTINCT_REL_TOL",
    "FLAT_TERM_REL",
    "LBFGS_BOOT",
    "LBFGS_OPTIONS",
    "PL_ALPHA_BOUNDS",
    "PREDICTORS",
    "FitRefused",
    "FitResult",
    "a3_grid_values",
    "a3_objective",
    "a3_params",
    "a3_refine",
    "a3_solve",
    "bootstrap_draws",
    "bootstrap_refit",
    "bootstrap_thetas",
    "bootstrap_weights",
    "check_inputs",
    "distinct_levels",
    "fit_approach1",
    "fit_approach2",
    "fit_approach3",
    "fit_data_constrained",
    "fit_frontier",
    "fit_logistic",
    "fit_power_law",
    "fit_result",
    "fit_saturating",
    "group_budgets",
    "lbfgs_best",
    "logistic_solve",
    "pareto_frontier",
    "percentile_ci",
    "refuse_at_bounds",
    "refuse_flat_term",
    "residual_stats",
    "single_threaded",
]
