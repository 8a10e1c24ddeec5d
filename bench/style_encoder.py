"""Benchmark: style-vector cost (data.style_encoder) per hour of audio and the style cache's size per hour.

    python bench/style_encoder.py [--hours 0.05] [--encoder resemblyzer] [--speakers 4]

Builds a built-in corpus (16 kHz) in a temporary directory, embeds every utterance once through
``model.data.style.StyleCache`` and prints the one-time load + warm-up seconds, CPU and wall seconds per
hour of audio (steady state, after the warm-up), milliseconds per utterance, the cache file's bytes per
hour, and a leave-one-out nearest-speaker-centroid accuracy (what the vectors mean). Nothing is kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=0.05)
    ap.add_argument("--encoder", default="resemblyzer")
    ap.add_argument("--speakers", type=int, default=4)
    args = ap.parse_args()

    import numpy as np
    import torch

    from model.config import tiny_config
    from model.data.builtin import build_builtin_corpus
    from model.data.manifest import fingerprint
    from model.data.sources import load_validated_manifest
    from model.data.style import StyleCache, load_encoder, read_audio

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        c = build_builtin_corpus(
            Path(tmp) / "corpus",
            args.hours,
            seed=0,
            sample_rate=16000,
            speakers=args.speakers,
            progress=False,
        )
        cfg = tiny_config()
        cfg.data.corpus, cfg.data.cache_dir = str(c.esd_list), str(Path(tmp) / "cache")
        items = load_validated_manifest(cfg)[1]
        t0 = time.perf_counter()
        enc = load_encoder(args.encoder)
        w, sr = read_audio(items[0].path)
        enc.embed([w], sr)
        warm = time.perf_counter() - t0
        secs = sum(i.duration for i in items)
        cache = StyleCache(Path(tmp) / "cache", fingerprint(items), args.encoder)
        c0, t0 = time.process_time(), time.perf_counter()
        vecs, st = cache.prepare(items, style_dim=enc.dim or 256)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        size = cache.path.stat().st_size
    V = np.stack([vecs[i.id] for i in items])
    S = np.array([i.speaker for i in items])
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    hits = 0
    for k in range(len(S)):
        keep = np.arange(len(S)) != k
        cents = {s: V[keep & (S == s)].mean(0) for s in set(S)}
        hits += max(cents, key=lambda s: float(V[k] @ cents[s] / np.linalg.norm(cents[s]))) == S[k]
    print(f"encoder {args.encoder}: {len(items)} utterances, {secs:.0f} s of audio, {len(set(S))} speakers")
    print(f"load + warm-up: {warm:.1f} s (once per process)")
    print(f"embedding: {cpu / secs * 3600:.0f} CPU-s and {wall / secs * 3600:.0f} wall-s per hour of audio, "
          f"{1000 * cpu / len(items):.0f} CPU-ms per utterance (mean {secs / len(items):.1f} s; one thread)")  # fmt: skip
    print(f"cache: {size / 1e6:.3f} MB, {size / secs * 3600 / 1e6:.2f} MB per hour of audio ({st.path})")
    print(f"leave-one-out nearest speaker centroid: {hits}/{len(S)} (chance {1 / len(set(S)):.2f})")


if __name__ == "__main__":
    main()
