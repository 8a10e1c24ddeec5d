"""Trial checkpoints: atomic writes, the last K kept, everything a bit-exact resume needs.

A checkpoint ``<output_dir>/checkpoints/ckpt_<step:08d>.pt`` holds: the nets, optimizers and schedulers
(``TrainState.state_dict``), the step, the epoch and the number of batches already taken from it, the
trainer's counters (audio seconds seen), the random states (torch CPU, every CUDA device, numpy, python),
the generator's MAS noise scale, the phone table (``model.text.symbols.SYMBOLS``), the full config and
the lr schedule's plan (``model.train.schedule.SchedulePlan``: settings and planned steps).

Written to a temporary file in the same directory, flushed, then renamed over the final name, so a
killed process leaves either the old set of checkpoints or the new one, never a torn file.

A write that fails (a full disk) removes its temporary file and raises ``CheckpointWriteError`` naming the
path; the checkpoints already there are untouched, so a retry resumes from the previous one. A resume reads
the newest checkpoint that loads (``latest_readable``): one that cannot be read (torn by something other
than this writer, a bad disk) is moved aside to ``<name>.corrupt`` with a warning, and the one before it
is used.

Only the last ``train.keep_checkpoints`` are kept, except *kept* ones (``save_checkpoint(kept=True)``:
a WSD trunk's branch points): an empty marker ``ckpt_<step>.pt.keep`` beside the file exempts it from
rotation, so a branch can always find its start.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import TrialConfig
from model.text import symbols
from model.train.schedule import SchedulePlan, curve_settings, first_difference

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CORRUPT_SUFFIX = ".corrupt"
_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")
KEEP_SUFFIX = ".keep"


def checkpoint_dir(cfg: TrialConfig) -> Path:
    return Path(cfg.output_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        states = st["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` sorted by step (temporary and foreign files ignored)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(directory: str | Path) -> Path | None:
    ck = list_checkpoints(directory)
    return ck[-1][1] if ck else None


def latest_readable(directory: str | Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest checkpoint in ``directory`` that loads, and its payload; ``(None, None)`` when none does.
    Each newer one that cannot be read is moved aside to ``<name>.corrupt`` (kept for inspection, never
    tried again) with a warning naming it and the one used instead. A checkpoint that loads but belongs
    to another trial is not skipped: ``check_compatible`` refuses it."""
    for _, p in reversed(list_checkpoints(directory)):
        try:
            return p, load_checkpoint(p)
        except CheckpointUnreadable as e:
            bad = p.with_name(p.name + CORRUPT_SUFFIX)
            os.replace(p, bad)
            log.warning("%s; moved it to %s and falling back to the checkpoint before it", e, bad.name)
    return None, None


def is_kept(path: Path) -> bool:
    """A checkpoint marked kept (never rotated away)."""
    return path.with_name(path.name + KEEP_SUFFIX).exists()


def save_checkpoint(
    state,
    cfg: TrialConfig,
    *,
    epoch: int,
    batch_in_epoch: int,
    counters: dict[str, float],
    keep: int = 2,
    schedule: dict[str, Any] | None = None,
    kept: bool = False,
) -> Path:
    """Write the checkpoint of ``state`` (a ``model.step.TrainState``) atomically; prune to the last ``keep``
    checkpoints not marked kept. ``schedule``: the plan's ``to_dict()`` (what a resume must match);
    ``kept``: mark this one kept (the marker is written before the checkpoint, so a kept one never
    appears unmarked)."""
    d = checkpoint_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "train_state": state.state_dict(),
        "step": int(state.step),
        "epoch": int(epoch),
        "batch_in_epoch": int(batch_in_epoch),
        "counters": dict(counters),
        "rng": rng_state(),
        "mas_noise_scale": getattr(state.net_g, "current_mas_noise_scale", None),
        "symbols": list(symbols.SYMBOLS),
        "config": cfg.to_dict(),
        "schedule": schedule,
    }
    final = d / f"ckpt_{state.step:08d}.pt"
    tmp = d / f".{final.name}.{os.getpid()}.tmp"
    marker = final.with_name(final.name + KEEP_SUFFIX)
    try:
        if kept:
            marker.touch()
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        free = shutil.disk_usage(d).free  # before the partial file goes: a full disk shows as ~0 here
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if kept and not final.exists():
            marker.unlink(missing_ok=True)
        prev = latest_checkpoint(d)
        full = getattr(e, "errno", None) == errno.ENOSPC or free < max(written, 1) // 100 + 4096
        why = "no space left on the device" if full else (getattr(e, "strerror", None) or str(e))
        raise CheckpointWriteError(
            f"{final}: could not write the checkpoint ({why}; {written} bytes written, {free} bytes free); "
            + (f"the previous checkpoint {prev} is untouched" if prev else "no earlier checkpoint exists")
        ) from e
    rotating = [p for _, p in list_checkpoints(d) if not is_kept(p)]
    for old in rotating[: -max(1, keep)]:
        old.unlink(missing_ok=True)
    return final


def remove_checkpoints(directory: str | Path) -> list[Path]:
    """Delete every checkpoint in ``directory``, kept ones and their markers included (a fresh start)."""
    gone = []
    for _, p in list_checkpoints(directory):
        p.unlink()
        p.with_name(p.name + KEEP_SUFFIX).unlink(missing_ok=True)
        gone.append(p)
    return gone


class CheckpointMismatch(ValueError):
    """A checkpoint cannot continue this trial (different model, phone table or format)."""


class CheckpointUnreadable(CheckpointMismatch):
    """A checkpoint file that does not load at all (torn or corrupted bytes)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the message names the path."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointUnreadable(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointMismatch(f"{path}: not a vits-scaling trial checkpoint of format {FORMAT_VERSION}")
    return payload


def _check_symbols(payload: dict[str, Any], path: str | Path) -> None:
    if payload["symbols"] != list(symbols.SYMBOLS):
        raise CheckpointMismatch(
            f"{path}: phone table differs from model.text.symbols.SYMBOLS "
            f"({len(payload['symbols'])} vs {len(symbols.SYMBOLS)} symbols); cannot resume"
        )


def _changed(old: dict[str, Any], new: dict[str, Any], prefix: str, keys=None) -> list[str]:
    keys = new if keys is None else keys
    return [f"{prefix}{k}: {old.get(k)!r} -> {new[k]!r}" for k in keys if old.get(k) != new[k]]


FEATURE_KEYS = ("sampling_rate", "filter_length", "hop_length", "win_length", "n_mel_channels", "n_speakers")
# what the model reads besides audio: the text features and the style vectors (a resume across another text
# model of the same width, or another style encoder, would silently change the inputs mid-trajectory);
# compared where the checkpoint recorded them (checkpoints written before these fields existed lack them)
INPUT_KEYS = (
    "text_features", "bert_model", "text_features_kind", "text_features_layers", "text_features_level",
    "text_features_sentence", "text_features_proj_dim", "style_encoder",
)  # fmt: skip
SCHEDULE_NAMES = {"kind": "train.lr_schedule (as run)", "total_steps": "planned steps"}


def check_compatible(
    payload: dict[str, Any], cfg: TrialConfig, path: str | Path, schedule: dict[str, Any] | None = None
) -> None:
    """Refuse to resume across a changed phone table, model/feature configuration or lr schedule.

    ``schedule``: this run's plan (``SchedulePlan.to_dict()``); a checkpoint whose plan differs (schedule,
    learning_rate, warm-up, min_lr_frac, cooldown, planned steps, branch points) is refused with both
    values of every changed setting, since the resumed curve would not be the one the trial started on.
    Planned steps are compared where they shape the curve (``schedule.curve_settings``: cosine, wsd), so
    a constant-lr or sbv2 trial may be resumed with more steps."""
    _check_symbols(payload, path)
    old, new = payload["config"], cfg.to_dict()
    diffs = _changed(old["model"], new["model"], "model.")
    diffs += _changed(old["data"], new["data"], "data.", FEATURE_KEYS)
    diffs += _changed(old["data"], new["data"], "data.", [k for k in INPUT_KEYS if k in old["data"]])
    if schedule is not None:
        before = payload.get("schedule")
        if before is None:
            diffs.append("lr schedule: not recorded in this checkpoint (written before schedules were)")
        else:
            now, before = curve_settings(schedule), curve_settings(before)
            for k in sorted(set(now) | set(before), key=list(schedule).index):
                v = now.get(k)
                if before.get(k) != v:
                    name = SCHEDULE_NAMES.get(k, f"train.{k}")
                    diffs.append(f"{name}: {before.get(k)!r} -> {v!r}")
    if diffs:
        raise CheckpointMismatch(
            f"{path}: written for a different configuration ({'; '.join(diffs)}); "
            "cannot resume (use a new output_dir or resume=False)"
        )


# what a WSD branch must share with its trunk: the schedule settings (the curve up to the branch point and
# the cooldown the sweep planned) and everything else that shapes the trajectory up to the branch point
BRANCH_TRAIN_KEYS = (
    "lr_schedule", "learning_rate", "warmup_steps", "warmup_frac", "min_lr_frac", "cooldown_frac",
    "cooldown_shape", "seed", "batch_size", "segment_size", "betas", "eps", "grad_clip_g", "grad_clip_d",
    "precision", "c_mel", "c_kl", "c_dur", "c_adv", "c_fm", "freeze", "init_from", "init_speakers",
)  # fmt: skip
BRANCH_DATA_SKIP = ("corpus_dir", "cache_dir", "num_workers", "prepare_workers")  # where, not what


def check_branch_source(
    payload: dict[str, Any],
    cfg: TrialConfig,
    path: str | Path,
    *,
    step: int,
    flops_per_step: int,
    schedule: SchedulePlan,
) -> None:
    """Refuse to start the WSD branch ``cfg`` at ``step`` from ``payload`` (its trunk's checkpoint) unless
    it is that step's, of the same model, data and training settings (``BRANCH_TRAIN_KEYS``), measured
    at the same FLOPs per step, and the trunk's recorded lr curve equals the branch's ``schedule`` at every
    step before ``step``. Every difference is named with both values."""
    _check_symbols(payload, path)
    old, new = payload["config"], cfg.to_dict()
    diffs = _changed(old["model"], new["model"], "model.")
    data_keys = [k for k in new["data"] if k not in BRANCH_DATA_SKIP]
    diffs += _changed(old["data"], new["data"], "data.", data_keys)
    diffs += _changed(old["train"], new["train"], "train.", BRANCH_TRAIN_KEYS)
    if int(payload["step"]) != step:
        diffs.append(f"step: {payload['step']} -> {step} (the branch point)")
    done = float(payload.get("counters", {}).get("flops", 0.0))
    if payload["step"] and done != float(payload["step"]) * flops_per_step:
        diffs.append(f"flops_per_step: {done / payload['step']:.6g} -> {flops_per_step}")
    trunk = payload.get("schedule")
    if trunk is None:
        diffs.append("lr schedule: not recorded in this checkpoint")
    else:
        at = first_difference(SchedulePlan.from_dict(trunk), schedule, min(step, int(payload["step"])))
        if at is not None:
            diffs.append(
                f"lr curve: differs from step {at} on (trunk {trunk['kind']}, branch {schedule.kind})"
            )
    if diffs:
        raise CheckpointMismatch(
            f"{path}: cannot start this branch from it ({'; '.join(diffs)}); a branch continues its "
            "trunk exactly, so both must share model, data, schedule and training settings"
        )


def restore(state, payload: dict[str, Any]) -> None:
    """Load nets/optimizers/schedulers, the MAS noise scale and the random states into ``state``."""
    state.load_state_dict(payload["train_state"])
    state.step = int(payload["step"])
    scale = payload.get("mas_noise_scale")
    if scale is not None and hasattr(state.net_g, "current_mas_noise_scale"):
        state.net_g.current_mas_noise_scale = scale
    set_rng_state(payload["rng"])
