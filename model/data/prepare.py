"""One entry point for the trainer: ``prepare_data(cfg) -> PreparedData``.

Steps (each cached and safe to run from several trials at once):
1. Resolve the corpus: ``data.corpus == "builtin"`` builds (or reuses) the built-in corpus under
   ``data.corpus_dir``; otherwise a directory or ``esd.list`` in ``esd``/``jsut``/``jvs`` layout.
2. Validate it into a manifest (``validate.py``); the result, the dropped list (``dropped.tsv``) and a
   report are stored under ``<cache_dir>/manifests/<digest of the listing and the checks>/``, so later
   trials skip the audio scan. The corpus itself is never written to.
3. Split: the fixed held-out set (``data.val_utterances``) and the nested training subset of
   ``data.data_hours`` (``subsets.py``).
4. Fill the feature cache for the training subset and the held-out set (``cache.py``).
5. Return datasets, the speaker map and loaders with seeded, resumable batch order.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch.utils.data import DataLoader

from model.data.cache import FeatureCache, PrepareStats
from model.data.corpus import read_corpus
from model.data.dataset import BucketBatchSampler, TTSDataset, collate
from model.data.files import atomic_write_text, file_lock
from model.data.manifest import ManifestItem, fingerprint, load_manifest, save_manifest
from model.data.subsets import nested_subset, split
from model.data.validate import DataValidationError, Dropped, ValidationReport, validate

VALIDATION_VERSION = 1
KNOWN_RATES = {"jsut": 48000, "jvs": 24000}


@dataclass
class CorpusInfo:
    path: Path  # directory or esd.list that was read
    format: str
    builtin: dict | None = None  # stamp of the built-in corpus when it was used


@dataclass
class PreparedData:
    cfg: object  # DataConfig
    corpus: CorpusInfo
    manifest: list[ManifestItem]
    train_items: list[ManifestItem]
    val_items: list[ManifestItem]
    spk2id: dict[str, int]
    available_hours: float  # training pool (everything but the held-out set)
    report: ValidationReport
    stats: PrepareStats
    cache: FeatureCache
    style_dim: int = 256
    manifest_dir: Path | None = None
    selection: dict | None = None  # quality filter / mixture summary (select.py), None without them
    _datasets: dict = field(default_factory=dict, repr=False)

    @property
    def data_hours(self) -> float:
        """Unique hours of audio in the training subset."""
        return sum(i.duration for i in self.train_items) / 3600

    @property
    def train(self) -> TTSDataset:
        return self._dataset("train")

    @property
    def val(self) -> TTSDataset:
        return self._dataset("val")

    def _dataset(self, split_name: str) -> TTSDataset:
        if split_name not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split_name!r}")
        if split_name not in self._datasets:
            items = self.train_items if split_name == "train" else self.val_items
            self._datasets[split_name] = TTSDataset(
                self.cache, items, self.spk2id, add_blank=self.cfg.add_blank, use_bert=self.cfg.use_bert
            )
        return self._datasets[split_name]

    def sampler(self, batch_size: int, seed: int = 0, epoch: int = 0, skip_batches: int = 0, **kw):
        return BucketBatchSampler(self.train.lengths, batch_size, seed, epoch, skip_batches, **kw)

    def batches_per_epoch(self, batch_size: int, **kw) -> int:
        return len(self.sampler(batch_size, **kw))

    def collate(self, batch: list[dict]) -> dict:
        return collate(batch, self.cfg.bert_dim, self.style_dim)

    def make_loader(
        self,
        split: str = "train",
        batch_size: int = 2,
        seed: int = 0,
        epoch: int = 0,
        skip_batches: int = 0,
        num_workers: int | None = None,
        **sampler_kw,
    ) -> DataLoader:
        """Train: seeded bucketed batches of epoch ``epoch`` minus the first ``skip_batches``.
        Val: the held-out set in a fixed order (id order), last batch possibly short."""
        ds = self._dataset(split)
        if split == "train":
            batches = self.sampler(batch_size, seed, epoch, skip_batches, **sampler_kw)
        else:
            batches = [list(range(s, min(s + batch_size, len(ds)))) for s in range(0, len(ds), batch_size)]
        nw = self.cfg.num_workers if num_workers is None else num_workers
        return DataLoader(ds, batch_sampler=batches, collate_fn=self.collate, num_workers=nw)

    def summary(self) -> dict:
        return {
            "corpus": str(self.corpus.path),
            "format": self.corpus.format,
            "utterances": len(self.manifest),
            "dropped": len(self.report.dropped),
            "speakers": len(self.spk2id),
            "available_hours": round(self.available_hours, 4),
            "data_hours": round(self.data_hours, 4),
            "train_utterances": len(self.train_items),
            "val_utterances": len(self.val_items),
            "features_computed": self.stats.computed,
            "audio_computed": self.stats.audio_computed,
            "audio_reused": self.stats.audio_reused,
            "text_computed": self.stats.text_computed,
            "text_reused": self.stats.text_reused,
            "audio_cache": self.stats.audio_dir,
            "text_cache": self.stats.text_dir,
            "manifest_dir": str(self.manifest_dir) if self.manifest_dir else None,
            "selection": self.selection,
        }


def _data_cfg(cfg):
    return cfg.data if hasattr(cfg, "data") and hasattr(cfg, "model") else cfg


def default_workers(d) -> int:
    return d.prepare_workers or max(1, min(4, os.cpu_count() or 1))


def builtin_dir(d) -> Path:
    degrade = f"-degrade{d.builtin_degrade:g}-dseed{d.builtin_degrade_seed}" if d.builtin_degrade else ""
    return Path(d.corpus_dir) / (
        f"builtin-{d.builtin_hours:g}h-seed{d.builtin_seed}-{d.sampling_rate}hz-{d.builtin_speakers}spk"
        + degrade
    )


def resolve_corpus(cfg, *, progress: bool = False, workers: int | None = None) -> CorpusInfo:
    """Find (or build, for ``builtin``) the corpus a config names."""
    d = _data_cfg(cfg)
    if d.corpus == "builtin" or d.corpus_format == "builtin":
        from model.data.builtin import build_builtin_corpus

        out = builtin_dir(d) if d.corpus == "builtin" else Path(d.corpus)
        b = build_builtin_corpus(
            out,
            d.builtin_hours,
            seed=d.builtin_seed,
            sample_rate=d.sampling_rate,
            speakers=d.builtin_speakers,
            workers=workers or default_workers(d),
            progress=progress,
            degrade=d.builtin_degrade,
            degrade_seed=d.builtin_degrade_seed,
        )
        stamp = json.loads((b.dir / "builtin.json").read_text())
        return CorpusInfo(b.esd_list, "esd", stamp)
    p = Path(d.corpus)
    if not p.exists():
        raise FileNotFoundError(f"data.corpus: {p} does not exist (use 'builtin' for the offline corpus)")
    from model.data.corpus import detect_format

    fmt = detect_format(p) if d.corpus_format == "auto" else d.corpus_format
    return CorpusInfo(p, fmt)


def _listing_digest(info: CorpusInfo, raw, problems, d) -> str:
    h = hashlib.sha256()
    from model.text.g2p import FRONTEND_VERSION

    h.update(
        json.dumps(
            [
                VALIDATION_VERSION,
                FRONTEND_VERSION,
                str(Path(info.path).resolve()),
                info.format,
                d.min_duration_s,
                d.max_duration_s,
                d.sampling_rate if info.builtin else None,
            ]
        ).encode()
    )
    for r in raw:
        try:
            st = os.stat(r.path)
            sig = (st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        h.update(json.dumps([r.id, r.speaker, r.text, r.path, r.source, sig], ensure_ascii=False).encode())
    h.update(json.dumps(problems, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def load_validated_manifest(
    cfg, *, progress: bool = False, workers: int | None = None
) -> tuple[CorpusInfo, list[ManifestItem], ValidationReport, Path]:
    """Resolve, read and validate the corpus (cached); strict mode raises on the first bad item."""
    d = _data_cfg(cfg)
    info = resolve_corpus(d, progress=progress, workers=workers)
    raw, problems = read_corpus(info.path, info.format, strict=d.strict)
    name = Path(info.path).parent.name if Path(info.path).is_file() else Path(info.path).name
    mdir = Path(d.cache_dir) / "manifests" / f"{name}-{_listing_digest(info, raw, problems, d)}"
    with file_lock(Path(d.cache_dir) / "manifests" / f".{mdir.name}.lock"):
        if (mdir / "report.json").is_file():
            rep = json.loads((mdir / "report.json").read_text(encoding="utf-8"))
            report = ValidationReport(
                rep["total"],
                rep["kept"],
                rep["expected_sample_rate"],
                [Dropped(**x) for x in rep["dropped_items"]],
            )
            items = load_manifest(mdir / "manifest.jsonl")
        else:
            expected = (info.builtin or {}).get("sample_rate") or KNOWN_RATES.get(info.format)
            items, report = validate(
                raw,
                problems,
                min_duration=d.min_duration_s,
                max_duration=d.max_duration_s,
                expected_sample_rate=expected,
                strict=False,
                workers=workers or default_workers(d),
            )
            mdir.mkdir(parents=True, exist_ok=True)
            save_manifest(items, mdir / "manifest.jsonl")
            report.write(mdir / "dropped.tsv")
            rep = dict(report.to_dict(), dropped_items=[x.__dict__ for x in report.dropped])
            atomic_write_text(mdir / "report.json", json.dumps(rep, indent=1, ensure_ascii=False))
    if d.strict and report.dropped:
        first = report.dropped[0]
        more = (
            f" (and {len(report.dropped) - 1} more; see {mdir / 'dropped.tsv'})"
            if len(report.dropped) > 1
            else ""
        )
        raise DataValidationError(f"{first.source}: {first.id or '?'}: {first.reason}{more}")
    if not items:
        raise DataValidationError(f"{info.path}: no usable utterances (see {mdir / 'dropped.tsv'})")
    return info, items, report, mdir


def speaker_map(items: list[ManifestItem], d) -> dict[str, int]:
    speakers = sorted({i.speaker for i in items})
    if d.spk2id:
        missing = [s for s in speakers if s not in d.spk2id]
        if missing:
            raise ValueError(f"data.spk2id has no id for speaker(s) {missing[:5]} of the corpus")
        spk2id = dict(d.spk2id)
    else:
        spk2id = {s: k for k, s in enumerate(speakers)}
    top = max(spk2id.values()) + 1
    if top > d.n_speakers:
        raise ValueError(f"the corpus needs {top} speaker ids but data.n_speakers is {d.n_speakers}")
    return spk2id


def available_hours(cfg, *, progress: bool = False) -> float:
    """Training hours the corpus offers after holding out the validation set (the data-hours ceiling)."""
    d = _data_cfg(cfg)
    from model.data.select import needs_selection, select

    if needs_selection(d):  # quality filter and/or mixture: the pool of that (quality, mixture) level
        return select(replace(d, data_hours=None), progress=progress).pool_hours
    _, items, _, _ = load_validated_manifest(d, progress=progress)
    return split(items, d.val_utterances, d.subset_seed).available_hours


def prepare_data(
    cfg,
    *,
    style_dim: int | None = None,
    progress: bool = False,
    workers: int | None = None,
    bert_device: str | None = None,
) -> PreparedData:
    """Everything the trainer needs from a ``DataConfig`` (or a ``TrialConfig``: its ``model.style_dim``
    sets the width of the zero style vectors)."""
    d = _data_cfg(cfg)
    if style_dim is None:
        style_dim = cfg.model.style_dim if d is not cfg else 256
    from model.data.select import needs_selection, prepare_selected

    if needs_selection(d):
        return prepare_selected(d, style_dim, progress=progress, workers=workers, bert_device=bert_device)
    info, items, report, mdir = load_validated_manifest(d, progress=progress, workers=workers)
    spk2id = speaker_map(items, d)
    sp = split(items, d.val_utterances, d.subset_seed)
    train = nested_subset(sp.train_pool, d.data_hours)
    cache = FeatureCache(d.cache_dir, fingerprint(items), d)
    stats = cache.prepare(
        train + sp.heldout, workers=workers or default_workers(d), progress=progress, bert_device=bert_device
    )
    return PreparedData(
        cfg=d,
        corpus=info,
        manifest=items,
        train_items=train,
        val_items=sp.heldout,
        spk2id=spk2id,
        available_hours=sp.available_hours,
        report=report,
        stats=stats,
        cache=cache,
        style_dim=style_dim,
        manifest_dir=mdir,
    )
