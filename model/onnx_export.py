"""The generator's inference path as ONNX (text -> audio), checked with onnxruntime against PyTorch.

Graph inputs (batch 1 is what SBV2's tools run; every length is dynamic):

==============  ===================  =====================================================================
name            shape, dtype         meaning
==============  ===================  =====================================================================
phones          (1, T) int64         symbol ids (``model.text.symbols``), blanks interspersed if add_blank
tones           (1, T) int64         0 low / 1 high
languages       (1, T) int64         0 (Japanese)
bert            (1, bert_dim, T)     BERT features per token (zeros when the model trained without)
style           (1, style_dim)       style vector (a row of ``style_vectors.npy``)
sid             (1,) int64           speaker id
sdp_ratio       () float32           share of the stochastic duration predictor
noise_scale     () float32           prior sample scale
noise_scale_w   () float32           stochastic duration noise scale
length_scale    () float32           > 1 slower
noise_w         (1, 2, T) float32    standard normal draw of the stochastic duration predictor
noise_z         (1, C, F) float32    standard normal draw of the prior, C = inter_channels; the first
                                     ``frames`` columns are used, so F must be >= the frame count
==============  ===================  =====================================================================

Output ``audio`` (1, 1, frames * hop). The duration -> frames step makes the output length depend on the
input values; random draws inside the graph would make runtimes disagree. So the noise is an **input**:
both PyTorch and onnxruntime get the same draws and must give the same audio. ``verify`` refuses (naming the
file and the max difference) beyond ``TOLERANCE``; an export that fails it is kept beside the target as
``<file>.unverified`` and the target is not written.

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)`` (needs the ``onnx`` package);
weight norm is folded into plain weights first (a copy of the net; the trial's own is untouched).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model import modules
from model.config import TrialConfig
from model.step import build_generator
from model.text import symbols
from model.text.features import bert_input_dim

INPUTS = (
    "phones",
    "tones",
    "languages",
    "bert",
    "style",
    "sid",
    "sdp_ratio",
    "noise_scale",
    "noise_scale_w",
    "length_scale",
    "noise_w",
    "noise_z",
)
# float32 through ~30 layers: CPU kernels of the two runtimes differ by ~1e-6 relative; audio is in [-1, 1]
TOLERANCE = 1e-3
OPSET = 17
# the fixed check sentence: こんにちは、世界 as our phones (no g2p needed), accent tones given
CHECK_PHONES = "k o N n i ch i w a , s e k a i".split()
CHECK_TONES = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0]


class OnnxMismatch(ValueError):
    """The exported graph's output differs from PyTorch's beyond tolerance (message: file and max diff)."""


class OnnxSynthesizer(nn.Module):
    """``SynthesizerTrn.infer`` with every scalar and noise draw as an input (the graph exported)."""

    def __init__(self, net_g: nn.Module):
        super().__init__()
        self.net = net_g

    def forward(
        self,
        phones: Tensor,
        tones: Tensor,
        languages: Tensor,
        bert: Tensor,
        style: Tensor,
        sid: Tensor,
        sdp_ratio: Tensor,
        noise_scale: Tensor,
        noise_scale_w: Tensor,
        length_scale: Tensor,
        noise_w: Tensor,
        noise_z: Tensor,
    ) -> Tensor:
        lengths = torch.ones_like(phones).sum(1)
        audio, _, _, _ = self.net.infer(
            phones,
            lengths,
            sid,
            tones,
            languages,
            bert if self.net.enc_p.bert_dim else None,
            style if self.net.enc_p.style_dim else None,
            noise_scale=noise_scale,
            length_scale=length_scale,
            noise_scale_w=noise_scale_w,
            sdp_ratio=sdp_ratio,
            noise_w=noise_w,
            noise_z=noise_z,
        )
        return audio


def inference_copy(net_g: nn.Module, cfg: TrialConfig) -> nn.Module:
    """An eval-mode copy of the generator with weight norm folded (what is exported). Built afresh and
    loaded, not deep-copied: removing a parametrisation edits the parametrised class a deep copy shares
    with the original."""
    net = build_generator(cfg)
    net.load_state_dict(net_g.state_dict())
    modules.remove_weight_norm(net)
    return net.eval()


def check_inputs(
    cfg: TrialConfig,
    *,
    phones: list[int] | None = None,
    tones: list[int] | None = None,
    sdp_ratio: float = 0.2,
    noise_scale: float = 0.667,
    noise_scale_w: float = 0.8,
    length_scale: float = 1.0,
    max_frames: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A fixed input (default: ``CHECK_PHONES`` with blanks as ``data.add_blank`` says), seeded noise.

    ``max_frames`` (default 16 per token times ``length_scale``): the frames ``noise_z`` covers."""
    ids = phones if phones is not None else [symbols.SYMBOL_TO_ID[p] for p in CHECK_PHONES]
    tn = tones if tones is not None else list(CHECK_TONES)
    if cfg.data.add_blank:
        ids = [x for p in ids for x in (0, p)] + [0]
        tn = [x for t in tn for x in (0, t)] + [0]
    t = len(ids)
    gen = torch.Generator().manual_seed(seed)
    frames = max_frames or int(16 * t * max(length_scale, 1.0))
    m = cfg.model
    return {
        "phones": np.array([ids], dtype=np.int64),
        "tones": np.array([tn], dtype=np.int64),
        "languages": np.zeros((1, t), dtype=np.int64),
        "bert": np.zeros((1, max(bert_input_dim(m, cfg.data), 1), t), dtype=np.float32),
        "style": np.zeros((1, max(m.style_dim, 1)), dtype=np.float32),
        "sid": np.zeros((1,), dtype=np.int64),
        "sdp_ratio": np.array(sdp_ratio, dtype=np.float32),
        "noise_scale": np.array(noise_scale, dtype=np.float32),
        "noise_scale_w": np.array(noise_scale_w, dtype=np.float32),
        "length_scale": np.array(length_scale, dtype=np.float32),
        "noise_w": torch.randn(1, 2, t, generator=gen).numpy(),
        "noise_z": torch.randn(1, m.inter_channels, frames, generator=gen).numpy(),
    }


def torch_audio(net: nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """PyTorch's output for the graph's inputs (``net``: ``inference_copy`` or the generator itself)."""
    with torch.no_grad():
        out = OnnxSynthesizer(net).eval()(*(torch.from_numpy(np.asarray(inputs[k])) for k in INPUTS))
    return out.numpy()


def session(path: str | Path):
    import onnxruntime as ort  # heavy optional dependency: only the ONNX paths need it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def verify(
    path: str | Path, net: nn.Module, inputs: dict[str, np.ndarray], tolerance: float = TOLERANCE
) -> float:
    """Run the ONNX file and PyTorch on ``inputs``; the max abs difference, or ``OnnxMismatch``."""
    ref = torch_audio(net, inputs)
    (got,) = session(path).run(["audio"], {k: np.asarray(inputs[k]) for k in INPUTS})
    if got.shape != ref.shape:
        raise OnnxMismatch(
            f"{path}: output 'audio' has shape {got.shape}, PyTorch {ref.shape} on the same input "
            "(durations rounded differently)"
        )
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not np.isfinite(diff) or diff > tolerance:
        raise OnnxMismatch(
            f"{path}: output 'audio' differs from PyTorch by max abs {diff:.3g} > tolerance {tolerance:g}"
        )
    return diff


def export_onnx(
    net_g: nn.Module,
    cfg: TrialConfig,
    path: str | Path,
    *,
    tolerance: float = TOLERANCE,
    opset: int = OPSET,
) -> dict[str, Any]:
    """Export the inference graph to ``path`` and verify it (``verify`` on ``check_inputs(cfg)``).

    Returns path, bytes, max difference, tolerance and the input names. A graph that fails the check is
    left at ``<path>.unverified`` and ``OnnxMismatch`` raised; ``path`` itself is only written verified."""
    path = Path(path)
    net = inference_copy(net_g, cfg)
    inputs = check_inputs(cfg)
    tmp = path.with_name(path.name + ".unverified")
    args = tuple(torch.from_numpy(np.asarray(inputs[k])) for k in INPUTS)
    dyn = {
        "phones": {1: "T"},
        "tones": {1: "T"},
        "languages": {1: "T"},
        "bert": {2: "T"},
        "noise_w": {2: "T"},
        "noise_z": {2: "F"},
        "audio": {2: "samples"},
    }
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            OnnxSynthesizer(net).eval(),  # the exporter restores the mode it found, recursively
            args,
            str(tmp),
            input_names=list(INPUTS),
            output_names=["audio"],
            dynamic_axes=dyn,
            opset_version=opset,
            dynamo=False,
        )
    diff = verify(tmp, net, inputs, tolerance)
    os.replace(tmp, path)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "inputs": list(INPUTS),
    }
