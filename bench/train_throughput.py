"""Training-loop throughput of the trial trainer: steps/s and audio-seconds/s (real loader + train_step).

    python bench/train_throughput.py                          # tiny and default configs (CPU or CUDA)
    python bench/train_throughput.py --config large --batch 8 --grad-ckpt both        # on CUDA
    python bench/train_throughput.py --find-max-batch --config default --config large --grad-ckpt both

Loop mode: the built-in corpus (``--hours`` of audio, built in a temporary directory at each config's
sample rate; ``--synthetic`` uses random batches of ``--utterance-s`` instead) goes through the trainer's
own loader (``model.train.data.TrialData``: bucketed batches, pinned memory on CUDA) into
``model.step.train_step``; after ``--warmup`` steps, ``--steps`` steps are timed with one device sync at the
end (the trainer never syncs per step either). Prints steps/s, audio seconds per second (audio in the
batches / wall time) and, on CUDA, the peak allocated memory; bf16 autocast on CUDA unless ``--fp32``
(``--fp32 both`` times both).

``--find-max-batch`` (CUDA): the largest batch of ``--utterance-s``-second utterances whose training step
fits under ``--mem-cap-gib`` (default 24 GiB, a 24 GB card): the process is limited to that share of the
device (``torch.cuda.set_per_process_memory_fraction``), batches double until a step runs out of memory,
then bisect. Each candidate runs two steps (the second one allocates the optimizer state's steady state).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import PRESETS as CONFIG_PRESETS  # noqa: E402
from model.config import TrialConfig  # noqa: E402
from model.counting import step_shape  # noqa: E402
from model.step import build_train_state, resolve_device, train_step  # noqa: E402
from model.text.features import bert_input_dim  # noqa: E402

PRESETS = {
    "tiny": CONFIG_PRESETS["tiny"],
    "default": CONFIG_PRESETS["default"],
    "large": CONFIG_PRESETS["seed_large"],
}


def synthetic_batch(cfg: TrialConfig, batch: int, utterance_s: float, seed: int = 0) -> dict:
    """Random utterances of ``utterance_s`` seconds in the batch contract (spectrogram of the random wav)."""
    from model.audio import spec_from_config
    from model.text.symbols import NUM_SYMBOLS

    shape = step_shape(cfg, batch, cfg.train.segment_size, utterance_s)
    d, m = cfg.data, cfg.model
    g = torch.Generator().manual_seed(seed)
    b, t, f = shape.batch_size, shape.phones, shape.frames
    wav = 0.1 * torch.randn(b, 1, f * d.hop_length, generator=g)
    return {
        "phones": torch.randint(1, NUM_SYMBOLS, (b, t), generator=g),
        "tones": torch.randint(0, 2, (b, t), generator=g),
        "languages": torch.zeros(b, t, dtype=torch.long),
        "phone_lengths": torch.full((b,), t, dtype=torch.long),
        "bert": torch.zeros(b, bert_input_dim(cfg.model, cfg.data), t),
        "style": torch.zeros(b, m.style_dim),
        "spec": spec_from_config(wav, d),
        "spec_lengths": torch.full((b,), f, dtype=torch.long),
        "wav": wav,
        "wav_lengths": torch.full((b,), f * d.hop_length, dtype=torch.long),
        "speakers": torch.zeros(b, dtype=torch.long),
        "ids": [f"bench{i}" for i in range(b)],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cfg(name: str, batch: int, grad_ckpt: bool, bf16: bool, workdir: Path, hours: float) -> TrialConfig:
    cfg = PRESETS[name]()
    cfg.train.batch_size = batch
    cfg.train.precision = "bf16" if bf16 else "fp32"
    cfg.model.gradient_checkpointing = grad_ckpt
    d = cfg.data
    d.corpus_dir, d.cache_dir = str(workdir / "corpus"), str(workdir / "cache")
    d.builtin_hours, d.val_utterances = hours, 2
    return cfg


def _batches(cfg: TrialConfig, device: torch.device, synthetic: bool, utterance_s: float):
    """An endless iterator of training batches (the trainer's loader, epoch after epoch)."""
    if synthetic:
        b = synthetic_batch(cfg, cfg.train.batch_size, utterance_s)
        while True:
            yield b
    from model.train.data import TrialData

    data = TrialData.prepare(cfg, device=device)
    epoch = 0
    while True:
        yield from data.train_loader(epoch)
        epoch += 1


def loop_throughput(cfg: TrialConfig, device: torch.device, steps: int, warmup: int, batches) -> dict:
    torch.manual_seed(0)
    state = build_train_state(cfg, device)
    sr = cfg.data.sampling_rate
    for _ in range(warmup):
        train_step(state, next(batches))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    audio_s = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        b = next(batches)
        audio_s += float(b["wav_lengths"].sum()) / sr
        out = train_step(state, b)
    _sync(device)
    dt = time.perf_counter() - t0
    res = {
        "steps_per_s": steps / dt,
        "audio_s_per_s": audio_s / dt,
        "s_per_step": dt / steps,
        "loss_mel": float(out["loss_mel"]),
        "dtype": "bf16" if state.autocast_dtype is not None else "fp32",
    }
    if device.type == "cuda":
        res["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del state
    return res


def fits(cfg: TrialConfig, device: torch.device, batch: int, utterance_s: float) -> tuple[bool, float]:
    cfg.train.batch_size = batch
    state = None
    gc.collect()
    torch.cuda.empty_cache()
    try:
        torch.manual_seed(0)
        state = build_train_state(cfg, device)
        b = synthetic_batch(cfg, batch, utterance_s)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(2):
            train_step(state, b)
        torch.cuda.synchronize(device)
        return True, torch.cuda.max_memory_allocated(device) / 2**30
    except torch.cuda.OutOfMemoryError:
        return False, float("nan")
    finally:
        del state
        gc.collect()
        torch.cuda.empty_cache()


def find_max_batch(cfg: TrialConfig, device: torch.device, utterance_s: float, limit: int = 1024):
    ok, peak = fits(cfg, device, 1, utterance_s)
    if not ok:
        return 0, {}
    peaks = {1: peak}
    lo, hi = 1, None
    while hi is None and lo < limit:  # double until it no longer fits
        ok, peak = fits(cfg, device, lo * 2, utterance_s)
        if ok:
            lo *= 2
            peaks[lo] = peak
        else:
            hi = lo * 2
    if hi is None:
        return lo, peaks
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, peak = fits(cfg, device, mid, utterance_s)
        if ok:
            lo, peaks[mid] = mid, peak
        else:
            hi = mid
    return lo, peaks


def _modes(flag: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[flag]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config", choices=sorted(PRESETS), action="append", help="repeatable; default tiny+default"
    )
    ap.add_argument("--batch", type=int, default=0, help="default: the config's train.batch_size")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 10 tiny, 3 otherwise)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--grad-ckpt", choices=["off", "on", "both"], default="off")
    ap.add_argument("--fp32", choices=["off", "on", "both"], default="off", help="CUDA: time without bf16")
    ap.add_argument("--synthetic", action="store_true", help="random batches instead of the built-in corpus")
    ap.add_argument("--utterance-s", type=float, default=8.0, help="synthetic / max-batch utterance length")
    ap.add_argument("--hours", type=float, default=0.02, help="built-in corpus size for loop mode")
    ap.add_argument("--find-max-batch", action="store_true", help="CUDA: largest batch under --mem-cap-gib")
    ap.add_argument("--mem-cap-gib", type=float, default=24.0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    configs = args.config or ["tiny", "default"]
    name_gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name_gpu}), torch {torch.__version__}, threads {torch.get_num_threads()}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="vits_bench_") as tmp:
        if args.find_max_batch:
            if device.type != "cuda":
                sys.exit("--find-max-batch needs a CUDA device")
            total = torch.cuda.get_device_properties(device).total_memory / 2**30
            frac = min(1.0, args.mem_cap_gib / total)
            torch.cuda.set_per_process_memory_fraction(frac, device)
            print(
                f"memory cap {args.mem_cap_gib:.1f} GiB of {total:.1f} GiB; utterances {args.utterance_s:g} s"
            )
            for name in configs:
                for gc_on in _modes(args.grad_ckpt):
                    for fp32 in _modes(args.fp32):
                        cfg = _cfg(name, 1, gc_on, not fp32, Path(tmp), args.hours)
                        t0 = time.perf_counter()
                        best, peaks = find_max_batch(cfg, device, args.utterance_s)
                        print(
                            f"{name:>8} {'fp32' if fp32 else 'bf16'} grad-ckpt {'on ' if gc_on else 'off'}: "
                            f"max batch {best} (peak {peaks.get(best, float('nan')):.2f} GiB; "
                            f"searched in {time.perf_counter() - t0:.0f} s)",
                            flush=True,
                        )
            return

        for name in configs:
            steps = args.steps or (10 if name == "tiny" else 3)
            for gc_on in _modes(args.grad_ckpt):
                for fp32 in _modes(args.fp32) if device.type == "cuda" else [True]:
                    cfg = _cfg(
                        name,
                        args.batch or PRESETS[name]().train.batch_size,
                        gc_on,
                        not fp32,
                        Path(tmp),
                        args.hours,
                    )
                    batches = _batches(cfg, device, args.synthetic, args.utterance_s)
                    r = loop_throughput(cfg, device, steps, args.warmup, batches)
                    line = (
                        f"{name:>8} {r['dtype']} batch {cfg.train.batch_size} seg {cfg.train.segment_size} "
                        f"grad-ckpt {'on ' if gc_on else 'off'}: {r['steps_per_s']:.3f} steps/s "
                        f"({r['s_per_step'] * 1e3:.0f} ms/step), {r['audio_s_per_s']:.2f} audio s/s "
                        f"[{'synthetic' if args.synthetic else 'built-in corpus'}, {steps} timed steps]"
                    )
                    if "peak_gib" in r:
                        line += f", peak {r['peak_gib']:.2f} GiB"
                    print(line, flush=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
