"""Export figures for a preset's generator (randomly initialised: sizes and speed need no training).

Prints the Style-Bert-VITS2 export's file list with sizes, the ONNX export's max difference from PyTorch
on the fixed check input, and CPU inference RTF (wall time / audio seconds) of PyTorch and onnxruntime on
one sentence (``model.onnx_export.CHECK_PHONES``, ~2 s of audio: the length scale is set so that an
untrained duration predictor gives a realistic length). Figures are printed, never asserted.

    OMP_NUM_THREADS=1 python bench/onnx_rtf.py [--preset default] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from model import onnx_export as ox
from model import sbv2
from model.config import preset_config
from model.step import build_generator
from orchestrator.export import style_table


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--audio-s", type=float, default=2.0, help="target length of the sentence's audio")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset_config(args.preset)
    torch.manual_seed(0)
    net = build_generator(cfg).eval()
    n_params = sum(p.numel() for p in net.parameters())
    print(f"preset {args.preset}: generator {n_params / 1e6:.1f} M parameters, {cfg.data.sampling_rate} Hz")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model_assets" / args.preset
        names, vectors = style_table(cfg)
        files = sbv2.write_model_assets(net, cfg, out, args.preset, names, vectors)
        print("Style-Bert-VITS2 export (model_assets/<name>/):")
        for f, n in files.items():
            print(f"  {f:28s} {n:>14,d} bytes  ({n / 2**20:.1f} MiB)")
        t = time.perf_counter()
        res = ox.export_onnx(net, cfg, Path(tmp) / f"{args.preset}.onnx")
        print(
            f"ONNX export: {res['bytes']:,} bytes ({res['bytes'] / 2**20:.1f} MiB), "
            f"{time.perf_counter() - t:.1f} s; max abs diff vs PyTorch {res['max_abs_diff']:.3g} "
            f"(tolerance {res['tolerance']:g})"
        )
        ref = ox.inference_copy(net, cfg)
        inp = ox.check_inputs(cfg)
        frames = ox.torch_audio(ref, inp).shape[-1] / cfg.data.hop_length
        scale = args.audio_s * cfg.data.sampling_rate / cfg.data.hop_length / frames
        inp = ox.check_inputs(cfg, length_scale=scale)
        audio = ox.torch_audio(ref, inp)
        sec = audio.shape[-1] / cfg.data.sampling_rate
        diff = ox.verify(res["path"], ref, inp)
        sess = ox.session(res["path"])
        t_pt = _best_of(lambda: ox.torch_audio(ref, inp), args.repeats)
        t_ox = _best_of(lambda: sess.run(["audio"], inp), args.repeats)
        print(
            f"one sentence: {inp['phones'].shape[1]} tokens, {sec:.2f} s of audio (length_scale {scale:.2f}); "
            f"ONNX max abs diff {diff:.3g} (audio peak {abs(audio).max():.3g}); {args.threads} CPU thread(s), "
            f"median of {args.repeats}"
        )
        print(f"  PyTorch      {t_pt:.3f} s  RTF {t_pt / sec:.3f}")
        print(f"  onnxruntime  {t_ox:.3f} s  RTF {t_ox / sec:.3f}")


if __name__ == "__main__":
    main()
