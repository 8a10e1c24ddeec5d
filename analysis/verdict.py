"""Verdicts: whether the numbers of a fit (or an allocation) are results. The one home of the rules, their
limits, and the printing rules that keep an undetermined number from looking like an answer.

A fit is ``determined`` when none of these holds, ``undetermined`` (with every reason) otherwise:

- ``no_interval``: it has no bootstrap interval (``n_boot`` 0, or no resample converged): nothing says the
  data pin the parameters down.
- ``bound``: a parameter's value or interval reaches its search bound (within ``BOUND_TOL`` in the space the
  optimiser searches: log for E, A, B, R*): the optimum may lie beyond the bound, so the number is the
  bound's, not the data's.
- ``pinned``: a parameter sits on a search bound in more than ``AT_BOUND_SHARE_MAX`` of the converged
  resamples, whatever the interval level.
- ``wide``: an exponent's interval is wider than ``EXPONENT_WIDTH_MAX``.
- ``allocation``: an allocation exponent's interval (a: N_opt ~ C^a, b: D_opt ~ C^b) is not inside (0, 1):
  the data cannot tell whether N_opt (or D_opt) grows with compute at all.
- ``e_zero``: the irreducible loss E, or the low end of its interval, is below ``E_ZERO_REL`` of the
  smallest observed loss: the fit put all the loss into the power-law terms (E on 0).
- ``levels``: fewer distinct levels of an input (model sizes, data amounts, budgets) than the law has
  parameters along it plus ``SPARE_LEVELS``.

An allocation (``judge_allocation``) is undetermined when its fit is, or when one of its intervals contains
0 or is NaN. A fit that was refused (``FitRefused``) is undetermined with the refusal as its reason
(``refused_verdict``).

Printing rules: ``interval_text`` prints an interval that is not finite as "undetermined", never "nan";
``clean`` turns every non-finite number of an output (JSON, fits.json) into null.

This module imports nothing from ``analysis.fit`` (which imports it): it reads a result's ``law``,
``params``, ``ci``, ``samples``, ``bounds``, ``meta``, ``n_boot`` and ``level`` attributes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

# A value this close to a search bound, in the space the optimiser searches (log for scale parameters,
# linear for exponents), is "on the bound". 1e-3 is below any exponent the sweeps here can resolve and is
# 0.1 % in log space.
BOUND_TOL = 1e-3
# More than 10 % of the converged resamples on a bound makes the fit undetermined. At the default 95 %
# level a share above 2.5 % already pulls the interval onto the bound (rule ``bound``); this rule keeps the
# verdict the same when a user asks for narrower intervals (--level 0.5 would hide a 10 % pile-up).
AT_BOUND_SHARE_MAX = 0.10
# An exponent interval wider than 0.5 is not a result: published loss exponents are 0.05-0.5 (Kaplan et al.
# 2020, Hoffmann et al. 2022), so such an interval spans "barely scales" to "scales fast", and the
# allocation exponent a = beta / (alpha + beta) it implies is unconstrained.
EXPONENT_WIDTH_MAX = 0.5
# E below 1 % of the smallest observed loss is E on 0: the irreducible loss is where the loss stops
# falling, and no sweep here gets within 1 % of zero loss; a fit that puts it there has traded E against
# A and alpha (the demo's E = 5.7e-05 with loss near 70).
E_ZERO_REL = 0.01
# A law needs one distinct level more, along each input, than it has parameters along it: with exactly as
# many levels as parameters the curve passes through every level's mean and nothing tests its form.
SPARE_LEVELS = 1

# Exponents per law (the ``wide`` rule), allocation exponents (the ``allocation`` rule) and the number of
# parameters each law has along each input (the ``levels`` rule; "x" is the law's own input, meta["x"]).
EXPONENTS = {
    "chinchilla": ("alpha", "beta"),
    "data_constrained": ("alpha", "beta"),
    "efficiency": ("alpha", "beta"),
    "power_law": ("alpha",),
    "saturating": ("alpha",),
    "allocation": ("a", "b"),
    "transfer": ("alpha_T", "beta_T"),
}
ALLOCATION_EXPONENTS = {"chinchilla": ("a", "b"), "data_constrained": ("a", "b"), "allocation": ("a", "b")}
PARAMS_ALONG = {
    "chinchilla": {"N": 3, "D": 3},  # E, A, alpha along N; E, B, beta along D
    "data_constrained": {"N": 3, "D": 3},
    "efficiency": {"N": 3, "D": 3},
    "power_law": {"x": 3},
    "saturating": {"x": 3},
    "logistic": {"x": 4},
    # a line in log-log (slope and intercept) through the optimum of each budget (Approach 2: "C") or
    # through the envelope's model sizes (Approach 1: "N")
    "allocation": {"C": 2, "N": 2},
}
HAS_E = ("chinchilla", "data_constrained", "efficiency", "power_law")

# What each input's shortage asks the sweep for (``needs`` of a reason; ``next_runs`` turns it into axes).
LEVEL_WORDS = {"N": "model sizes", "D": "data amounts", "C": "compute budgets"}


class SearchBound(NamedTuple):
    """A parameter's search interval in its own units; ``log``: the optimiser searches log(value)."""

    lo: float
    hi: float
    log: bool = False

    def at(self, v) -> np.ndarray:
        """True where ``v`` is within ``BOUND_TOL`` of either end, in the searched space."""
        v = np.asarray(v, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.log(v) if self.log else v
            lo = math.log(self.lo) if self.log and self.lo > 0 else (-math.inf if self.log else self.lo)
            hi = math.log(self.hi) if self.log else self.hi
            return np.isfinite(s) & ((s <= lo + BOUND_TOL) | (s >= hi - BOUND_TOL))

    def reached(self, v) -> float | None:
        """The end of the interval ``v`` is on (``lo`` or ``hi``), or None."""
        if not bool(self.at(v)):
            return None
        s = math.log(v) if self.log and v > 0 else (-math.inf if self.log else v)
        lo = math.log(self.lo) if self.log and self.lo > 0 else (-math.inf if self.log else self.lo)
        return self.lo if s <= lo + BOUND_TOL else self.hi

    def to_list(self) -> list:
        return [clean(self.lo), clean(self.hi), "log" if self.log else "linear"]


@dataclass(frozen=True)
class Reason:
    """One reason a result is undetermined: a rule ``code``, the sentence a user reads, the parameter it
    concerns, which inputs more of would help (``needs``: "N", "D", "C", "seeds", "isoflop", ...), and a
    few words for a summary (``short``; the sentence when empty)."""

    code: str
    text: str
    param: str | None = None
    needs: tuple[str, ...] = ()
    short: str = ""

    @property
    def brief(self) -> str:
        return self.short or self.text

    def within(self, what: str) -> Reason:
        """The same reason, said of a part (``what``: "the Approach 3 fit", a step of a chain)."""
        return dataclasses.replace(self, text=f"{what}: {self.text}", short=f"{what}: {self.brief}")


@dataclass
class Verdict:
    verdict: str  # "determined" | "undetermined"
    reasons: list[Reason] = field(default_factory=list)
    at_bound_share: dict[str, float | None] = field(default_factory=dict)

    @property
    def determined(self) -> bool:
        return self.verdict == "determined"

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.reasons]

    @property
    def briefs(self) -> list[str]:
        return [r.brief for r in self.reasons]

    @property
    def needs(self) -> set[str]:
        return {n for r in self.reasons for n in r.needs}

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": self.texts,
            "at_bound_share": {k: clean(v) for k, v in self.at_bound_share.items()},
        }


def verdict_of(reasons: list[Reason], share=None) -> Verdict:
    """Determined when there is no reason against it."""
    return Verdict("undetermined" if reasons else "determined", list(reasons), dict(share or {}))


def refused_verdict(reason: str, needs: tuple[str, ...] = ()) -> Verdict:
    """The verdict of a fit that was refused: undetermined, the refusal its reason (the summary keeps the
    refusal's first clause)."""
    return Verdict("undetermined", [Reason("refused", reason, None, tuple(needs), first_clause(reason))])


def first_clause(reason: str, n: int = 110) -> str:
    """The first clause of a refusal, for a summary: its first "; "-separated part, without a leading
    "column=level: " label, up to the first ": " or " — " outside parentheses, at most ``n`` characters."""
    t = reason.split("; ")[0]
    head, sep, rest = t.partition(": ")
    if sep and "=" in head and " " not in head:
        t = rest
    depth, cut = 0, len(t)
    for i, ch in enumerate(t):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and (t.startswith(": ", i) or t.startswith(" — ", i)):
            cut = i
            break
    t = t[:cut]
    return t if len(t) <= n else t[: n - 1].rstrip() + "…"


def _needs(law: str, param: str, meta: dict) -> tuple[str, ...]:
    x = meta.get("x", "x")
    if law in ("power_law", "saturating"):
        return (x,) if x in LEVEL_WORDS else ("N", "C")
    if law == "allocation":
        return ("C",)
    if law == "logistic":
        return ("N", "C")  # a wider range of losses: larger models and budgets
    if param in ("alpha", "A"):
        return ("N",)
    if param in ("beta", "B", "R_star") or param.startswith("m["):
        return ("D",)
    return ("N", "D")


def judge_fit(fit) -> Verdict:
    """The verdict of one fit result (``analysis.fit.FitResult``), every rule of the module docstring."""
    law, p, ci, meta = fit.law, fit.params, fit.ci, fit.meta
    level = f"{round(fit.level * 100)}%"
    reasons: list[Reason] = []

    def add(code, text, short, param=None, needs=None):
        needs = _needs(law, param, meta) if needs is None else needs
        reasons.append(Reason(code, text, param, tuple(needs), short))

    def ci_of(k):
        return ci.get(k, (math.nan, math.nan))

    samples = {k: np.asarray(v, dtype=float) for k, v in (fit.samples or {}).items()}
    if not samples or len(next(iter(samples.values()))) == 0:
        why = (
            "no bootstrap was asked for (n_boot 0)"
            if not fit.n_boot
            else f"none of its {fit.n_boot} resamples converged"
        )
        add("no_interval", f"it has no intervals: {why}", "no intervals", None, ())
    share: dict[str, float | None] = {k: None for k in p}
    for k, b in (fit.bounds or {}).items():
        if k not in p:
            continue
        s = samples.get(k)
        s = s[np.isfinite(s)] if s is not None else np.zeros(0)
        share[k] = float(np.mean(b.at(s))) if len(s) else None
        lo, hi = ci_of(k)
        ends = [e for e in (b.reached(v) for v in (p[k], lo, hi) if np.isfinite(v)) if e is not None]
        if ends:
            add(
                "bound",
                f"{k} = {_g(p[k])}, {level} interval {interval_text(lo, hi)}, reaches its search bound {_g(ends[0])}",
                f"{k} on its search bound {_g(ends[0])}",
                k,
            )
        elif share[k] is not None and share[k] > AT_BOUND_SHARE_MAX:
            add(
                "pinned",
                f"{k} is on a search bound in {share[k]:.0%} of the converged resamples "
                f"(more than {AT_BOUND_SHARE_MAX:.0%})",
                f"{k} on a bound in {share[k]:.0%} of resamples",
                k,
            )
    for k in EXPONENTS.get(law, ()):
        lo, hi = ci_of(k)
        if np.isfinite(lo) and np.isfinite(hi) and hi - lo > EXPONENT_WIDTH_MAX:
            add(
                "wide",
                f"the {level} interval of the exponent {k}, {interval_text(lo, hi)}, is {hi - lo:.2g} wide "
                f"(limit {EXPONENT_WIDTH_MAX:g})",
                f"{k} interval {hi - lo:.2g} wide",
                k,
            )
    for k in ALLOCATION_EXPONENTS.get(law, ()):
        lo, hi = ci_of(k)
        if np.isfinite(lo) and np.isfinite(hi) and not (0.0 < lo and hi < 1.0):
            grows = "N_opt" if k == "a" else "D_opt"
            add(
                "allocation",
                f"the {level} interval of {k}, {interval_text(lo, hi)}, is not inside (0, 1): the trials "
                f"cannot tell whether {grows} grows with compute",
                f"{k} interval {interval_text(lo, hi)} not inside (0, 1)",
                k,
            )
    y_min = meta.get("y_min")
    if law in HAS_E and "E" in p and y_min is not None and np.isfinite(y_min) and y_min > 0:
        lo = ci_of("E")[0]
        floor = E_ZERO_REL * y_min
        if p["E"] < floor or (np.isfinite(lo) and lo < floor):
            add(
                "e_zero",
                f"E = {_g(p['E'])} with its {level} interval reaching down to {_g(lo)}: E is on 0 (below "
                f"{E_ZERO_REL:.0%} of the smallest observed loss, {_g(y_min)})",
                "E on 0",
                "E",
            )
    for var, n in (meta.get("levels") or {}).items():
        along = PARAMS_ALONG.get(law, {})
        need = along.get(var, along.get("x") if var == meta.get("x") else None)
        if need is not None and n < need + SPARE_LEVELS:
            what = LEVEL_WORDS.get(var, f"levels of {var}")
            add(
                "levels",
                f"only {n} distinct {what} ({var}); this law has {need} parameters along {var}, so a "
                f"determined fit needs at least {need + SPARE_LEVELS}",
                f"only {n} {what}",
                None,
                (var,),
            )
    for k, v in p.items():
        if not np.isfinite(v):
            add("bound", f"{k} is not a finite number", f"{k} not finite", k)
    return verdict_of(reasons, share)


def judge_allocation(fit_verdict: Verdict, out: dict[str, Any] | None = None) -> Verdict:
    """An allocation's verdict: its fit's reasons, then (given the allocation ``out``) each of N_opt, D_opt
    and the loss whose interval contains 0 (or less) or is NaN. The metric's interval is judged apart
    (``judge_interval``)."""
    reasons = [r.within("the Approach 3 fit") for r in fit_verdict.reasons]
    for k in ("N_opt", "D_opt", "loss") if out is not None else ():
        r = judge_interval(k, out.get(f"{k}_ci"), out.get("level", 0.9))
        if r is not None:
            reasons.append(r)
    return verdict_of(reasons)


def judge_interval(name: str, ci, level: float, *, positive: bool = True) -> Reason | None:
    """A reason when the interval ``ci`` is missing or not finite, or (a ``positive`` quantity) reaches 0."""
    lv = f"{round(level * 100)}%"
    if ci is None:
        return Reason("no_interval", f"{name} has no interval", name, ("N", "D"), f"no {name} interval")
    lo, hi = (float("nan") if v is None else float(v) for v in ci)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return Reason(
            "allocation",
            f"the {lv} interval of {name}, {interval_text(lo, hi)}, is not finite",
            name,
            ("N", "D"),
            f"{name} interval not finite",
        )
    if positive and lo <= 0:
        return Reason(
            "allocation",
            f"the {lv} interval of {name}, {interval_text(lo, hi)}, contains 0",
            name,
            ("N", "D"),
            f"{name} interval contains 0",
        )
    return None


# ----------------------------------------------------------------------------------------------------------
# printing


def _g(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{v:.4g}" if np.isfinite(v) else "undetermined"


def interval_text(lo, hi, level: float | None = None) -> str:
    """ "[lo, hi]" (with " at L%" when ``level`` is given), or "undetermined" when either end is missing or
    not finite: a NaN never reaches a reader."""
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return "undetermined"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    return f"[{lo:.4g}, {hi:.4g}]" + (f" at {round(level * 100)}%" if level is not None else "")


def clean(obj: Any) -> Any:
    """``obj`` with every NaN / infinite float replaced by None and numpy scalars and arrays made plain
    Python, recursively through dicts, lists and tuples: what every JSON output goes through."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [clean(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    return obj


# ----------------------------------------------------------------------------------------------------------
# what to run next

# Targets the suggestions aim at. N over 10x with 5 sizes: below that the N term moves the loss by a few
# per cent, comparable to seed noise (~3.5 %, Choshen et al. 2024), and E trades off against A and alpha;
# Chinchilla spans ~200x. Four budgets leave one level spare for the three-parameter L(C) and saturating laws.
TARGET_N_RANGE = 10.0
TARGET_SIZES = 5
TARGET_BUDGETS = 4
SIZE_AXES = ("width", "n_layers", "n_heads", "filter_channels", "filter_ratio", "model_size")
DATA_AXES = ("data_hours",)
BUDGET_AXES = ("compute_budget", "steps", "budget")


def _axes(table) -> dict[str, list]:
    out = {}
    for c in getattr(table, "columns", []):
        if str(c).startswith("axis."):
            vals = [v for v in table[c].dropna().unique().tolist()]
            try:
                vals = sorted(vals)
            except TypeError:
                vals = sorted(vals, key=str)
            out[str(c)[len("axis.") :]] = vals
    return out


def _vals(vs) -> str:
    return "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in vs) + "]"


def next_runs(needs, table) -> list[str]:
    """Sentences saying what to add to the sweep, in its own axes, for each of ``needs`` ("N", "D", "C",
    "seeds", "isoflop", "curves", "repeats"): the axis now, its values, and the target."""
    axes = _axes(table)
    out = []

    def axis_list(names):
        return " x ".join(f"{k} {_vals(axes[k])}" for k in names)

    if "N" in needs:
        size = [k for k in axes if k in SIZE_AXES or k.startswith("model.")]
        N = np.asarray(table["N"], float) if "N" in getattr(table, "columns", []) else np.zeros(0)
        N = N[np.isfinite(N) & (N > 0)]
        span = (
            f"N spans {N.max() / N.min():.2g}x ({N.min():.3g}..{N.max():.3g}) with {len(np.unique(N))} sizes"
            if len(N)
            else "N is not in the table"
        )
        how = (
            f"from {axis_list(size)}; add values to these axes"
            if size
            else "add a size axis (width, n_layers)"
        )
        met = len(N) and N.max() / N.min() >= TARGET_N_RANGE and len(np.unique(N)) >= TARGET_SIZES
        goal = (
            "beyond the largest: the range meets the target, but these laws need the loss's curvature in N"
            if met
            else f"until N spans at least {TARGET_N_RANGE:g}x with {TARGET_SIZES} or more sizes"
        )
        out.append(f"more model sizes over a wider N range ({span} {how} {goal})")
    if "D" in needs:
        data = [k for k in axes if k in DATA_AXES]
        now = f"now {axis_list(data)}" if data else "the sweep has no data_hours axis"
        out.append(f"more data amounts ({now}; D also grows with the budget axis)")
    if "C" in needs:
        bud = [k for k in axes if k in BUDGET_AXES]
        now = f"now {axis_list(bud)}" if bud else "the sweep has no compute_budget axis"
        out.append(f"more compute budgets ({now}; at least {TARGET_BUDGETS}, spanning 10x or more)")
    if "seeds" in needs:
        now = f"seed {_vals(axes['seed'])}" if "seed" in axes else "one seed"
        out.append(
            f"seed repeats ({now} now; `seeds: 3` repeats every point, or list a few `points` with other seeds) "
            "to measure seed-to-seed noise"
        )
    if "isoflop" in needs:
        out.append(
            "for Approach 2, IsoFLOP profiles (the sweep's `isoflop:` field: 3 or more sizes around the optimum "
            "at each budget)"
        )
    if "curves" in needs:
        out.append("for Approach 1, held-out curves in every trial (eval.eval_every)")
    if "repeats" in needs:
        out.append(
            "for the data-constrained law, trials that see their data more than once (smaller data_hours)"
        )
    return out
