"""Issue 10's fits on synthetic tables: the data-efficiency multiplier of a quality level and the
Hernandez et al. 2021 transfer law D_T = k D_F^alpha N^beta recover the values the tables were made from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import laws
from analysis import synthetic as S
from analysis.fit import FitRefused
from analysis.transfer import fit_efficiency, fit_transfer, split_pretrained

P = S.VITS_LIKE


def test_efficiency_multiplier_recovered_with_interval():
    rng = np.random.default_rng(0)
    rows = []
    for q, m in (("all", 1.0), ("dnsmos>=3.2", 2.5)):
        for N in np.geomspace(1e6, 6.4e7, 5):
            for h in (0.5, 1, 2, 4, 8):
                D = h * 3600.0
                rows.append((q, N, D, laws.chinchilla(N, m * D, **P) * np.exp(rng.normal(0, 0.005))))
    q, N, D, L = map(np.array, zip(*rows, strict=True))
    r = fit_efficiency(N, D, L, q, reference="all", n_boot=40)
    assert abs(r.params["m[dnsmos>=3.2]"] / 2.5 - 1) < 0.15
    lo, hi = r.ci["m[dnsmos>=3.2]"]
    assert lo <= 2.5 <= hi and lo > 1.0  # the filtered hour is worth more, and the interval says so
    assert r.predict(N[:1], D[:1], np.array(["all"])) == pytest.approx(
        laws.chinchilla(N[0], D[0], **P), rel=0.03
    )
    with pytest.raises(FitRefused, match="single quality level"):
        fit_efficiency(N, D, L, np.full(len(N), "all"), n_boot=0)


def test_transfer_law_recovered():
    rng = np.random.default_rng(1)
    k, aT, bT = 10.0, 0.4, 0.3
    scratch, ft = [], []
    for N in np.geomspace(1e6, 6.4e7, 5):
        for h in (0.5, 1, 2, 4, 8, 16):
            D = h * 3600.0
            scratch.append((N, D, laws.chinchilla(N, D, **P) * np.exp(rng.normal(0, 0.002)), 0.0))
            DT = k * D**aT * N**bT
            ft.append((N, D, laws.chinchilla(N, D + DT, **P) * np.exp(rng.normal(0, 0.002)), 100.0))
    t = pd.DataFrame(scratch + ft, columns=["N", "D", "L", "pretrain_hours"])
    s, f = split_pretrained(t)
    assert len(s) == len(f) == 30
    r = fit_transfer(s, f, n_boot=30)
    assert abs(r.params["alpha_T"] - aT) < 0.08 and abs(r.params["beta_T"] - bT) < 0.08
    assert 0.3 < r.params["k"] / k < 3.0
    assert r.ci["alpha_T"][0] <= aT <= r.ci["alpha_T"][1]
    with pytest.raises(FitRefused, match="no column 'pretrain_hours'"):
        split_pretrained(t.drop(columns="pretrain_hours"))
    worse = f.assign(L=f["L"] * 3.0)  # pretraining that hurts: no effective data transferred
    with pytest.raises(FitRefused, match="gain effective data"):
        fit_transfer(s, worse, n_boot=0)


def test_report_includes_transfer_fit_and_plot(tmp_path):
    from analysis.report import write_report

    rng = np.random.default_rng(2)
    rows = []
    for i, N in enumerate(np.geomspace(1e6, 6.4e7, 4)):
        for h in (0.5, 1, 2, 4, 8):
            D = h * 3600.0
            for pre in (0.0, 100.0):
                DT = 10.0 * D**0.4 * N**0.3 if pre else 0.0
                L = laws.chinchilla(N, D + DT, **P) * np.exp(rng.normal(0, 0.002))
                rows.append(
                    {
                        "trial": f"{i}-{h}-{pre:g}",
                        "N": N,
                        "D": D,
                        "C": 40 * N * D,
                        "data_hours": h,
                        "pretrain_hours": pre,
                        "val_nelbo": L,
                    }
                )
    write_report(pd.DataFrame(rows), tmp_path, n_boot=6, quality=None, exact_count=False)
    html = (tmp_path / "report.html").read_text()
    assert "<h3>transfer</h3>" in html and (tmp_path / "pretrain_vs_scratch.png").stat().st_size > 5000
