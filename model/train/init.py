"""Starting a trial from another trial's weights: ``train.init_from``, ``train.init_speakers``, ``train.freeze``.

``init_from`` names a checkpoint: a ``ckpt_*.pt`` file, a trial output directory or its ``checkpoints/``
directory (the latest checkpoint there), a Style-Bert-VITS2 JP-Extra checkpoint (a ``G_*.pth`` /
``*.safetensors`` file or a directory holding one, with its ``config.json`` beside it and optionally
``D_*`` / ``DUR_*`` / ``WD_*`` of the same step: ``model.sbv2`` maps keys, weight norm and the symbol, tone
and language tables, and the report of what was mapped, dropped and initialised is logged as
``pretrain.sbv2.*`` params), or ``sweep:<name>/<trial_id>`` (the latest checkpoint of that trial
of a submitted sweep: ``<storage>/<name>/trials/<trial_id>/checkpoints``, where ``<storage>`` is this trial's
own sweep storage, ``runs/sweeps_index.json`` or ``runs/sweeps``).

Only weights are loaded (generator and discriminators; fresh optimizers and schedulers, step 0). The model
configuration must match the checkpoint's except for ``data.n_speakers``; the speaker embedding ``emb_g``
then follows ``init_speakers``:

- ``resize`` (default): rows of speaker ids present in both are copied; new rows get the mean of the old
  rows (a neutral voice to start a new speaker from); extra old rows are dropped;
- ``reinit``: ``emb_g`` keeps its fresh (seeded) initialisation, whatever the sizes;
- ``keep``: copied as is; a different number of speakers is an error.

``freeze`` lists generator parts (``enc_p``, ``flow``, ``dec``, ``emb_g``, ... or dotted prefixes such as
``enc_p.encoder``): their parameters get ``requires_grad=False`` before the optimizer is built, so they are
not in it and stay exactly as loaded.

The pretraining that produced the checkpoint is carried along (``InitInfo``): its cumulative FLOPs, unique
training hours, steps, audio seconds seen (plus whatever pretraining *it* started from), the source path and
its MLflow run / sweep / trial id. The trainer stores it in ``TrainState.extra["init"]``, so a resumed
fine-tune trial (which continues from its own checkpoint, never the init one) still reports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import sbv2
from model.config import ConfigError, TrainConfig, TrialConfig, literal_choices
from model.step import build_generator, build_train_state
from model.text import symbols
from model.train import checkpoint as ckpt

SPEAKER_MODES = literal_choices(TrainConfig, "init_speakers")  # resize, reinit, keep
SPEAKER_KEY = "emb_g.weight"


class InitError(ValueError):
    """``train.init_from`` cannot be used (missing checkpoint, different model, bad options)."""


@dataclass
class InitInfo:
    source: str  # the checkpoint file loaded
    run_id: str | None
    sweep: str | None
    trial_id: str | None
    flops: float  # pretraining compute, including what the source itself was initialised from
    hours: float  # unique pretraining hours (likewise cumulative)
    steps: int
    data_seen_s: float
    import_report: dict[str, Any] | None = (
        None  # a Style-Bert-VITS2 import: model.sbv2.ImportReport.to_dict()
    )

    def metrics(self) -> dict[str, float]:
        return {
            "pretrain_flops": self.flops,
            "pretrain_hours": self.hours,
            "pretrain_steps": float(self.steps),
            "pretrain_data_seen_s": self.data_seen_s,
        }

    def params(self) -> dict[str, str]:
        p = {"pretrain.source": self.source}
        for k in ("run_id", "sweep", "trial_id"):
            v = getattr(self, k)
            if v:
                p[f"pretrain.{k}"] = str(v)
        if self.import_report:
            p.update(sbv2.ImportReport(**self.import_report).params())
        return p


# ----------------------------------------------------------------------------------------------------
# finding the checkpoint


def _sweep_dirs(name: str, cfg: TrialConfig) -> list[Path]:
    out = []
    own = Path(cfg.output_dir)
    if cfg.sweep and own.parent.name == "trials":  # <storage>/<sweep>/trials/<id>: look beside our own sweep
        out.append(own.parent.parent.parent / name)
    index = Path("runs") / "sweeps_index.json"
    if index.exists():
        try:
            hit = json.loads(index.read_text()).get(name)
            if hit:
                out.append(Path(hit))
        except ValueError:
            pass
    out.append(Path("runs") / "sweeps" / name)
    return list(dict.fromkeys(out))


def resolve_init_path(
    ref: str, cfg: TrialConfig, *, where: str = "train.init_from", step: int | None = None
) -> Path:
    """The checkpoint file ``ref`` (see the module docstring) names; ``InitError`` if there is none.

    ``step``: the checkpoint of exactly that step in the named trial (``train.branch_from``: the trunk's
    checkpoint at the branch point); a file ``ref`` must be that step's. ``where`` names the field."""
    if step is not None:
        return _checkpoint_at(ref, cfg, where, step)
    if ref.startswith("sweep:"):
        name, _, tid = ref[len("sweep:") :].partition("/")
        if not name or not tid:
            raise InitError(f"{where}: {ref!r}: expected 'sweep:<name>/<trial_id>'")
        looked = []
        for d in _sweep_dirs(name, cfg):
            trial_dir = d / "trials" / tid
            looked.append(str(trial_dir))
            found = ckpt.latest_checkpoint(trial_dir / "checkpoints")
            if found is not None:
                return found
        raise InitError(f"{where}: {ref!r}: no checkpoint of that trial (looked in {', '.join(looked)})")
    p = Path(ref).expanduser()
    if p.is_file() or sbv2.is_sbv2_source(p):
        return p
    if p.is_dir():
        for d in (p / "checkpoints", p):
            found = ckpt.latest_checkpoint(d)
            if found is not None:
                return found
        raise InitError(f"{where}: {p}: no ckpt_*.pt in {p / 'checkpoints'} or {p}")
    raise InitError(f"{where}: {p}: no such checkpoint file or trial directory")


def _checkpoint_at(ref: str, cfg: TrialConfig, where: str, step: int) -> Path:
    latest = resolve_init_path(ref, cfg, where=where)  # the trial exists and has checkpoints
    p = Path(ref).expanduser()
    if p.is_file():
        dirs = [p.parent]
    elif ref.startswith("sweep:"):
        dirs = [latest.parent]
    else:
        dirs = [p / "checkpoints", p]
    for d in dirs:
        found = dict(ckpt.list_checkpoints(d))
        if step in found and (not p.is_file() or found[step].resolve() == p.resolve()):
            return found[step]
    have = sorted({s for d in dirs for s, _ in ckpt.list_checkpoints(d)})
    raise InitError(
        f"{where}: {ref!r}: no checkpoint at step {step} (the branch point); that trial has checkpoints "
        f"at steps {have} in {dirs[0]}"
    )


# ----------------------------------------------------------------------------------------------------
# loading


def _speaker_rows(old: torch.Tensor, new: torch.Tensor, mode: str, path: Path) -> torch.Tensor | None:
    """The emb_g weight to load (None: keep the fresh one)."""
    if mode == "reinit":
        return None
    if old.shape[1] != new.shape[1]:
        raise InitError(f"{path}: emb_g width {old.shape[1]} != {new.shape[1]} (model.gin_channels differs)")
    if old.shape == new.shape:
        return old
    if mode == "keep":
        raise InitError(
            f"{path}: checkpoint has {old.shape[0]} speakers, this trial {new.shape[0]} "
            "(train.init_speakers=keep; use resize or reinit)"
        )
    out = old.mean(0, keepdim=True).expand(new.shape[0], -1).clone()
    n = min(old.shape[0], new.shape[0])
    out[:n] = old[:n]
    return out.to(new.dtype)


def _load_net(
    net: nn.Module, sd: dict[str, torch.Tensor], path: Path, label: str, mode: str = "keep"
) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise InitError(
            f"{path}: {label} does not match this model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    out = {}
    for k, v in sd.items():
        if k == SPEAKER_KEY and label == "net_g":
            rows = _speaker_rows(v, own[k], mode, path)
            out[k] = own[k] if rows is None else rows
            continue
        if v.shape != own[k].shape:
            raise InitError(
                f"{path}: {label}.{k} has shape {tuple(v.shape)}, this model {tuple(own[k].shape)}"
            )
        out[k] = v
    net.load_state_dict(out, strict=True)


def check_model_matches(payload: dict[str, Any], cfg: TrialConfig, path: Path) -> None:
    if payload["symbols"] != list(symbols.SYMBOLS):
        raise InitError(
            f"{path}: phone table differs from model.text.symbols.SYMBOLS; cannot initialise from it"
        )
    old, new = payload["config"]["model"], cfg.to_dict()["model"]
    diffs = [k for k in new if old.get(k) != new[k]]
    if diffs:
        shown = ", ".join(f"model.{k}: {old.get(k)!r} -> {new[k]!r}" for k in diffs[:6])
        raise InitError(f"{path}: the checkpoint's model differs from this trial's ({shown})")


def load_init(state, cfg: TrialConfig) -> InitInfo:
    """Load ``cfg.train.init_from``'s weights into ``state`` (a ``model.step.TrainState``); returns what it was."""
    t = cfg.train
    if t.init_speakers not in SPEAKER_MODES:  # built configs are checked; this catches one set afterwards
        raise ConfigError(f"train.init_speakers: {t.init_speakers!r} (allowed: {', '.join(SPEAKER_MODES)})")
    path = resolve_init_path(str(t.init_from), cfg)
    if sbv2.is_sbv2_source(path):
        return _load_sbv2(state, cfg, path)
    try:
        payload = ckpt.load_checkpoint(path)
    except ckpt.CheckpointMismatch as e:
        raise InitError(str(e)) from None
    check_model_matches(payload, cfg, path)
    ts = payload["train_state"]
    for name, net in state.nets().items():
        if name == "net_g":
            _load_net(net, ts["net_g"], path, "net_g", t.init_speakers)
        elif name in ts:
            _load_net(net, ts[name], path, name)
        # a discriminator the source did not train (e.g. the duration discriminator) starts fresh
    c = payload.get("counters", {})
    pcfg = payload["config"]
    data_hours = c.get("data_hours", pcfg["data"].get("data_hours"))
    info = InitInfo(
        source=str(Path(path).resolve()),
        run_id=pcfg.get("tracking", {}).get("run_id"),
        sweep=pcfg.get("sweep"),
        trial_id=pcfg.get("trial_id"),
        flops=float(c.get("flops", 0.0)) + float(c.get("pretrain_flops", 0.0)),
        hours=float(data_hours or 0.0) + float(c.get("pretrain_hours", 0.0)),
        steps=int(payload.get("step", 0)),
        data_seen_s=float(c.get("data_seen_s", 0.0)),
    )
    state.extra["init"] = asdict(info)
    return info


def _load_sbv2(state, cfg: TrialConfig, path: Path) -> InitInfo:
    """A Style-Bert-VITS2 checkpoint: no pretraining counters travel with it (0 FLOPs / hours recorded)."""
    mode = cfg.train.init_speakers
    try:
        report = sbv2.load_into(state, cfg, path, lambda old, new: _speaker_rows(old, new, mode, path))
    except sbv2.Sbv2Error as e:
        raise InitError(str(e)) from None
    info = InitInfo(
        source=report.source,
        run_id=None,
        sweep=None,
        trial_id=None,
        flops=0.0,
        hours=0.0,
        steps=0,
        data_seen_s=0.0,
        import_report=report.to_dict(),
    )
    state.extra["init"] = asdict(info)
    return info


def info_from_state(state) -> InitInfo | None:
    d = state.extra.get("init")
    return InitInfo(**d) if d else None


# ----------------------------------------------------------------------------------------------------
# freezing


def freeze(net: nn.Module, names: list[str]) -> list[str]:
    """``requires_grad=False`` on every parameter under each named part; returns the frozen parameter names."""
    params = dict(net.named_parameters())
    parts = sorted({k.split(".")[0] for k in params})
    frozen = []
    for name in names:
        hit = [k for k in params if k == name or k.startswith(name + ".")]
        if not hit:
            raise ConfigError(
                f"train.freeze: {name!r} names no generator parameters (parts: {', '.join(parts)}; "
                "or a dotted prefix such as enc_p.encoder)"
            )
        for k in hit:
            params[k].requires_grad_(False)
        frozen += hit
    return sorted(set(frozen))


def build_state(cfg: TrialConfig, device, **kw):
    """``model.step.build_train_state`` (``kw``: its options, e.g. ``lr_factor``) with ``train.freeze``
    applied before the optimizers are made."""
    if not cfg.train.freeze:
        return build_train_state(cfg, device, **kw)
    net_g = build_generator(cfg)
    freeze(net_g, list(cfg.train.freeze))
    return build_train_state(cfg, device, net_g=net_g, **kw)
