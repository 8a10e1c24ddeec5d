"""Two-step prediction (issue 9): the (N, D) law of a smooth loss, then a monotone saturating map from that
loss to a quality metric, chained, with intervals from bootstrapping both steps together.

Step 1: ``fit_approach3`` on ``val_nelbo`` (the likelihood-based target: smooth in N, D, C; a GAN loss is
not). Step 2: ``fit_logistic`` metric = floor + (ceiling - floor) / (1 + exp(k (L - L0))), floor and
ceiling fitted inside the metric's natural bounds (1..5 for MOS predictors); refused when the metric is
not monotone in the loss over the trials. Chained: each bootstrap replicate resamples trials, refits both
steps on the same resample and predicts, so the interval carries the uncertainty of both fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis import laws
from analysis.fit.approaches import fit_approach3
from analysis.fit.checks import check_inputs
from analysis.fit.results import FitRefused, FitResult, percentile_ci
from analysis.fit.saturating import fit_logistic, logistic_search_bounds
from analysis.fit.solvers import (
    A3_GRID_COARSE,
    LBFGS_BOOT,
    a3_params,
    a3_solve,
    bootstrap_draws,
    bootstrap_weights,
    logistic_solve,
    single_threaded,
)
from analysis.verdict import Verdict, verdict_of

DEFAULT_LOSS = "val_nelbo"
DEFAULT_QUALITY = "dnsmos_ovrl"


def metric_bounds(metric: str) -> tuple[float | None, float | None]:
    """Natural range of a metric: MOS predictors live in 1..5; anything else is unbounded."""
    m = metric.lower()
    if "mos" in m:
        return (1.0, 5.0)
    return (None, None)


@dataclass
class TwoStep:
    step1: FitResult  # loss(N, D), Approach 3
    step2: FitResult  # metric(loss), logistic
    loss: str
    metric: str
    draws1: list[dict[str, float]] = field(default_factory=list, repr=False)  # joint bootstrap, step 1
    draws2: list[dict[str, float]] = field(default_factory=list, repr=False)  # same replicates, step 2
    chain_residuals: np.ndarray = field(
        default_factory=lambda: np.zeros(0), repr=False
    )  # metric - chain(N, D)

    def _chain(self, p1, p2, N, D):
        L = laws.chinchilla(N, D, p1["E"], p1["A"], p1["B"], p1["alpha"], p1["beta"])
        return L, laws.logistic(L, p2["floor"], p2["ceiling"], p2["k"], p2["L0"])

    def draws(self, N, D) -> tuple[np.ndarray, np.ndarray]:
        """(loss, metric) under every joint bootstrap replicate: each (n_boot, len(N))."""
        N = np.atleast_1d(np.asarray(N, float))
        D = np.atleast_1d(np.asarray(D, float))
        out = [self._chain(p1, p2, N, D) for p1, p2 in zip(self.draws1, self.draws2, strict=True)]
        if not out:
            out = [self._chain(self.step1.params, self.step2.params, N, D)]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def predict(self, N, D, *, level: float = 0.9) -> dict[str, Any]:
        """Predicted loss and metric at (N, D) with chained ``level`` intervals (confidence in the mean)."""
        N = np.atleast_1d(np.asarray(N, float))
        D = np.atleast_1d(np.asarray(D, float))
        L, y = self._chain(self.step1.params, self.step2.params, N, D)
        Ls, ys = self.draws(N, D)
        q = (1 - level) / 2
        return {
            "N": N,
            "D": D,
            "loss": L,
            "loss_low": np.nanquantile(Ls, q, axis=0),
            "loss_high": np.nanquantile(Ls, 1 - q, axis=0),
            "metric": y,
            "low": np.nanquantile(ys, q, axis=0),
            "high": np.nanquantile(ys, 1 - q, axis=0),
            "level": level,
        }

    def predict_budget(self, C, *, k: float, level: float = 0.9) -> dict[str, Any]:
        """Predicted loss and metric of the compute-optimal model at budget C (FLOPs), C = k N D: each
        replicate uses its own optimum, so the interval includes the uncertainty of the allocation."""
        C = np.atleast_1d(np.asarray(C, float))
        p1 = self.step1.params
        N0, D0 = laws.compute_optimal(C, p1["A"], p1["B"], p1["alpha"], p1["beta"], k)
        L, y = self._chain(p1, self.step2.params, N0, D0)
        Ls, ys = [], []
        for d1, d2 in zip(self.draws1, self.draws2, strict=True):
            n_, d_ = laws.compute_optimal(C, d1["A"], d1["B"], d1["alpha"], d1["beta"], k)
            l_, y_ = self._chain(d1, d2, n_, d_)
            Ls.append(l_)
            ys.append(y_)
        q = (1 - level) / 2
        Ls = np.stack(Ls) if Ls else L[None]
        ys = np.stack(ys) if ys else y[None]
        return {
            "C": C,
            "N": N0,
            "D": D0,
            "loss": L,
            "loss_low": np.nanquantile(Ls, q, axis=0),
            "loss_high": np.nanquantile(Ls, 1 - q, axis=0),
            "metric": y,
            "low": np.nanquantile(ys, q, axis=0),
            "high": np.nanquantile(ys, 1 - q, axis=0),
            "level": level,
        }

    def assess(self) -> Verdict:
        """Determined when both steps are (the chain is only as good as its weaker step)."""
        return verdict_of(
            [r.within(step.name) for step in (self.step1, self.step2) for r in step.assess().reasons]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "metric": self.metric,
            **self.assess().to_dict(),
            "step1": self.step1.to_dict(),
            "step2": self.step2.to_dict(),
            "n_boot": len(self.draws1),
            "chain_rmse": float(np.sqrt(np.mean(self.chain_residuals**2)))
            if len(self.chain_residuals)
            else None,
        }


@single_threaded
def fit_two_step(
    N,
    D,
    loss,
    metric,
    *,
    loss_name: str = DEFAULT_LOSS,
    metric_name: str = DEFAULT_QUALITY,
    bounds: tuple[float | None, float | None] | None = None,
    min_rank_corr: float = 0.6,
    n_boot: int = 200,
    seed: int = 0,
    labels=None,
) -> TwoStep:
    """Fit both steps on the same trials, then ``n_boot`` joint bootstrap replicates (resample trials,
    refit step 1 from its full-data optimum + a coarse grid, refit step 2 from its optimum)."""
    name = f"two-step {loss_name} -> {metric_name}"
    arr = check_inputs(
        name,
        {"N": N, "D": D, loss_name: loss, metric_name: metric},
        min_points=8,
        positive=("N", "D", loss_name),
        labels=labels,
    )
    bounds = metric_bounds(metric_name) if bounds is None else bounds
    s1 = fit_approach3(
        arr["N"], arr["D"], arr[loss_name], n_boot=0, labels=labels, name=f"approach3 {loss_name}"
    )
    s2 = fit_logistic(
        arr[loss_name],
        arr[metric_name],
        bounds=bounds,
        min_rank_corr=min_rank_corr,
        n_boot=0,
        labels=labels,
        name=f"{metric_name}({loss_name}) logistic",
        x_name=loss_name,
    )
    logN, logD, logL = np.log(arr["N"]), np.log(arr["D"]), np.log(arr[loss_name])
    th1 = np.array(s1.meta["theta"])
    th2 = np.array([s2.params[k] for k in ("floor", "ceiling", "k", "L0")])
    LL, yy = arr[loss_name], arr[metric_name]
    bnds = logistic_search_bounds(LL, bounds, np.sign(s2.params["k"]) or 1.0)

    def refit_both(rng):  # one joint replicate: the same resampled trials for both steps
        w = bootstrap_weights(rng, len(logL))
        if len(np.unique(logN[w > 0])) < 3 or len(np.unique(logD[w > 0])) < 3:
            return None
        _, t1 = a3_solve(
            logN, logD, logL, 1e-3, w, grid=A3_GRID_COARSE, n_refine=1, extra_starts=[th1], options=LBFGS_BOOT
        )
        _, t2 = logistic_solve(LL, yy, [th2], bnds, w)
        if t1 is None or t2 is None:
            return None
        return a3_params(t1), {"floor": t2[0], "ceiling": t2[1], "k": t2[2], "L0": t2[3]}

    pairs, n_failed = bootstrap_draws(n_boot, seed, refit_both)
    d1, d2 = [p[0] for p in pairs], [p[1] for p in pairs]
    for res, draws in ((s1, d1), (s2, d2)):
        res.n_boot, res.n_failed = n_boot, n_failed  # the joint replicates are both steps' resamples
        if draws:
            res.samples = {k: np.array([d[k] for d in draws]) for k in draws[0]}
            res.ci = percentile_ci(res.samples, res.level)
    ts = TwoStep(step1=s1, step2=s2, loss=loss_name, metric=metric_name, draws1=d1, draws2=d2)
    ts.chain_residuals = yy - ts._chain(s1.params, s2.params, arr["N"], arr["D"])[1]
    return ts


def two_step_from_table(table, metric: str = DEFAULT_QUALITY, loss: str = DEFAULT_LOSS, **kw) -> TwoStep:
    """``fit_two_step`` on a tidy table's ``N``, ``D``, loss and metric columns (finished trials)."""
    for col in ("N", "D", loss, metric):
        if col not in table.columns:
            raise FitRefused(f"two-step {loss} -> {metric}", f"the table has no column {col!r}")
    return fit_two_step(
        table["N"],
        table["D"],
        table[loss],
        table[metric],
        loss_name=loss,
        metric_name=metric,
        labels=table["trial"] if "trial" in table else None,
        **kw,
    )
