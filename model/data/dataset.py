"""Dataset, length-bucketed batch sampler and collate: cached features -> the trainer's batch dict.

Batch (the shared contract): ``phones`` ``tones`` ``languages`` (B, T) long, ``phone_lengths`` (B,),
``bert`` (B, bert_dim, T) text features (model/text/features.py; zeros with ``data.text_features: none``),
``style`` (B, style_dim) each utterance's style vector (``data.style_encoder``; zeros for ``zeros``),
``speaker_style`` (B, style_dim) its speaker's mean style vector over the training items (what evaluation's
synthesis conditions on, as SBV2's inference), ``spec``
(B, n_fft // 2 + 1, F) linear magnitude, ``spec_lengths`` (B,), ``wav`` (B, 1, F * hop) in [-1, 1] at
``sampling_rate``, ``wav_lengths`` (B,), ``speakers`` (B,), ``ids`` list[str]. Padding is 0 everywhere; items are ordered
longest spectrogram first.

The sampler's batches are a pure function of (seed, epoch): a run resumed mid-epoch rebuilds the same
order and skips the batches it already trained on (``skip_batches``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from model.data.cache import FeatureCache
from model.data.manifest import ManifestItem
from model.text.features import phone_features
from model.text.g2p import to_sequence


class TTSDataset(Dataset):
    def __init__(
        self,
        cache: FeatureCache,
        items: list[ManifestItem],
        spk2id: dict[str, int],
        *,
        add_blank: bool,
        text_level: str | None,
        styles: dict[str, np.ndarray] | None = None,
        speaker_styles: dict[str, np.ndarray] | None = None,
    ) -> None:
        """``styles``: utterance id -> style vector, ``speaker_styles``: speaker -> mean vector (``""``: the
        mean of all, for a speaker without training items); None: zero style vectors."""
        self.cache = cache
        self.items = list(items)
        self.spk2id = spk2id
        self.add_blank = add_blank
        self.text_level = text_level  # token | sentence | both; None: no text features (zeros)
        self.styles = styles
        self.speaker_styles = speaker_styles
        d = cache.cfg
        # spectrogram frames from the manifest durations (exact up to a frame; used for bucketing only)
        self.lengths = [max(1, int(i.duration * d.sampling_rate) // d.hop_length) for i in self.items]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def seconds(self) -> float:
        return sum(i.duration for i in self.items)

    def __getitem__(self, idx: int) -> dict:
        it = self.items[idx]
        a, t = self.cache.load(it.id)
        ids, tones, langs, w2p = to_sequence(t["phones"], t["tones"], t["word2ph"], self.add_blank)
        out = {
            "id": it.id,
            "phones": torch.tensor(ids, dtype=torch.long),
            "tones": torch.tensor(tones, dtype=torch.long),
            "languages": torch.tensor(langs, dtype=torch.long),
            "spec": a["spec"].float(),
            "wav": a["wav"].float() / 32768.0,
            "speaker": self.spk2id[it.speaker],
            "bert": None,
            "style": None,
            "speaker_style": None,
        }
        if self.styles is not None:
            out["style"] = torch.from_numpy(self.styles[it.id])
            sp = self.speaker_styles or {}
            out["speaker_style"] = torch.from_numpy(sp.get(it.speaker, sp.get("", self.styles[it.id])))
        if self.text_level is not None:
            out["bert"] = phone_features(t, w2p, self.text_level)
        return out


def collate(batch: list[dict], bert_dim: int, style_dim: int) -> dict:
    """Pad and stack; items are ordered longest spectrogram first (as Style-Bert-VITS2's collate does)."""
    batch = sorted(batch, key=lambda b: -b["spec"].shape[1])
    B = len(batch)
    T = max(b["phones"].numel() for b in batch)
    F = max(b["spec"].shape[1] for b in batch)
    W = max(b["wav"].numel() for b in batch)
    n_freq = batch[0]["spec"].shape[0]
    out = {
        "phones": torch.zeros(B, T, dtype=torch.long),
        "tones": torch.zeros(B, T, dtype=torch.long),
        "languages": torch.zeros(B, T, dtype=torch.long),
        "phone_lengths": torch.zeros(B, dtype=torch.long),
        "bert": torch.zeros(B, bert_dim, T),
        "style": torch.zeros(B, style_dim),
        "speaker_style": torch.zeros(B, style_dim),
        "spec": torch.zeros(B, n_freq, F),
        "spec_lengths": torch.zeros(B, dtype=torch.long),
        "wav": torch.zeros(B, 1, W),
        "wav_lengths": torch.zeros(B, dtype=torch.long),
        "speakers": torch.zeros(B, dtype=torch.long),
        "ids": [],
    }
    for i, b in enumerate(batch):
        n = b["phones"].numel()
        out["phones"][i, :n] = b["phones"]
        out["tones"][i, :n] = b["tones"]
        out["languages"][i, :n] = b["languages"]
        out["phone_lengths"][i] = n
        if b["bert"] is not None:
            out["bert"][i, :, :n] = b["bert"]
        if b.get("style") is not None:
            out["style"][i] = b["style"]
            out["speaker_style"][i] = b["speaker_style"]
        f = b["spec"].shape[1]
        out["spec"][i, :, :f] = b["spec"]
        out["spec_lengths"][i] = f
        w = b["wav"].numel()
        out["wav"][i, 0, :w] = b["wav"]
        out["wav_lengths"][i] = w
        out["speakers"][i] = b["speaker"]
        out["ids"].append(b["id"])
    return out


class BucketBatchSampler(Sampler[list[int]]):
    """Seeded, length-bucketed batches; a pure function of (seed, epoch).

    Per epoch: a seeded permutation of all items is cut into chunks of ``batch_size * bucket_batches``
    items; each chunk is sorted by length (so a batch holds similar lengths and little padding) and cut
    into batches; the batches of all chunks are shuffled. Every batch is full: a short last batch is
    topped up with items drawn by the same generator (``fill_last``). With ``num_replicas > 1`` each rank
    takes every ``num_replicas``-th batch of the same list. ``skip_batches`` drops the first batches of
    this rank's epoch (resume).
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        skip_batches: int = 0,
        bucket_batches: int = 32,
        fill_last: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not lengths:
            raise ValueError("cannot batch an empty dataset")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.skip_batches = skip_batches
        self.bucket_batches = bucket_batches
        self.fill_last = fill_last
        self.num_replicas = num_replicas
        self.rank = rank

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.skip_batches = skip_batches

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of this rank for an epoch, before skipping."""
        epoch = self.epoch if epoch is None else epoch
        g = np.random.default_rng([self.seed, epoch, 0x5EED])
        n, bs = len(self.lengths), self.batch_size
        perm = g.permutation(n)
        chunk = bs * self.bucket_batches
        batches: list[list[int]] = []
        for s in range(0, n, chunk):
            part = perm[s : s + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[k : k + bs].tolist() for k in range(0, len(part), bs)]
        if self.fill_last and len(batches[-1]) < bs:
            short = batches[-1]
            others = np.setdiff1d(np.arange(n), short)
            need = bs - len(short)
            extra = g.choice(others, need, replace=False) if len(others) >= need else g.choice(n, need)
            short += extra.tolist()
            short.sort(key=lambda i: self.lengths[i])
        order = g.permutation(len(batches))
        batches = [batches[i] for i in order]
        if self.num_replicas > 1:
            per_rank = max(1, len(batches) // self.num_replicas)
            batches = [batches[(k * self.num_replicas + self.rank) % len(batches)] for k in range(per_rank)]
        return batches

    def __iter__(self):
        yield from self.epoch_batches()[self.skip_batches :]

    def __len__(self) -> int:
        return max(0, len(self.epoch_batches()) - self.skip_batches)
