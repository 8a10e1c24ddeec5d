"""Chinchilla's three approaches to the compute-optimal allocation (Hoffmann et al. 2022).

- ``fit_approach3``: L(N, D) = E + A/N^alpha + B/D^beta, Huber loss (delta 1e-3) on log residuals in the
  log-sum-exp parametrisation, L-BFGS from a grid of initialisations, bootstrap CIs.
- ``fit_approach2``: IsoFLOP profiles -> N_opt(C), D_opt(C) power laws.
- ``fit_approach1``: the minimum-loss envelope of training curves -> N_opt(C), D_opt(C) power laws.
"""

from __future__ import annotations

import numpy as np

from analysis import laws
from analysis.fit.checks import (
    check_inputs,
    distinct_levels,
    level_counts,
    refuse_at_bounds,
    refuse_flat_term,
)
from analysis.fit.results import FitRefused, FitResult, fit_result
from analysis.fit.single import pareto_frontier
from analysis.fit.solvers import (
    A3_BOUNDS,
    A3_GRID_COARSE,
    A3_PARAM_BOUNDS,
    LBFGS_BOOT,
    a3_params,
    a3_solve,
    bootstrap_refit,
    bootstrap_weights,
    residual_stats,
    single_threaded,
)

# ----------------------------------------------------------------------------------------------------------
# Approach 3


@single_threaded
def _a3_boot_chunk(args):
    seeds, logN, logD, logL, delta, theta0 = args
    out = []
    for seed in seeds:
        w = bootstrap_weights(np.random.default_rng(seed), len(logN))
        f, th = a3_solve(
            logN,
            logD,
            logL,
            delta,
            w,
            grid=A3_GRID_COARSE,
            n_refine=1,
            extra_starts=[theta0],
            options=LBFGS_BOOT,
        )
        out.append(th if th is not None else np.full(5, np.nan))
    return out


def bootstrap_thetas(worker, logN, logD, logL, delta, theta0, n_boot, seed, workers):
    seeds = np.random.SeedSequence(seed).generate_state(n_boot).tolist()
    if workers <= 1 or n_boot < 2 * workers:
        return np.array(worker((seeds, logN, logD, logL, delta, theta0)))
    from concurrent.futures import ProcessPoolExecutor

    chunks = [seeds[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(worker, [(c, logN, logD, logL, delta, theta0) for c in chunks]))
    return np.array([t for p in parts for t in p])


@single_threaded
def fit_approach3(
    N,
    D,
    L,
    *,
    delta: float = 1e-3,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    n_refine: int = 16,
    workers: int = 1,
    labels=None,
    name: str = "approach3",
) -> FitResult:
    """Chinchilla Approach 3: L(N, D) = E + A/N^alpha + B/D^beta.

    Minimises sum Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L) with L-BFGS-B (analytic
    gradient) from the 4500-point initialisation grid of Hoffmann et al. / Besiroglu et al. (evaluated
    vectorised; the best ``n_refine`` starts are refined). Intervals: ``n_boot`` bootstrap resamples of the
    points, each refitted from the full-data optimum and the best point of a coarse 32-point grid; percentile
    intervals over the resamples whose refit converged (the others are counted in ``n_failed``).

    Check of the machinery: Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") refit
    Chinchilla's data to E=1.82, A=482, B=2085, alpha=0.35, beta=0.37. Their data cannot be downloaded
    here, so ``tests/test_analysis_fit.py`` generates ~250 points from those parameters over Chinchilla's
    ranges (N 7e7..1.6e10, D 5e9..5e11) with 1% log-normal noise and recovers them (alpha, beta within
    0.03; E within 0.1; intervals covering the truth); ``bench/fit_bootstrap.py`` times it.
    """
    x = check_inputs(
        name,
        {"N": N, "D": D, "L": L},
        min_points=8,
        positive=("N", "D", "L"),
        distinct={"N": 3, "D": 3},
        labels=labels,
    )
    logN, logD, logL = np.log(x["N"]), np.log(x["D"]), np.log(x["L"])
    f, theta = a3_solve(logN, logD, logL, delta, n_refine=n_refine)
    if theta is None:
        raise FitRefused(name, "L-BFGS failed from every initialisation")
    params = a3_params(theta)
    refuse_at_bounds(
        name, params, {"alpha": A3_BOUNDS[3], "beta": A3_BOUNDS[4]}, {"alpha": ("N",), "beta": ("D",)}
    )
    refuse_flat_term(name, "N", x["N"], params["A"], params["alpha"], x["L"])
    refuse_flat_term(name, "D", x["D"], params["B"], params["beta"], x["L"])
    samples: dict[str, np.ndarray] = {}
    n_failed = 0
    if n_boot > 0:
        thetas = bootstrap_thetas(_a3_boot_chunk, logN, logD, logL, delta, theta, n_boot, seed, workers)
        ps = [a3_params(t) for t in thetas if np.all(np.isfinite(t))]
        n_failed = n_boot - len(ps)
        samples = {k: np.array([p[k] for p in ps]) for k in params} if ps else {}
    r = np.log(laws.chinchilla(x["N"], x["D"], *(params[k] for k in ("E", "A", "B", "alpha", "beta")))) - logL
    return fit_result(
        name,
        "chinchilla",
        params,
        samples,
        level=level,
        n_points=len(logL),
        residuals={**residual_stats(r, "log"), "objective": f},
        meta={
            "delta": delta,
            "theta": [float(t) for t in theta],
            "levels": level_counts(x, "N", "D"),
            "y_min": float(x["L"].min()),
        },
        n_boot=n_boot,
        n_failed=n_failed,
        bounds=A3_PARAM_BOUNDS,
    )


# ----------------------------------------------------------------------------------------------------------
# Approaches 1 and 2: N_opt(C), D_opt(C)


def _loglin(lc, ly):
    """Least-squares line ly = c0 + slope * lc; returns (slope, c0)."""
    slope, c0 = np.polyfit(lc, ly, 1)
    return float(slope), float(c0)


def _allocation_result(name, C, Nopt, Dopt, boot, level, n_points, meta) -> FitResult:
    """The N_opt(C), D_opt(C) lines through the optimum points; ``boot`` = (n_boot, samples, n_failed)."""
    n_boot, samples, n_failed = boot
    lc = np.log(C)
    a, cN = _loglin(lc, np.log(Nopt))
    b, cD = _loglin(lc, np.log(Dopt))
    params = {"a": a, "b": b, "N_coef": float(np.exp(cN)), "D_coef": float(np.exp(cD))}
    rN = np.log(Nopt) - (cN + a * lc)
    rD = np.log(Dopt) - (cD + b * lc)
    res = {**residual_stats(rN, "log N_opt"), "rmse_log_D_opt": float(np.sqrt(np.mean(rD**2)))}
    return fit_result(
        name,
        "allocation",
        params,
        samples,
        level=level,
        n_points=n_points,
        residuals=res,
        meta=meta,
        n_boot=n_boot,
        n_failed=n_failed,
    )


def group_budgets(C, tol_dex: float = 0.1) -> np.ndarray:
    """Label trials by compute budget: sorted log10 C, a new group wherever the gap exceeds ``tol_dex``."""
    lc = np.log10(np.asarray(C, float))
    order = np.argsort(lc)
    labels = np.empty(len(lc), dtype=int)
    g = 0
    for j, i in enumerate(order):
        if j > 0 and lc[i] - lc[order[j - 1]] > tol_dex:
            g += 1
        labels[i] = g
    return labels


def _isoflop_minima(N, D, C, L, groups, w=None):
    """Per budget: parabola of L in log N; returns list of (C_g, N_opt, D_opt, detail)."""
    out, notes = [], {}
    for g in np.unique(groups):
        m = groups == g
        if w is not None:
            m = m & (w > 0)
        Cg = float(np.median(C[m])) if m.any() else float(np.median(C[groups == g]))
        lx = np.log(N[m])
        if len(np.unique(lx)) < 3:
            notes[f"{Cg:.3g}"] = f"only {len(np.unique(lx))} model sizes at this budget (need 3)"
            continue
        ww = None if w is None else w[m]
        p2, p1, p0 = np.polyfit(lx, L[m], 2, w=None if ww is None else np.sqrt(ww))
        if p2 <= 0:
            notes[f"{Cg:.3g}"] = "loss is not convex in log N at this budget (no minimum)"
            continue
        x_star = -p1 / (2 * p2)
        if not (lx.min() <= x_star <= lx.max()):
            notes[f"{Cg:.3g}"] = "the parabola's minimum lies outside the sampled model sizes"
            continue
        k = float(np.median(C[m] / (N[m] * D[m])))
        N_opt = float(np.exp(x_star))
        out.append(
            (
                Cg,
                N_opt,
                Cg / (k * N_opt),
                {"p": [float(p2), float(p1), float(p0)], "L_min": float(p0 - p1**2 / (4 * p2))},
            )
        )
    return out, notes


@single_threaded
def fit_approach2(
    N, D, C, L, *, budgets=None, n_boot=200, level=0.95, seed=0, labels=None, name="approach2"
) -> FitResult:
    """Chinchilla Approach 2 (IsoFLOP profiles): trials grouped by compute budget (``budgets`` labels, else
    ``group_budgets(C)``); per budget a parabola of loss in log N gives N_opt; D_opt = C / (k N_opt) with
    k = median C/(N D) of that budget's trials (6 for an LM; measured here). Then N_opt = N_coef C^a and
    D_opt = D_coef C^b by least squares in log-log. Budgets whose parabola has no interior minimum are left
    out with the reason (``meta['skipped']``). Bootstrap: resample trials within each budget."""
    arr = check_inputs(
        name,
        {"N": N, "D": D, "C": C, "L": L},
        min_points=6,
        positive=("N", "D", "C"),
        distinct={"N": 3},
        labels=labels,
    )
    groups = np.asarray(budgets) if budgets is not None else group_budgets(arr["C"])
    _, groups = np.unique(groups, return_inverse=True)
    minima, notes = _isoflop_minima(arr["N"], arr["D"], arr["C"], arr["L"], groups)
    if len(minima) < 2:
        why = "; ".join(f"C={k}: {v}" for k, v in notes.items())
        raise FitRefused(
            name,
            f"only {len(minima)} budgets with an interior IsoFLOP minimum (need 2)"
            + (f" — {why}" if why else ""),
            ("isoflop",),
        )
    Cs, Ns, Ds = (np.array([m[i] for m in minima]) for i in range(3))

    def within_budgets(rng):  # resample the trials of each budget separately
        w = np.zeros(len(groups))
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            w[idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)))
        return w

    def refit(w):
        mb, _ = _isoflop_minima(arr["N"], arr["D"], arr["C"], arr["L"], groups, w)
        if len(mb) < 2:
            return None
        c, n_, d_ = (np.array([m[i] for m in mb]) for i in range(3))
        a, cN = _loglin(np.log(c), np.log(n_))
        b, cD = _loglin(np.log(c), np.log(d_))
        return {"a": a, "b": b, "N_coef": np.exp(cN), "D_coef": np.exp(cD)}

    samples, n_failed = bootstrap_refit(len(groups), n_boot, seed, refit, draw=within_budgets)
    meta = {
        "C_opt": Cs.tolist(),
        "N_opt": Ns.tolist(),
        "D_opt": Ds.tolist(),
        "L_min": [m[3]["L_min"] for m in minima],
        "parabolas": [m[3]["p"] for m in minima],
        "skipped": [f"C={k}: {v}" for k, v in notes.items()],
        "groups": groups.tolist(),
        "levels": {"C": len(minima)},
    }
    return _allocation_result(name, Cs, Ns, Ds, (n_boot, samples, n_failed), level, len(arr["L"]), meta)


def _envelope(curves, c_grid):
    """Minimum loss over curves at each compute in c_grid. curves: list of (N, logC[], logL[], logD[]).
    Returns (c, N_opt, D_opt, L_min) for grid points covered by at least one curve."""
    rows = []
    for lc in c_grid:
        best = None
        for N, lcs, lls, lds in curves:
            if lcs[0] <= lc <= lcs[-1]:
                ll = np.interp(lc, lcs, lls)
                if best is None or ll < best[0]:
                    best = (ll, N, np.interp(lc, lcs, lds))
        if best is not None:
            rows.append((np.exp(lc), best[1], np.exp(best[2]), np.exp(best[0])))
    return rows


@single_threaded
def fit_approach1(curves, *, n_grid=40, n_boot=200, level=0.95, seed=0, name="approach1") -> FitResult:
    """Chinchilla Approach 1: the minimum-loss envelope over all training curves as a function of FLOPs.

    ``curves``: a DataFrame with columns ``trial``, ``N``, ``C`` (cumulative FLOPs), ``D`` (data seen) and
    ``L`` — one row per logged evaluation (``analysis.table.curves``). Each curve is interpolated in
    (log C, log L); at ``n_grid`` log-spaced budgets the lowest curve gives N_opt (its N) and D_opt (its data
    seen at that compute). Then N_opt = N_coef C^a, D_opt = D_coef C^b. A table of final points only (one
    row per trial) gives the Pareto frontier of trials as the envelope. Bootstrap: resample whole curves."""
    import pandas as pd

    df = pd.DataFrame(curves)
    missing = [c for c in ("trial", "N", "C", "D", "L") if c not in df.columns]
    if missing:
        raise FitRefused(name, f"curves table lacks columns {missing}")
    check_inputs(
        name,
        {k: df[k] for k in ("N", "C", "D", "L")},
        min_points=4,
        positive=("N", "C", "D", "L"),
        labels=df["trial"],
    )
    per = []
    for t, g in df.groupby("trial", sort=False):
        g = g.sort_values("C").drop_duplicates("C")
        per.append(
            (
                t,
                float(g["N"].iloc[0]),
                np.log(g["C"].to_numpy()),
                np.log(g["L"].to_numpy()),
                np.log(g["D"].to_numpy()),
            )
        )
    if len({p[1] for p in per}) < 2:
        raise FitRefused(name, "a single model size: the envelope cannot say how N_opt moves with C")
    single = all(len(p[2]) == 1 for p in per)

    def envelope_of(sel):
        if single:
            C = np.array([np.exp(p[2][0]) for p in sel])
            L = np.array([np.exp(p[3][0]) for p in sel])
            idx = pareto_frontier(C, L)
            return [(C[i], sel[i][1], np.exp(sel[i][4][0]), L[i]) for i in idx]
        lo = min(p[2][0] for p in sel)
        hi = max(p[2][-1] for p in sel)
        return _envelope([p[1:] for p in sel if len(p[2]) > 1], np.linspace(lo, hi, n_grid))

    def fit_env(env, sel):
        # an envelope point won by the smallest or largest sampled size (or, from final points only, at the
        # smallest or largest sampled data) is truncated by the sampled range: the optimum may lie beyond
        # it, so it is left out
        n_lo, n_hi = min(p[1] for p in sel), max(p[1] for p in sel)
        env = [e for e in env if n_lo < e[1] < n_hi]
        if single:
            ds = [np.exp(p[4][0]) for p in sel]
            env = [e for e in env if min(ds) < e[2] < max(ds)]
        if len(env) < 3 or len(distinct_levels([e[1] for e in env])) < 3:
            return None  # a power law N_opt(C) through fewer than 3 sizes is not identified
        C, Nn, Dd, Lm = (np.array([e[i] for e in env]) for i in range(4))
        return C, Nn, Dd, Lm

    full = fit_env(envelope_of(per), per)
    if full is None:
        raise FitRefused(
            name,
            "fewer than 3 points of the minimum-loss envelope lie inside the sampled sizes"
            + (
                " and data amounts (final points only: log metric histories for real curves)"
                if single
                else ""
            )
            + ", or fewer than 3 model sizes are on it",
            ("curves", "N") if single else ("N",),
        )
    C, Nn, Dd, Lm = full

    def whole_curves(rng):
        return [per[i] for i in rng.integers(0, len(per), len(per))]

    def refit(sel):
        fb = fit_env(envelope_of(sel), sel)
        if fb is None:
            return None
        a, cN = _loglin(np.log(fb[0]), np.log(fb[1]))
        b, cD = _loglin(np.log(fb[0]), np.log(fb[2]))
        return {"a": a, "b": b, "N_coef": np.exp(cN), "D_coef": np.exp(cD)}

    samples, n_failed = bootstrap_refit(len(per), n_boot, seed, refit, draw=whole_curves)
    meta = {
        "C_env": C.tolist(),
        "N_env": Nn.tolist(),
        "D_env": Dd.tolist(),
        "L_env": Lm.tolist(),
        "from_final_points": single,
        "levels": {"N": len(distinct_levels(Nn))},
    }
    return _allocation_result(name, C, Nn, Dd, (n_boot, samples, n_failed), level, len(df), meta)
