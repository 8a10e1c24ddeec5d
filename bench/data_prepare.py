"""Benchmark: built-in corpus synthesis and feature preparation speed, and cache size per hour of audio.

    python bench/data_prepare.py [--hours 0.05] [--sample-rate 44100] [--workers 2]

Prints hours of audio synthesised per minute, hours of audio prepared (validation + features) per minute
and the feature-cache size per hour of audio, for the given sample rate with Style-Bert-VITS2's feature
settings scaled to it (44.1 kHz: n_fft 2048, hop 512; 16 kHz: n_fft 512, hop 128). Works in a temporary
directory; nothing is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=0.05)
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import resource

    from model.config import TrialConfig
    from model.data import build_builtin_corpus, prepare_data

    def cpu() -> float:  # CPU seconds of this process and its (reaped) worker processes
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    with tempfile.TemporaryDirectory() as tmp:
        c0 = cpu()
        t0 = time.perf_counter()
        c = build_builtin_corpus(
            Path(tmp) / "corpus",
            args.hours,
            seed=0,
            sample_rate=args.sample_rate,
            workers=args.workers,
            progress=False,
        )
        synth_s = time.perf_counter() - t0
        synth_cpu = cpu() - c0

        cfg = TrialConfig()
        d = cfg.data
        d.sampling_rate = args.sample_rate
        if args.sample_rate <= 24000:
            d.filter_length = d.win_length = 512 if args.sample_rate <= 16000 else 1024
            d.hop_length = 128 if args.sample_rate <= 16000 else 256
        d.corpus = str(c.esd_list)
        d.cache_dir = str(Path(tmp) / "cache")
        d.val_utterances = 2
        d.prepare_workers = args.workers
        c0 = cpu()
        t0 = time.perf_counter()
        p = prepare_data(cfg)
        prep_s = time.perf_counter() - t0
        prep_cpu = cpu() - c0
        t0 = time.perf_counter()
        p2 = prepare_data(cfg)
        again_s = time.perf_counter() - t0
        size = p.cache.size_bytes()
        t0 = time.perf_counter()
        n_batches = 0
        for _ in p.make_loader("train", batch_size=8, seed=0):
            n_batches += 1
        load_s = time.perf_counter() - t0

    h = c.hours
    print(
        f"corpus: {c.n_items} utterances, {h * 60:.2f} min of audio at {args.sample_rate} Hz, "
        f"{args.workers} workers, {os.cpu_count()} cores"
    )
    load = os.getloadavg()[0]
    print(
        f"load average {load:.1f} on {os.cpu_count()} cores (wall-clock figures shrink when the machine is shared)"
    )
    print(
        f"synthesis:        {h / (synth_s / 60):.3f} h of audio per minute ({synth_s:.1f} s wall); "
        f"{h / (synth_cpu / 60):.3f} h per CPU-minute (one core)"
    )
    print(
        f"prepare (cold):   {h / (prep_s / 60):.3f} h of audio per minute ({prep_s:.1f} s: validation + "
        f"spectrogram n_fft {d.filter_length} hop {d.hop_length} + g2p, BERT off); "
        f"{h / (prep_cpu / 60):.3f} h per CPU-minute"
    )
    print(f"prepare (again):  {again_s:.3f} s, {p2.stats.computed} items computed")
    print(f"loading:          {n_batches} batches of 8 in {load_s:.2f} s")
    mb_h = (size["audio"] + size["text"]) / 1e6 / h
    print(
        f"cache size:       {mb_h:.0f} MB per hour of audio (audio {size['audio'] / 1e6 / h:.0f}, "
        f"text {size['text'] / 1e6 / h:.1f}); BERT on adds ~{1024 * 2 * 30 * 1000 / 1e6:.0f} MB/h "
        "(1024 x fp16 per character, ~30 characters x ~1000 utterances per hour)"
    )


if __name__ == "__main__":
    main()
