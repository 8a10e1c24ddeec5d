"""Predicted MOS of synthesised speech.

- DNSMOS (default): Microsoft's P.835 model (OVRL / SIG / BAK) and P.808 model as shipped in ``speechmos``
  (ONNX, offline). Input is resampled to 16 kHz and clipped to [-1, 1]; clips shorter than the model's
  9.01 s window are tiled to exactly one window (one model run; Microsoft's reference script tiles by
  doubling and then averages 1 s hops over the repeats), longer ones are scored on 1 s hops and averaged.
  The ONNX sessions are created once per process with a bounded number of threads
  (``$VITS_SCALING_MOS_THREADS``, else ``$OMP_NUM_THREADS``, else up to 4). About 0.35 s per short clip on
  one idle CPU core.
- UTMOS (optional, off by default): ``torch.hub.load("tarepan/SpeechMOS:v1.2.0", "utmos22_strong")``.
  It downloads code and weights on first use, so it only works where the hub cache is populated or the
  network is reachable; failures raise ``MOSBackendError`` saying so.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
import torchaudio

DNSMOS_SR = 16000
DNSMOS_KEYS = ("ovrl", "sig", "bak", "p808")


class MOSBackendError(RuntimeError):
    """A MOS predictor could not be loaded or run."""


_dnsmos = None
_utmos = None


def _dnsmos_model():
    global _dnsmos
    if _dnsmos is None:
        try:
            import onnxruntime as ort
            from speechmos import dnsmos as sm
        except ImportError as e:  # pragma: no cover - dependency problem
            raise MOSBackendError(f"DNSMOS needs speechmos, librosa and onnxruntime: {e}") from e
        opts = ort.SessionOptions()
        threads = os.environ.get("VITS_SCALING_MOS_THREADS") or os.environ.get("OMP_NUM_THREADS")
        opts.intra_op_num_threads = int(threads) if threads else min(4, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        base = os.path.dirname(os.path.abspath(sm.__file__))

        class _Model(sm.DNSMOS):
            def __init__(self) -> None:  # the parent builds sessions with default (all-core) threading
                self.primary_model_path = os.path.join(base, "dnsmos_models", "sig_bak_ovr.onnx")
                self.onnx_sess = ort.InferenceSession(
                    self.primary_model_path, opts, providers=["CPUExecutionProvider"]
                )
                self.p808_onnx_sess = ort.InferenceSession(
                    os.path.join(base, "dnsmos_models", "model_v8.onnx"),
                    opts,
                    providers=["CPUExecutionProvider"],
                )

        _dnsmos = _Model()
    return _dnsmos


def sm_input_length() -> float:
    from speechmos import dnsmos as sm

    return float(sm.INPUT_LENGTH)


def _to_16k(wav, sr: int) -> np.ndarray:
    x = wav if torch.is_tensor(wav) else torch.as_tensor(np.asarray(wav, dtype=np.float32))
    x = x.detach().float().cpu().reshape(-1)
    if sr != DNSMOS_SR:
        x = torchaudio.functional.resample(x, sr, DNSMOS_SR)
    return np.clip(x.numpy(), -1.0, 1.0).astype(np.float32)


def dnsmos(wav, sr: int) -> dict[str, float]:
    """DNSMOS of one mono clip: ``{"ovrl", "sig", "bak", "p808"}`` (NaN for an empty or silent clip)."""
    x = _to_16k(wav, sr)
    if len(x) < DNSMOS_SR // 10 or not np.any(x):
        return {k: math.nan for k in DNSMOS_KEYS}
    window = int(sm_input_length() * DNSMOS_SR)
    if len(x) < window:  # tile to exactly one model window (the reference script doubles, then hops)
        x = np.tile(x, -(-window // len(x)))[:window]
    r = _dnsmos_model()(x, DNSMOS_SR, False)
    return {
        "ovrl": float(r["ovrl_mos"]),
        "sig": float(r["sig_mos"]),
        "bak": float(r["bak_mos"]),
        "p808": float(r["p808_mos"]),
    }


def load_utmos(repo: str = "tarepan/SpeechMOS:v1.2.0", name: str = "utmos22_strong") -> Any:
    """Load the UTMOS predictor through torch.hub; ``MOSBackendError`` with the reason when it cannot."""
    global _utmos
    if _utmos is None:
        try:
            _utmos = torch.hub.load(repo, name, trust_repo=True).eval()
        except Exception as e:
            raise MOSBackendError(
                f"UTMOS backend unavailable: torch.hub.load({repo!r}, {name!r}) failed ({type(e).__name__}: "
                f"{e}). It needs network access or a populated torch.hub cache ({torch.hub.get_dir()}); "
                "use eval.mos_backend: dnsmos (offline) instead."
            ) from e
    return _utmos


def utmos(wav, sr: int) -> float:
    """UTMOS22 (strong) score of one mono clip."""
    model = load_utmos()
    x = wav if torch.is_tensor(wav) else torch.as_tensor(np.asarray(wav, dtype=np.float32))
    x = x.detach().float().cpu().reshape(1, -1).clamp(-1.0, 1.0)
    with torch.inference_mode():
        return float(model(x, sr).reshape(-1)[0])


def predict_mos(wav, sr: int, backend: str = "dnsmos") -> dict[str, float]:
    """Scores of one clip under ``backend`` (dnsmos | utmos | none), keys prefixed by the backend name."""
    if backend == "dnsmos":
        return {f"dnsmos_{k}": v for k, v in dnsmos(wav, sr).items()}
    if backend == "utmos":
        return {"utmos": utmos(wav, sr)}
    if backend == "none":
        return {}
    raise ValueError(f"eval.mos_backend: unknown backend {backend!r} (allowed: dnsmos, utmos, none)")
