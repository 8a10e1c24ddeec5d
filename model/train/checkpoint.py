"""Trial checkpoints: atomic writes, the last K kept, everything a bit-exact resume needs.

A checkpoint ``<output_dir>/checkpoints/ckpt_<step:08d>.pt`` holds: the nets, optimizers and schedulers
(``TrainState.state_dict``), the step, the epoch and the number of batches already taken from it, the
trainer's counters (audio seconds seen), the random states (torch CPU, every CUDA device, numpy, python),
the generator's MAS noise scale, the phone table (``model.text.symbols.SYMBOLS``) and the full config.

Written to a temporary file in the same directory, flushed, then renamed over the final name, so a
killed process leaves either the old set of checkpoints or the new one, never a torn file.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import TrialConfig
from model.text import symbols

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")


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


def save_checkpoint(
    state, cfg: TrialConfig, *, epoch: int, batch_in_epoch: int, counters: dict[str, float], keep: int = 2
) -> Path:
    """Write the checkpoint of ``state`` (a ``model.step.TrainState``) atomically; prune to the last ``keep``."""
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
    }
    final = d / f"ckpt_{state.step:08d}.pt"
    tmp = d / f".{final.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for _, old in list_checkpoints(d)[: -max(1, keep)]:
        old.unlink(missing_ok=True)
    return final


class CheckpointMismatch(ValueError):
    """A checkpoint cannot continue this trial (different model, phone table or format)."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointMismatch(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointMismatch(f"{path}: not a vits-scaling trial checkpoint of format {FORMAT_VERSION}")
    return payload


def check_compatible(payload: dict[str, Any], cfg: TrialConfig, path: str | Path) -> None:
    """Refuse to resume across a changed phone table or model/feature configuration."""
    if payload["symbols"] != list(symbols.SYMBOLS):
        raise CheckpointMismatch(
            f"{path}: phone table differs from model.text.symbols.SYMBOLS "
            f"({len(payload['symbols'])} vs {len(symbols.SYMBOLS)} symbols); cannot resume"
        )
    old, new = payload["config"], cfg.to_dict()
    diffs = [f"model.{k}" for k in new["model"] if old["model"].get(k) != new["model"][k]]
    for k in ("sampling_rate", "filter_length", "hop_length", "win_length", "n_mel_channels", "n_speakers"):
        if old["data"].get(k) != new["data"][k]:
            diffs.append(f"data.{k}")
    if diffs:
        raise CheckpointMismatch(
            f"{path}: written for a different configuration ({', '.join(diffs)} changed); "
            "cannot resume (use a new output_dir or resume=False)"
        )


def restore(state, payload: dict[str, Any]) -> None:
    """Load nets/optimizers/schedulers, the MAS noise scale and the random states into ``state``."""
    state.load_state_dict(payload["train_state"])
    state.step = int(payload["step"])
    scale = payload.get("mas_noise_scale")
    if scale is not None and hasattr(state.net_g, "current_mas_noise_scale"):
        state.net_g.current_mas_noise_scale = scale
    set_rng_state(payload["rng"])
