"""Input checks shared by the fits: turn columns into float arrays or refuse with a reason a user can act
on, and refuse fits whose optimum says the data did not determine them."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.fit.results import FitRefused
from analysis.verdict import BOUND_TOL, LEVEL_WORDS

DISTINCT_REL_TOL = 0.02  # values within 2 % are one level of an axis
FLAT_TERM_REL = 1e-4  # a power-law term moving the loss by less than this fraction is switched off


def check_inputs(
    fit: str,
    columns: dict[str, Any],
    *,
    min_points: int,
    positive: tuple[str, ...] = (),
    distinct: dict[str, int] | None = None,
    labels: Any = None,
) -> dict[str, np.ndarray]:
    """Turn columns into float arrays or refuse: NaN/inf, non-positive where logs are taken, too few
    points, too few distinct values (a single model size). ``labels`` (trial names) make the messages
    name the offending rows."""
    arrs = {k: np.asarray(v, dtype=float).ravel() for k, v in columns.items()}
    n = len(next(iter(arrs.values())))
    names = np.asarray(labels if labels is not None else [f"row {i}" for i in range(n)], dtype=object)
    for k, a in arrs.items():
        if len(a) != n:
            raise FitRefused(fit, f"column {k!r} has {len(a)} values, expected {n}")
        bad = ~np.isfinite(a)
        if bad.any():
            raise FitRefused(fit, f"{k!r} is NaN or infinite for {_few(names[bad])}")
    for k in positive:
        bad = arrs[k] <= 0
        if bad.any():
            raise FitRefused(
                fit, f"{k!r} must be positive (logs are taken) but is <= 0 for {_few(names[bad])}"
            )
    if n < min_points:
        raise FitRefused(fit, f"too few points: {n} (this fit needs at least {min_points})")
    for k, need in (distinct or {}).items():
        u = distinct_levels(arrs[k])
        what = f" ({LEVEL_WORDS[k]})" if k in LEVEL_WORDS else ""
        if len(u) == 1:
            raise FitRefused(
                fit, f"a single value of {k!r}{what} ({u[0]:.4g}): its exponent is not identifiable", (k,)
            )
        if len(u) < need:
            raise FitRefused(
                fit, f"only {len(u)} distinct values of {k!r}{what} (this fit needs at least {need})", (k,)
            )
    return arrs


def level_counts(arrs: dict[str, np.ndarray], *names: str) -> dict[str, int]:
    """Distinct levels (``distinct_levels``) of each named input: what the verdict's ``levels`` rule reads
    from ``FitResult.meta["levels"]``."""
    return {k: len(distinct_levels(arrs[k])) for k in names}


def distinct_levels(a, rel_tol: float = DISTINCT_REL_TOL) -> np.ndarray:
    """Distinct values of ``a`` where values within ``rel_tol`` of each other count as one level: a budget
    of 1e11 FLOPs run as 99.8 GFLOPs (whole steps) is the same budget, not a new point on the axis."""
    u = np.unique(np.asarray(a, dtype=float))
    if len(u) == 0:
        return u
    keep = [u[0]]
    for v in u[1:]:
        if abs(v - keep[-1]) > rel_tol * max(abs(keep[-1]), abs(v)):
            keep.append(v)
    return np.array(keep)


def refuse_at_bounds(
    fit: str, params: dict[str, float], bounds: dict[str, tuple[float, float]], needs: dict | None = None
) -> None:
    """Refuse a fit whose exponent ended on its search bound: the data did not determine it (for example
    alpha = 0 when loss does not fall with N over the trials), so any number printed would be an artefact.
    ``needs`` maps an exponent to the input more of would determine it (alpha: N)."""
    for k, (lo, hi) in bounds.items():
        v = params[k]
        if v <= lo + BOUND_TOL or v >= hi - BOUND_TOL:
            raise FitRefused(
                fit,
                f"{k} = {v:.3g} ended on its search bound [{lo:g}, {hi:g}]: the trials do not determine it "
                f"(the loss does not follow a power law in this variable over their range)",
                tuple((needs or {}).get(k, ())),
            )


def refuse_flat_term(fit: str, var: str, x, coef: float, expo: float, L) -> None:
    """Refuse when the fitted ``coef * x^-expo`` term changes the loss by a negligible amount over the
    trials' range of ``x`` (the optimiser switched the term off because loss does not fall with ``x``)."""
    x = np.asarray(x, dtype=float)
    span = coef * (np.min(x) ** -expo - np.max(x) ** -expo)
    if not span > FLAT_TERM_REL * float(np.median(L)):
        raise FitRefused(
            fit,
            f"the fitted {var} term changes the loss by {span:.3g} over the trials' {var} range "
            f"({np.min(x):.3g}..{np.max(x):.3g}): the loss does not fall with {var} over these trials",
            (var,),
        )


def _few(names) -> str:
    names = [str(x) for x in names]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
