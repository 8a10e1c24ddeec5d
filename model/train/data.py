"""The trainer's view of the data: ``model.data.prepare_data`` plus loaders whose order survives a resume.

- Training batches of epoch ``e`` are the data package's seeded bucketed sampler for (``train.seed``, ``e``)
  minus the batches already taken; the DataLoader gets its own seeded ``torch.Generator`` so creating it
  does not draw from the global RNG (which would make a resumed run's random stream differ).
- Pinned memory on CUDA, ``data.num_workers`` workers.
- The held-out set is collated once, in its fixed order, into batches of ``train.batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from model.config import TrialConfig
from model.data import prepare_data


@dataclass
class TrialData:
    cfg: TrialConfig
    prepared: Any  # model.data.PreparedData
    pin_memory: bool = False
    _val: list[dict[str, Any]] | None = field(default=None, repr=False)

    @classmethod
    def prepare(cls, cfg: TrialConfig, *, device: torch.device, progress: bool = False) -> TrialData:
        prepared = prepare_data(cfg, progress=progress)
        if len(prepared.train_items) == 0:
            raise ValueError(
                f"{cfg.data.corpus}: the training subset is empty (data.data_hours={cfg.data.data_hours})"
            )
        return cls(cfg, prepared, pin_memory=device.type == "cuda")

    # --- sizes ---
    @property
    def batch_size(self) -> int:
        return self.cfg.train.batch_size

    @property
    def data_hours(self) -> float:
        return float(self.prepared.data_hours)

    @property
    def mean_utterance_s(self) -> float:
        items = self.prepared.train_items
        return sum(i.duration for i in items) / len(items)

    def batches_per_epoch(self) -> int:
        return self.prepared.batches_per_epoch(self.batch_size, seed=self.cfg.train.seed)

    # --- loaders ---
    def train_loader(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        p, t = self.prepared, self.cfg.train
        sampler = p.sampler(self.batch_size, t.seed, epoch, skip_batches)
        nw = int(self.cfg.data.num_workers)
        return DataLoader(
            p.train,
            batch_sampler=sampler,
            collate_fn=p.collate,
            num_workers=nw,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(t.seed * 1_000_003 + epoch),
            persistent_workers=False,
            prefetch_factor=4 if nw > 0 else None,
        )

    def val_batches(self) -> list[dict[str, Any]]:
        if self._val is None:
            ds = self.prepared.val
            if len(ds) == 0:
                raise ValueError("the held-out set is empty (data.val_utterances must be >= 1)")
            bs = self.batch_size
            self._val = [
                self.prepared.collate([ds[i] for i in range(s, min(s + bs, len(ds)))])
                for s in range(0, len(ds), bs)
            ]
        return self._val
