"""What every fit returns (``FitResult``, built by ``fit_result``) or raises (``FitRefused``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.fit.predictors import PREDICTORS


class FitRefused(ValueError):
    """The data cannot support this fit. ``reason`` says why in words a user can act on."""

    def __init__(self, fit: str, reason: str):
        self.fit = fit
        self.reason = reason
        super().__init__(f"{fit}: {reason}")


@dataclass
class FitResult:
    name: str  # what was fitted, e.g. "approach3", "L(N) @ D=3600s"
    law: str  # key into PREDICTORS: which functional form ``params`` belong to
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]  # same keys as params, [low, high] at ``level``
    n_points: int
    residuals: dict[str, float]  # rmse / mae / max_abs of the residuals, and the space they are in
    level: float = 0.95
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # bootstrap draws per param
    meta: dict[str, Any] = field(default_factory=dict)  # law constants (x_ref), inputs, notes

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
        meta = {k: v for k, v in self.meta.items() if _jsonable(v)}
        return {
            "name": self.name,
            "law": self.law,
            "params": {k: float(v) for k, v in self.params.items()},
            "ci": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
            "level": self.level,
            "n_points": int(self.n_points),
            "n_boot": int(len(next(iter(self.samples.values())))) if self.samples else 0,
            "residuals": {
                k: (float(v) if isinstance(v, int | float | np.floating) else v)
                for k, v in self.residuals.items()
            },
            "meta": meta,
        }


def _jsonable(v) -> bool:
    return isinstance(v, str | int | float | bool | type(None)) or (
        isinstance(v, list | tuple) and all(isinstance(i, str | int | float) for i in v)
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
) -> FitResult:
    """The ``FitResult`` of a fit: percentile intervals at ``level`` from the bootstrap ``samples``, NaN
    intervals for every parameter when there are none (``n_boot`` 0, or every resample failed)."""
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
    )
