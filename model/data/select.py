"""Selection axes: a quality filter (``data.min_quality``) and a weighted mixture of corpora (``data.sources``).

``min_quality``: conditions on per-utterance scores (``quality.SCORES``) joined by ``and`` (or ``&``):
``"dnsmos_ovrl >= 3.2"``, ``"snr_db > 25 and transcript_absz <= 3"``. Operators ``>=``, ``>``, ``<=``,
``<``. A value is a number or ``pNN``, the NN-th percentile of that score over the corpus (so
``"dnsmos_ovrl >= p20"`` drops the worst fifth of any corpus). ``"default"`` stands for
``quality.DEFAULT_MIN_QUALITY``. An utterance whose score is NaN (DNSMOS of a silent clip) fails.

``sources``: ``{name: weight}`` over the names of ``data.corpora`` (``name -> path`` or ``"builtin"``);
weights are normalised. Item ids and speakers become ``<name>__<id>`` / ``<name>__<speaker>``.

How the training set is drawn (``select``):

1. Each corpus (the one ``data.corpus``, or every corpus in ``data.corpora`` for a mixture) is validated
   (cached) and, if a filter needs them, scored (cached per corpus, ``quality.py``).
2. Held-out set: per corpus, the ``val_utterances`` items with the smallest ``sha256(id)`` among those
   that pass ``val_min_quality`` (all items when unset). It depends neither on ``min_quality`` nor on
   the weights, so every (quality, mixture, hours) point of a sweep evaluates on the same set; a mixture
   holds out from every corpus in ``data.corpora`` (keep that map fixed across the sweep).
3. Training order per corpus: the rest sorted by ``sha256(f"{subset_seed}:{id}")`` (as ``subsets.py``),
   then filtered by ``min_quality`` (filtering keeps the order).
4. Pool: a single corpus offers its filtered hours; a mixture offers
   ``min over corpora of (filtered hours / weight)`` (the most it can draw at the stated proportions).
5. ``data_hours`` H (None: the whole pool): corpus c contributes the shortest prefix of its order that
   reaches ``H * w_c``. Prefixes of fixed orders are nested, so within one (quality, mixture) level the
   subset for H1 is contained in the subset for H2 > H1; each corpus overshoots its share by at most one
   utterance, so realised proportions are within a few percent of the weights once H is tens of
   utterances long. H above the pool raises ``NotEnoughDataError`` naming the pool size.
"""

from __future__ import annotations

import copy
import math
import operator
import re
from dataclasses import dataclass, field, replace

import numpy as np

from model.config import ConfigError
from model.data.manifest import ManifestItem
from model.data.quality import DEFAULT_MIN_QUALITY, SCORES, attach, groups_for, score_corpus
from model.data.sources import data_section, default_workers, load_validated_manifest
from model.data.subsets import NotEnoughDataError, nested_subset, split

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_COND = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*(p\d+(?:\.\d*)?|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_SPLIT = re.compile(r"\s+and\s+|\s*&&?\s*", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SEP = "__"


@dataclass(frozen=True)
class Condition:
    score: str
    op: str
    value: float | None  # a number, or None when ``percentile`` is set
    percentile: float | None = None

    def __str__(self) -> str:
        v = f"p{self.percentile:g}" if self.percentile is not None else f"{self.value:g}"
        return f"{self.score} {self.op} {v}"

    def threshold(self, column: np.ndarray) -> float:
        if self.percentile is None:
            return float(self.value)
        finite = column[np.isfinite(column)]
        return float(np.percentile(finite, self.percentile)) if finite.size else math.nan


def parse_quality(expr: str, where: str = "data.min_quality") -> list[Condition]:
    """Parse a quality filter strictly; ``ConfigError`` naming ``where`` and the allowed scores."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"{where}: expected a condition like 'dnsmos_ovrl >= 3.2', got {expr!r}")
    text = DEFAULT_MIN_QUALITY if expr.strip() == "default" else expr
    out = []
    for part in _SPLIT.split(text.strip()):
        m = _COND.match(part)
        if m is None:
            raise ConfigError(
                f"{where}: cannot parse {part!r} in {expr!r}: expected '<score> <op> <number or pNN>' with op "
                "one of >=, >, <=, < (e.g. 'dnsmos_ovrl >= 3.2'; join conditions with 'and')"
            )
        name, op, val = m.groups()
        if name not in SCORES:
            raise ConfigError(f"{where}: unknown score {name!r} in {expr!r} (allowed: {', '.join(SCORES)})")
        if val.startswith("p"):
            pct = float(val[1:])
            if not 0 <= pct <= 100:
                raise ConfigError(f"{where}: percentile {val!r} in {expr!r} must be p0..p100")
            out.append(Condition(name, op, None, pct))
        else:
            out.append(Condition(name, op, float(val)))
    return out


def _names_ok(d) -> None:
    for name, spec in (d.corpora or {}).items():
        if not _NAME.match(str(name)):
            raise ConfigError(f"data.corpora: corpus name {name!r} must be letters, digits, '_' or '-'")
        if not isinstance(spec, str) or not spec:
            raise ConfigError(f"data.corpora.{name}: expected a path or 'builtin', got {spec!r}")


def source_weights(d) -> dict[str, float]:
    """Normalised weights of ``data.sources`` (checked against ``data.corpora``)."""
    src = d.sources
    if not isinstance(src, dict) or not src:
        raise ConfigError(f"data.sources: expected a mapping of corpus name to weight, got {src!r}")
    _names_ok(d)
    known = sorted(d.corpora or {})
    for name, w in src.items():
        if name not in (d.corpora or {}):
            have = f"data.corpora defines: {', '.join(known)}" if known else "data.corpora is empty"
            raise ConfigError(f"data.sources: unknown corpus {name!r} ({have})")
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"data.sources.{name}: weight must be a number >= 0, got {w!r}")
    total = float(sum(src.values()))
    if total <= 0:
        raise ConfigError(f"data.sources: weights must not all be 0 ({src})")
    return {k: float(v) / total for k, v in sorted(src.items()) if v > 0}


def check_selection(d) -> None:
    """Cheap checks of the selection fields (no corpus is read): for sweep validation before launch."""
    d = getattr(d, "data", d)
    if d.min_quality is not None:
        parse_quality(d.min_quality, "data.min_quality")
    if d.val_min_quality is not None:
        parse_quality(d.val_min_quality, "data.val_min_quality")
    if d.sources is not None:
        source_weights(d)
    elif d.corpora:
        _names_ok(d)


def needs_selection(d) -> bool:
    return d.min_quality is not None or d.val_min_quality is not None or d.sources is not None


# ----------------------------------------------------------------------------------------------------


@dataclass
class SourcePool:
    name: str  # "" for a single corpus
    weight: float
    items: list[ManifestItem]  # every validated item (ids prefixed for a mixture)
    heldout: list[ManifestItem]
    pool: list[ManifestItem]  # training candidates after the filter, in the seeded order
    unfiltered_hours: float
    train: list[ManifestItem] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return sum(i.duration for i in self.pool) / 3600


@dataclass
class Selection:
    sources: list[SourcePool]
    pool_hours: float  # the most data_hours this (quality, mixture) level can draw
    data_hours: float | None
    infos: list  # CorpusInfo per source
    reports: list
    manifest_dirs: list

    @property
    def train(self) -> list[ManifestItem]:
        return [i for s in self.sources for i in s.train]

    @property
    def heldout(self) -> list[ManifestItem]:
        return [i for s in self.sources for i in s.heldout]

    @property
    def manifest(self) -> list[ManifestItem]:
        return [i for s in self.sources for i in s.items]

    def summary(self) -> dict:
        train_h = sum(i.duration for i in self.train) / 3600
        return {
            "corpora": {
                (s.name or "corpus"): str(i.path) for s, i in zip(self.sources, self.infos, strict=True)
            },
            "pool_hours": round(self.pool_hours, 6),
            "data_hours": round(train_h, 6),
            "sources": {
                (s.name or "corpus"): {
                    "weight": round(s.weight, 6),
                    "hours": round(s.unfiltered_hours, 6),
                    "pass_hours": round(s.hours, 6),
                    "pass_items": len(s.pool),
                    "train_hours": round(sum(i.duration for i in s.train) / 3600, 6),
                    "share": round(sum(i.duration for i in s.train) / 3600 / train_h, 6) if train_h else 0.0,
                    "heldout": len(s.heldout),
                }
                for s in self.sources
            },
        }


def _corpus_cfg(d, spec: str):
    kw = {"sources": None, "min_quality": None, "val_min_quality": None}
    if spec == "builtin":
        return replace(d, corpus="builtin", **kw)
    fmt = d.corpus_format if d.corpus_format not in ("builtin",) else "auto"
    return replace(d, corpus=spec, corpus_format=fmt, **kw)


def _passes(conds: list[Condition], thresholds: list[float], scores: dict) -> bool:
    for c, t in zip(conds, thresholds, strict=True):
        v = scores.get(c.score, math.nan)
        if not (math.isfinite(v) and math.isfinite(t) and OPS[c.op](v, t)):
            return False
    return True


def _filter(items: list[ManifestItem], conds: list[Condition], table) -> list[ManifestItem]:
    if not conds:
        return list(items)
    ths = [c.threshold(table.column(c.score)) for c in conds]
    return [i for i in items if _passes(conds, ths, table.scores[i.id])]


def _prefixed(items: list[ManifestItem], name: str) -> dict[str, ManifestItem]:
    out = {}
    for i in items:
        j = copy.copy(i)
        j.extras = dict(i.extras, corpus=name) if name else dict(i.extras)
        if name:
            j.id, j.speaker = f"{name}{SEP}{i.id}", f"{name}{SEP}{i.speaker}"
        out[i.id] = j
    return out


def select(d, *, progress: bool = False, workers: int | None = None) -> Selection:
    """Held-out set and training subset of a config: one corpus is one source of weight 1 (no scores are
    computed unless a filter needs them), a mixture one source per corpus of ``data.corpora``."""
    d = data_section(d)
    conds = parse_quality(d.min_quality, "data.min_quality") if d.min_quality is not None else []
    vconds = parse_quality(d.val_min_quality, "data.val_min_quality") if d.val_min_quality else []
    if d.sources is not None:
        weights = source_weights(d)
        names = sorted(d.corpora)  # every named corpus holds out (fixed across mixture levels)
        specs = [(n, d.corpora[n], weights.get(n, 0.0)) for n in names]
    else:
        specs = [("", d.corpus, 1.0)]
    groups = groups_for([c.score for c in conds + vconds])
    w = workers or default_workers(d)
    sources, infos, reports, mdirs = [], [], [], []
    for name, spec, weight in specs:
        cd = _corpus_cfg(d, spec) if name else d
        info, items, report, mdir = load_validated_manifest(cd, progress=progress, workers=workers)
        infos.append(info)
        reports.append(report)
        mdirs.append(mdir)
        table = None
        if groups:
            table = score_corpus(items, d.cache_dir, groups=groups, workers=w, progress=progress)
            attach(items, table)
        # held-out: fixed per corpus, from the items passing val_min_quality
        cand = _filter(items, vconds, table)
        if (name or vconds) and d.val_utterances >= len(cand):  # a single corpus: split's own message
            where = f"corpus {name!r} ({info.path})" if name else str(info.path)
            raise NotEnoughDataError(
                f"data.val_utterances={d.val_utterances} but {where} has only {len(cand)} usable utterances"
                + (f" passing data.val_min_quality {d.val_min_quality!r}" if vconds else "")
            )
        sp = split(items, d.val_utterances, d.subset_seed, eligible=cand)
        order, held = sp.train_pool, sp.heldout
        unfiltered = sp.available_hours
        kept = _filter(order, conds, table)
        pre = _prefixed(items, name)
        sources.append(
            SourcePool(
                name,
                weight,
                [pre[i.id] for i in items],
                [pre[i.id] for i in held],
                [pre[i.id] for i in kept],
                unfiltered,
            )
        )
    pool_hours = draw(sources, d.data_hours, what_selects(d))
    return Selection(sources, pool_hours, d.data_hours, infos, reports, mdirs)


def draw(sources: list[SourcePool], hours: float | None, what: str = "") -> float:
    """Fill each source's ``train`` with its nested share of ``hours`` (None: the whole pool); returns
    the pool size in hours (``min(hours_c / weight_c)`` over sources with weight > 0)."""
    active = [s for s in sources if s.weight > 0]
    if not active:
        raise ValueError("no source with a weight > 0")
    pool_hours = min(s.hours / s.weight for s in active)
    plain = len(sources) == 1 and not sources[0].name and not what  # one unfiltered corpus
    if hours is not None and not plain:
        if not hours > 0:
            raise ValueError(f"data.data_hours must be > 0, got {hours}")
        if hours > pool_hours * (1 + 1e-9):
            raise NotEnoughDataError(pool_message(what, hours, pool_hours, active))
    if plain:  # nested_subset checks the hours and names what the corpus offers
        sources[0].train = nested_subset(sources[0].pool, hours)
        return pool_hours
    target = pool_hours if hours is None else hours
    for s in sources:
        share = min(target * s.weight, s.hours)  # min(): float guard at the pool limit
        s.train = nested_subset(s.pool, share) if share > 0 else []
    return pool_hours


def what_selects(d) -> str:
    """The selection fields of ``d`` in words, for error messages ("" when nothing is selected)."""
    what = []
    if d.min_quality is not None:
        what.append(f"min_quality {d.min_quality!r}")
    if d.sources is not None:
        what.append(f"sources {d.sources}")
    return ", ".join(what)


def pool_message(what: str, hours: float, pool: float, active: list[SourcePool]) -> str:
    """Why ``hours`` of training audio cannot be drawn from a pool of ``pool`` hours, per source."""
    per = "; ".join(
        f"{s.name or 'corpus'}: {s.hours:.4f} h of {s.unfiltered_hours:.4f} h pass"
        + (f", weight {s.weight:.3g}" if s.name else "")
        for s in active
    )
    return (
        f"data.data_hours={hours:g} but the pool ({what or 'whole corpus'}) holds only {pool:.4f} h of training "
        f"audio ({per}; held-out sets excluded)"
    )


def filter_passing(items: list[ManifestItem], expr: str, table) -> set[str]:
    """Ids of ``items`` that pass the quality expression ``expr`` under ``table`` (percentiles over ``items``)."""
    conds = parse_quality(expr, "min_quality")
    missing = sorted({c.score for c in conds} - set(table.names))
    if missing:
        raise ValueError(f"min_quality {expr!r} needs scores that were not computed: {', '.join(missing)}")
    return {i.id for i in _filter(items, conds, table)}
