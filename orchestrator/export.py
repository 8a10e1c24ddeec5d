"""A trained trial out of the project: Style-Bert-VITS2 ``model_assets/<name>/`` or an ONNX graph.

``vits-scaling export REF --format sbv2|onnx --out DIR``. ``REF`` names a trial as the other commands do:

- ``SWEEP:TRIAL`` (or ``sweep:SWEEP/TRIAL``): the latest checkpoint of that trial of a submitted sweep (the
  sweep found as ``status`` finds it: a sweep dir, ``--storage``, the sweeps index, the default storage);
- an MLflow run id (what ``best`` prints): its sweep and trial tags, then as above;
- a checkpoint file or trial directory (``model.train.init.resolve_init_path``).

Writes into ``DIR``, refused when it exists and is not empty unless ``force``. The SBV2 files are written by
``model.sbv2.write_model_assets``, the ONNX graph by ``model.onnx_export.export_onnx`` (verified against
PyTorch; a graph that fails is left as ``<name>.onnx.unverified`` with the error naming the difference).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from analysis.mlflow_contract import TAG_SWEEP, TAG_TRIAL, StoreNotFound, default_tracking_uri, existing_store
from model import onnx_export, sbv2
from model.config import ConfigError, TrialConfig
from model.data.prepare import prepare_data
from model.data.style import parse_encoder
from model.train import checkpoint as ckpt
from model.train.init import InitError, resolve_init_path
from orchestrator import state as st
from orchestrator.tracking import Tracker

FORMATS = ("sbv2", "onnx")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class ExportError(ValueError):
    """The trial cannot be found or exported; the message names the reference, file or field."""


def _sweep_ref(sweep: str, trial: str, storage: str | None) -> str:
    try:
        d = st.find_sweep(sweep, storage)
    except st.SweepNotFound:
        return f"sweep:{sweep}/{trial}"  # resolve_init_path looks in the index and default storage
    return str(d / "trials" / trial)


def resolve_checkpoint(ref: str, *, storage: str | None = None, tracking_uri: str | None = None) -> Path:
    """The checkpoint file ``ref`` names (module docstring)."""
    p = Path(ref).expanduser()
    if not p.exists():
        if ref.startswith("sweep:"):
            name, _, tid = ref[len("sweep:") :].partition("/")
            if name and tid:
                ref = _sweep_ref(name, tid, storage)
        elif ":" in ref:
            name, _, tid = ref.partition(":")
            if not name or not tid:
                raise ExportError(f"{ref!r}: expected SWEEP:TRIAL, an MLflow run id or a checkpoint path")
            ref = _sweep_ref(name, tid, storage)
        elif RUN_ID.match(ref):
            ref = _run_ref(ref, tracking_uri, storage)
    try:
        return resolve_init_path(ref, TrialConfig(), where="export")
    except InitError as e:
        raise ExportError(str(e)) from None


def _run_ref(run_id: str, tracking_uri: str | None, storage: str | None) -> str:
    uri = tracking_uri or default_tracking_uri()
    try:
        tracker = Tracker(existing_store(uri), retry_s=10)  # a query: never creates a store
        run = tracker.call(lambda: tracker.client.get_run(run_id), what="get run", retry_s=0)
    except StoreNotFound as e:
        raise ExportError(f"run {run_id}: {e}") from None
    except Exception as e:  # MLflow's own error for an unknown id
        raise ExportError(f"run {run_id}: not found in {uri} ({type(e).__name__})") from None
    tags = run.data.tags
    sweep, trial = tags.get(TAG_SWEEP), tags.get(TAG_TRIAL)
    if not sweep or not trial:
        raise ExportError(f"run {run_id}: has no {TAG_SWEEP} / {TAG_TRIAL} tags (not a trial run)")
    return _sweep_ref(sweep, trial, storage)


def load_trial(path: Path):
    """(generator in eval mode, its trial config) from one of this project's checkpoints."""
    from model.step import build_generator  # torch nets: only an export builds them

    try:
        payload = ckpt.load_checkpoint(path)
    except ckpt.CheckpointMismatch as e:
        raise ExportError(str(e)) from None
    cfg = TrialConfig.from_dict(payload["config"], strict=False, where=f"{path}: config")
    net = build_generator(cfg)
    net.load_state_dict(payload["train_state"]["net_g"])
    return net.eval(), cfg


def style_table(cfg: TrialConfig) -> tuple[list[str], np.ndarray]:
    """The styles an export writes (names, ``(n_styles, style_dim)`` float32 mean style vectors, neutral
    first, row i = style id i), from the style vectors the trial trained with.

    ``data.style_encoder: zeros`` trained on the all-zero vector: one ``Neutral`` zero row, without touching
    the corpus. Any other encoder: the trial's data is prepared again through ``prepare_data`` (its feature and
    style caches are reused, so on the machine that trained it nothing is recomputed) and
    ``PreparedData.export_style_vectors`` averages the training items' vectors (model/data/style.py
    ``style_vectors_for_export``: the overall mean as ``Neutral``, then one row per labelled style)."""
    dim = cfg.model.style_dim or 256
    if parse_encoder(cfg.data.style_encoder).kind == "zeros":
        return ["Neutral"], np.zeros((1, dim), dtype=np.float32)
    try:
        names, vectors = prepare_data(cfg).export_style_vectors()
    except (ConfigError, OSError, ValueError) as e:
        raise ExportError(f"style vectors (data.style_encoder={cfg.data.style_encoder!r}): {e}") from None
    return list(names), np.asarray(vectors, dtype=np.float32)


def export_trial(
    ref: str,
    fmt: str,
    out: Path,
    *,
    name: str | None = None,
    force: bool = False,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Export the trial ``ref`` names; returns what was written (files with bytes; ONNX: the max diff)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r} (allowed: {', '.join(FORMATS)})")
    out = Path(out)
    try:
        sbv2.check_out_dir(out, force)  # before anything is loaded: a refused target costs nothing
    except sbv2.Sbv2Error as e:
        raise ExportError(str(e)) from None
    path = resolve_checkpoint(ref, storage=storage, tracking_uri=tracking_uri)
    net, cfg = load_trial(path)
    name = name or cfg.trial_id or cfg.name
    if not re.fullmatch(r"[\w.\-]+", name):
        raise ExportError(f"--name: {name!r}: use letters, digits, '.', '-' and '_' (it becomes a file name)")
    result: dict[str, Any] = {"source": str(path), "format": fmt, "out": str(out), "name": name}
    if fmt == "sbv2":
        styles, vectors = style_table(cfg)
        try:
            files = sbv2.write_model_assets(net, cfg, out, name, styles, vectors, force=force)
        except sbv2.Sbv2Error as e:
            raise ExportError(str(e)) from None
        result["styles"] = styles
        result["tables"] = sbv2.export_tables()
    else:
        out.mkdir(parents=True, exist_ok=True)
        try:
            check = onnx_export.export_onnx(net, cfg, out / f"{name}.onnx")
        except onnx_export.OnnxMismatch as e:
            raise ExportError(str(e)) from None
        result.update(
            max_abs_diff=check["max_abs_diff"], tolerance=check["tolerance"], inputs=check["inputs"]
        )
        files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    result["files"] = files
    return result
