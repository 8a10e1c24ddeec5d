"""Reports over a corpus's quality scores (``quality.py`` computes them): the per-utterance table
(``table_rows``/``write_table``), score distributions and, for the built-in corpus, the share of each kind
of known damage (``degradations.tsv``) that a filter lets through (``summarize``)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from model.data.files import atomic_write_text
from model.data.manifest import ManifestItem
from model.data.quality import QualityTable
from model.data.select import filter_passing


def read_degradations(corpus_path: str | Path) -> dict[str, tuple[str, str]]:
    """``{id: (kind, parameter)}`` from ``degradations.tsv`` beside a built-in corpus's listing ({} if none)."""
    p = Path(corpus_path)
    d = p if p.is_dir() else p.parent
    f = d / "degradations.tsv"
    if not f.is_file():
        return {}
    out = {}
    for n, line in enumerate(f.read_text(encoding="utf-8").splitlines()[1:], 2):
        if line.strip():
            parts = line.split("\t")
            if len(parts) != 3:
                raise ValueError(f"{f}:{n}: expected id<TAB>kind<TAB>parameter, got {line!r}")
            out[parts[0]] = (parts[1], parts[2])
    return out


def table_rows(
    items: list[ManifestItem], table: QualityTable, degradations: dict[str, tuple[str, str]] | None = None
) -> list[dict]:
    """One dict per utterance: id, speaker, duration, degradation kind/parameter, every score."""
    degradations = degradations or {}
    names = table.names
    out = []
    for i in sorted(items, key=lambda x: x.id):
        kind, param = degradations.get(i.id, ("clean" if degradations else "", ""))
        row = {"id": i.id, "speaker": i.speaker, "duration": round(i.duration, 4)}
        if degradations:
            row.update(degradation=kind, parameter=param)
        row.update({n: table.scores[i.id].get(n, math.nan) for n in names})
        out.append(row)
    return out


def write_table(path: str | Path, rows: list[dict]) -> None:
    """Per-utterance table as TSV (``.tsv``) or CSV (``.csv``), written atomically."""
    path = Path(path)
    if path.suffix not in (".tsv", ".csv"):
        raise ValueError(f"{path}: the quality table must be .tsv or .csv")
    buf = io.StringIO()
    w = csv.DictWriter(
        buf,
        fieldnames=list(rows[0]) if rows else ["id"],
        delimiter="\t" if path.suffix == ".tsv" else ",",
        lineterminator="\n",
    )
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())


PERCENTILES = (5, 25, 50, 75, 95)


def distribution(values: np.ndarray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    out = {
        "n": int(v.size),
        "nan": int(values.size - v.size),
        "mean": float(v.mean()) if v.size else math.nan,
    }
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(v, p)) if v.size else math.nan
    return out


def summarize(
    items: list[ManifestItem],
    table: QualityTable,
    degradations: dict[str, tuple[str, str]] | None = None,
    min_quality: str = "default",
) -> dict:
    """Distributions per score, and per degradation kind the mean scores and the share passing ``min_quality``."""
    ids = [i.id for i in items]
    out: dict = {
        "utterances": len(items),
        "scores": {n: distribution(table.column(n, ids)) for n in table.names},
        "min_quality": min_quality,
    }
    try:
        passing = filter_passing(items, min_quality, table)
        out["pass_fraction"] = len(passing) / len(items) if items else math.nan
    except ValueError as e:  # e.g. a DNSMOS condition while only the signal scores were computed
        passing = None
        out["pass_error"] = str(e)
    if degradations:
        kinds: dict[str, list[str]] = {}
        for uid in ids:
            kinds.setdefault(degradations.get(uid, ("clean", ""))[0], []).append(uid)
        out["by_kind"] = {}
        for kind in ["clean", *sorted(k for k in kinds if k != "clean")]:
            kid = kinds.get(kind, [])
            if not kid:
                continue
            row = {"n": len(kid)}
            row.update({n: float(np.nanmean(table.column(n, kid))) for n in table.names})
            if passing is not None:
                row["pass_fraction"] = sum(1 for u in kid if u in passing) / len(kid)
            out["by_kind"][kind] = row
    return out
