"""Approach 3 with its initialisation grid and 1000 bootstrap resamples on 250 points: wall time.

Goal (issue 6): under 60 s on 2 cores. Data: 250 Chinchilla-like synthetic points (Besiroglu et al. 2024
parameters, N 7e7..1.6e10, D 5e9..5e11, 1% noise). Prints the fit, its 95% intervals and the timings.

    .venv/bin/python bench/fit_bootstrap.py [--n-boot 1000] [--workers 2] [--full-grid]

``--full-grid`` also runs L-BFGS from every one of the 4500 grid starts (about 1.5 minutes) and prints how
far its optimum is from the vectorised-grid + best-16 refinement the fit uses.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from analysis import fit as F
from analysis import synthetic as S


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--points", type=int, default=250)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--full-grid", action="store_true")
    a = ap.parse_args()
    df = S.chinchilla_points(a.points, noise=0.01, seed=0)
    t0 = time.perf_counter()
    r0 = F.fit_approach3(df.N, df.D, df.L, n_boot=0)
    t_fit = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    r = F.fit_approach3(df.N, df.D, df.L, n_boot=a.n_boot, workers=a.workers)
    t_all, c_all = time.perf_counter() - t0, time.process_time() - c0
    print(f"points {a.points}, grid {len(F.A3_GRID)} starts (vectorised) + 16 L-BFGS refinements")
    print(f"full-data fit: {t_fit:.2f} s")
    print(
        f"fit + {a.n_boot} bootstrap resamples, {a.workers} worker(s): {t_all:.1f} s wall "
        f"({c_all:.1f} s CPU in the parent process)"
    )
    print(f"{'param':>6} {'true':>9} {'fit':>9} {'95% low':>9} {'95% high':>9}")
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        true = S.CHINCHILLA.get(k)
        if true is None:
            al, be = S.CHINCHILLA["alpha"], S.CHINCHILLA["beta"]
            true = be / (al + be) if k == "a" else al / (al + be)
        lo, hi = r.ci[k]
        print(f"{k:>6} {true:9.4g} {r.params[k]:9.4g} {lo:9.4g} {hi:9.4g}")
    print(f"bootstrap resamples that converged: {len(r.samples['E'])}/{a.n_boot}")
    assert abs(r0.params["alpha"] - r.params["alpha"]) < 1e-12
    if a.full_grid:
        logs = [np.log(df[c].to_numpy()) for c in ("N", "D", "L")]
        t0 = time.perf_counter()
        f_all, th_all = F.single_threaded(F._a3_refine)(list(F.A3_GRID), *logs, 1e-3)
        dt = time.perf_counter() - t0
        p = F._a3_params(th_all)
        print(
            f"L-BFGS from all {len(F.A3_GRID)} starts: {dt:.1f} s; objective {f_all:.10g} vs "
            f"{r0.residuals['objective']:.10g}; alpha {p['alpha']:.6f} vs {r0.params['alpha']:.6f}"
        )


if __name__ == "__main__":
    main()
