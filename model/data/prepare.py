"""One entry point for the trainer: ``prepare_data(cfg) -> PreparedData``, on one path for every config.

Steps (each cached and safe to run from several trials at once):
1. Select (``select.py``): resolve and validate each corpus (``sources.py``; the built-in corpus is built
   on first use), score it if a quality filter needs scores, draw the fixed held-out set
   (``data.val_utterances``) and the nested training subset of ``data.data_hours`` (``subsets.py``). One
   corpus is one source of weight 1; a mixture is one source per corpus.
2. Fill the feature cache for the training subset and the held-out set (``cache.py``), and the style
   vectors of the same items (``style.py``: ``data.style_encoder``, its own cache file).
3. Return datasets, the speaker map and loaders with seeded, resumable batch order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from model.data.cache import FeatureCache, PrepareStats
from model.data.dataset import BucketBatchSampler, TTSDataset, collate
from model.data.manifest import ManifestItem, fingerprint
from model.data.select import needs_selection, pool_message, select, what_selects
from model.data.sources import CorpusInfo, data_section, default_workers, speaker_map
from model.data.style import StyleStats, check_style, prepare_styles, speaker_means, style_vectors_for_export
from model.data.subsets import NotEnoughDataError
from model.data.validate import ValidationReport
from model.text.features import bert_input_dim, feature_dim

log = logging.getLogger(__name__)


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
    bert_dim: int = 1024  # the text-feature width of the batches (model.text.features.bert_input_dim)
    params_text_model: int = 0  # parameters of the text-feature model (0 for none)
    flops_text_features: int = 0  # its forward FLOPs over this trial's utterances (train + held-out)
    manifest_dir: Path | None = None
    selection: dict | None = None  # quality filter / mixture summary (select.py), None without them
    styles: dict | None = None  # utterance id -> style vector (style.py); None: data.style_encoder zeros
    style_stats: StyleStats = field(default_factory=StyleStats)
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
                self.cache,
                items,
                self.spk2id,
                add_blank=self.cfg.add_blank,
                text_level=None if self.cfg.text_features == "none" else self.cfg.text_features_level,
                styles=self.styles,
                speaker_styles=self.speaker_styles,
            )
        return self._datasets[split_name]

    @cached_property
    def speaker_styles(self) -> dict | None:
        """Speaker -> mean style vector over the training items (``""``: all of them); None for zeros."""
        return None if self.styles is None else speaker_means(self.styles, self.train_items)

    def export_style_vectors(self, speaker: str | None = None):
        """``style_vectors_for_export`` over the training items: (names, [n_styles, style_dim]) for SBV2's
        ``style_vectors.npy``; zero rows when the encoder is ``zeros`` (only ``Neutral``)."""
        if self.styles is None:
            return ["Neutral"], np.zeros((1, self.style_dim), np.float32)
        return style_vectors_for_export(self.styles, self.train_items, self.cfg.style2id, speaker=speaker)

    def sampler(self, batch_size: int, seed: int = 0, epoch: int = 0, skip_batches: int = 0, **kw):
        return BucketBatchSampler(self.train.lengths, batch_size, seed, epoch, skip_batches, **kw)

    def batches_per_epoch(self, batch_size: int, **kw) -> int:
        return len(self.sampler(batch_size, **kw))

    def collate(self, batch: list[dict]) -> dict:
        return collate(batch, self.bert_dim, self.style_dim)

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
            "style_encoder": self.cfg.style_encoder,
            "style_computed": self.style_stats.computed,
            "style_reused": self.style_stats.reused,
            "style_cache": self.style_stats.path or None,
            "audio_cache": self.stats.audio_dir,
            "text_cache": self.stats.text_dir,
            "text_features": self.cfg.text_features,
            "params_text_model": self.params_text_model,
            "flops_text_features": self.flops_text_features,
            "manifest_dir": str(self.manifest_dir) if self.manifest_dir else None,
            "selection": self.selection,
        }


def available_hours(cfg, *, progress: bool = False) -> float:
    """Training hours the corpus offers after holding out the validation set (the data-hours ceiling); with a
    quality filter and/or mixture, the pool of that (quality, mixture) level."""
    return select(replace(data_section(cfg), data_hours=None), progress=progress).pool_hours


def prepare_data(
    cfg,
    *,
    style_dim: int | None = None,
    progress: bool = False,
    workers: int | None = None,
    bert_device: str | None = None,
) -> PreparedData:
    """Everything the trainer needs from a ``DataConfig`` (or a ``TrialConfig``: its ``model.style_dim``
    is the width of the style vectors; an encoder of another width is refused before anything is
    embedded). ``bert_device`` also runs the style encoder."""
    d = data_section(cfg)
    if style_dim is None:
        style_dim = cfg.model.style_dim if d is not cfg else 256
    # the text-feature width (a trial config: model.bert_dim must match it), checked before any work
    bert_dim = bert_input_dim(cfg.model, d) if d is not cfg else (feature_dim(d) or 1024)
    check_style(d, style_dim)  # a wrong width or a missing encoder is refused before any work
    sel = select(d, progress=progress, workers=workers)
    if not sel.train:
        active = [s for s in sel.sources if s.weight > 0]
        raise NotEnoughDataError(
            pool_message(what_selects(d), 0.0, sel.pool_hours, active).replace(
                "data.data_hours=0 but", "no training audio:"
            )
        )
    items = sel.manifest
    spk2id = speaker_map(items, d)
    # style vectors first: an encoder that cannot be loaded fails before minutes of audio features
    styles, style_stats = prepare_styles(
        d,
        fingerprint(items),
        sel.train + sel.heldout,
        style_dim=style_dim,
        device=bert_device,
        progress=progress,
    )
    cache = FeatureCache(d.cache_dir, fingerprint(items), d)
    stats = cache.prepare(
        sel.train + sel.heldout,
        workers=workers or default_workers(d),
        progress=progress,
        bert_device=bert_device,
    )
    info = cache.text_info()
    if d.text_features != "none" and not info:
        log.warning(
            "%s was filled before text caches recorded their model (features.json): params_text_model and "
            "flops_text_features are reported as 0; delete the directory to recompute them",
            cache.text_dir,
        )
    if d.text_features != "none" and info:
        width = info["dim"] * (2 if info["level"] == "both" else 1)
        if width != bert_dim:
            raise ValueError(
                f"data.text_features: the cached features in {cache.text_dir} are {width}-dimensional "
                f"({info['model']}), but {bert_dim} were expected (model.bert_dim / the model's config)"
            )
    if len(sel.reports) == 1:
        report = sel.reports[0]
    else:
        report = ValidationReport(
            sum(r.total for r in sel.reports),
            sum(r.kept for r in sel.reports),
            sel.reports[0].expected_sample_rate,
            [x for r in sel.reports for x in r.dropped],
        )
    return PreparedData(
        cfg=d,
        corpus=CorpusInfo(sel.infos[0].path, "mixture") if d.sources is not None else sel.infos[0],
        manifest=items,
        train_items=sel.train,
        val_items=sel.heldout,
        spk2id=spk2id,
        available_hours=sel.pool_hours,
        report=report,
        stats=stats,
        cache=cache,
        style_dim=style_dim,
        bert_dim=bert_dim,
        params_text_model=int(info.get("params", 0)) if d.text_features != "none" else 0,
        flops_text_features=stats.text_flops,
        manifest_dir=sel.manifest_dirs[0],
        selection=sel.summary() if needs_selection(d) else None,
        styles=styles,
        style_stats=style_stats,
    )
