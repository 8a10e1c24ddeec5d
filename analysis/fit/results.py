"""What every fit returns (``FitResult``, built by ``fit_result``) or raises (``FitRefused``). A result
carries its verdict (``analysis.verdict``): whether its numbers are results, and why not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis import verdict as V
from analysis.fit.predictors import PREDICTORS


class FitRefused(ValueError):
    """The data cannot support this fit. ``reason`` says why in words a user can act on; ``needs`` names
    what more of would help ("N", "D", "C", "seeds", "isoflop", "curves"; see ``analysis.verdict``)."""

    def __init__(self, fit: str, reason: str, needs: tuple[str, ...] = ()):
        self.fit = fit
        self.reason = reason
        self.needs = tuple(needs)
        super().__init__(f"{fit}: {reason}")

    def verdict(self) -> V.Verdict:
        return V.refused_verdict(self.reason, self.needs)


@dataclass
class FitResult:
    name: str  # what was fitted, e.g. "approach3", "L(N) @ D=3600s"
    law: str  # key into PREDICTORS: which functional form ``params`` belong to
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]  # same keys as params, [low, high] at ``level``
    n_points: int
    residuals: dict[str, float]  # rmse / mae / max_abs of the residuals, and the space they are in
    level: float = 0.95
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # converged resamples per param
    meta: dict[str, Any] = field(default_factory=dict)  # law constants (x_ref), inputs, levels, y_min, notes
    n_boot: int = 0  # resamples asked for; ``n_converged`` of them gave the intervals, ``n_failed`` did not
    n_failed: int = 0
    bounds: dict[str, V.SearchBound] = field(default_factory=dict)  # search interval per searched parameter

    @property
    def n_converged(self) -> int:
        return len(next(iter(self.samples.values()))) if self.samples else 0

    def assess(self) -> V.Verdict:
        """The verdict on the current params, intervals and resamples (``analysis.verdict.judge_fit``)."""
        return V.judge_fit(self)

    @property
    def verdict(self) -> str:
        return self.assess().verdict

    @property
    def reasons(self) -> list[str]:
        return self.assess().texts

    @property
    def at_bound_share(self) -> dict[str, float | None]:
        return self.assess().at_bound_share

    def predict(self, *x, params: dict[str, float] | None = None) -> np.ndarray:
        return PREDICTORS[self.law](params or self.params, self.meta, *x)

    def predict_samples(self, *x) -> np.ndarray:
        """Predictions under every bootstrap draw: shape (n_boot, len(x))."""
        if not self.samples:
            return np.asarray(self.predict(*x), dtype=float)[None]
        keys = list(self.samples)
        n = len(self.samples[keys[0]])
        return np.stack([self.predict(*x, params={k: self.samples[k][i] for k in keys}) for i in range(n)])

    def interval(self, *x, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        s = self.predict_samples(*x)
        q = (1 - level) / 2
        return np.nanquantile(s, q, axis=0), np.nanquantile(s, 1 - q, axis=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: no NaN anywhere (an interval that is not finite is [null, null], and the verdict's
        reasons say why)."""
        meta = {k: v for k, v in self.meta.items() if _jsonable(v)}
        v = self.assess()
        return V.clean(
            {
                "name": self.name,
                "law": self.law,
                **v.to_dict(),
                "params": {k: float(x) for k, x in self.params.items()},
                "ci": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
                "level": self.level,
                "n_points": int(self.n_points),
                "n_boot": int(self.n_boot),
                "n_converged": self.n_converged,
                "n_failed": int(self.n_failed),
                "bounds": {k: b.to_list() for k, b in self.bounds.items()},
                "residuals": {
                    k: (float(x) if isinstance(x, int | float | np.floating) else x)
                    for k, x in self.residuals.items()
                },
                "meta": meta,
            }
        )


def _jsonable(v) -> bool:
    return (
        isinstance(v, str | int | float | bool | type(None))
        or (isinstance(v, list | tuple) and all(isinstance(i, str | int | float) for i in v))
        or (isinstance(v, dict) and all(isinstance(i, str | int | float) for i in v.values()))
    )


def percentile_ci(samples: dict[str, np.ndarray], level: float) -> dict[str, tuple[float, float]]:
    q = (1 - level) / 2
    out = {}
    for k, s in samples.items():
        s = np.asarray(s, dtype=float)
        s = s[np.isfinite(s)]
        out[k] = (float(np.quantile(s, q)), float(np.quantile(s, 1 - q))) if len(s) else (np.nan, np.nan)
    return out


def fit_result(
    name: str,
    law: str,
    params: dict[str, float],
    samples: dict[str, np.ndarray],
    *,
    level: float,
    n_points: int,
    residuals: dict[str, Any],
    meta: dict[str, Any],
    n_boot: int = 0,
    n_failed: int = 0,
    bounds: dict[str, V.SearchBound] | None = None,
) -> FitResult:
    """The ``FitResult`` of a fit: percentile intervals at ``level`` from the converged bootstrap
    ``samples`` (``n_boot`` asked, ``n_failed`` of them failed or did not converge and are not among the
    samples), NaN intervals for every parameter when there are none (the verdict then says so and nothing
    prints the NaN). ``bounds``: the optimiser's search interval per parameter, for the verdict."""
    return FitResult(
        name=name,
        law=law,
        params=params,
        ci=percentile_ci(samples, level) if samples else {k: (np.nan, np.nan) for k in params},
        n_points=n_points,
        residuals=residuals,
        level=level,
        samples=samples,
        meta=meta,
        n_boot=int(n_boot),
        n_failed=int(n_failed),
        bounds=dict(bounds or {}),
    )
