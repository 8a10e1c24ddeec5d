"""Time one VITS training step (generator + discriminators, forward + backward, both optimizer updates).

    python bench/model_step.py                        # tiny and default configs on CPU (batch 2)
    python bench/model_step.py --config large --batch 8 --steps 3   # on CUDA: bf16, peak memory

Prints seconds per step (after one warm-up step), FLOPs per step (``model.counting``) and the achieved
FLOP rate; on CUDA also the peak allocated memory. The batch is random (utterances of 4 s, as the FLOPs
counter assumes) so the timing includes the alignment search at a realistic length.
"""

from __future__ import annotations

import argparse
import time

import torch

from model.config import PRESETS as CONFIG_PRESETS
from model.config import TrialConfig
from model.counting import count_parameters, flops_per_step, step_shape
from model.step import build_train_state, resolve_device, train_step
from model.text.features import bert_input_dim
from model.text.symbols import NUM_SYMBOLS

PRESETS = {
    "tiny": CONFIG_PRESETS["tiny"],
    "default": CONFIG_PRESETS["default"],
    "large": CONFIG_PRESETS["seed_large"],
}


def random_batch(cfg: TrialConfig, batch_size: int, device: torch.device, utterance_s: float = 4.0):
    shape = step_shape(cfg, batch_size, cfg.train.segment_size, utterance_s)
    d, m = cfg.data, cfg.model
    g = torch.Generator().manual_seed(0)
    b, t, f = shape.batch_size, shape.phones, shape.frames
    wav = 0.1 * torch.randn(b, 1, f * d.hop_length, generator=g)
    from model.audio import spec_from_config

    batch = {
        "phones": torch.randint(1, NUM_SYMBOLS, (b, t), generator=g),
        "tones": torch.randint(0, 2, (b, t), generator=g),
        "languages": torch.zeros(b, t, dtype=torch.long),
        "phone_lengths": torch.full((b,), t, dtype=torch.long),
        "bert": torch.randn(b, bert_input_dim(cfg.model, cfg.data), t, generator=g),
        "style": torch.randn(b, m.style_dim, generator=g),
        "spec": spec_from_config(wav, d),
        "spec_lengths": torch.full((b,), f, dtype=torch.long),
        "wav": wav,
        "wav_lengths": torch.full((b,), f * d.hop_length, dtype=torch.long),
        "speakers": torch.zeros(b, dtype=torch.long),
        "ids": [f"bench{i}" for i in range(b)],
    }
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, batch: int, steps: int, device: torch.device, grad_ckpt: bool, bf16: bool) -> dict:
    cfg = PRESETS[name]()
    cfg.model.gradient_checkpointing = grad_ckpt
    cfg.train.precision = "bf16" if bf16 else "fp32"
    cfg.train.batch_size = batch
    torch.manual_seed(0)
    state = build_train_state(cfg, device)
    data = random_batch(cfg, batch, device)
    flops = flops_per_step(cfg, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = train_step(state, data)  # warm-up (allocator, numba / kernel compilation)
    _sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        out = train_step(state, data)
    _sync(device)
    per_step = (time.perf_counter() - t0) / max(steps, 1)
    res = {
        "config": name,
        "device": str(device),
        "dtype": "bf16" if state.autocast_dtype is not None else "fp32",
        "batch": batch,
        "segment": cfg.train.segment_size,
        "params_g": count_parameters(state.net_g)["total"],
        "params_d": sum(count_parameters(n)["total"] for k, n in state.nets().items() if k != "net_g"),
        "warmup_s": warm,
        "step_s": per_step,
        "flops": flops,
        "tflops_per_s": flops / per_step / 1e12,
        "loss_mel": float(out["loss_mel"]),
    }
    if device.type == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config", choices=sorted(PRESETS), action="append", help="repeatable; default tiny+default"
    )
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 5 tiny, 2 otherwise)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in the generator")
    ap.add_argument("--fp32", action="store_true", help="on CUDA, also time without bf16 autocast")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    configs = args.config or ["tiny", "default"]
    modes = [True] + ([False] if args.fp32 and device.type == "cuda" else [])
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in configs:
        steps = args.steps or (5 if name == "tiny" else 2)
        for bf16 in modes:
            r = bench(name, args.batch, steps, device, args.grad_ckpt, bf16)
            line = (
                f"{r['config']:>8} {r['dtype']:>4} batch {r['batch']} seg {r['segment']}: "
                f"G {r['params_g'] / 1e6:.2f}M D {r['params_d'] / 1e6:.2f}M  "
                f"{r['step_s'] * 1e3:9.1f} ms/step (warm-up {r['warmup_s']:.2f} s, {steps} timed)  "
                f"{r['flops'] / 1e9:9.1f} GFLOP/step  {r['tflops_per_s'] * 1e3:8.2f} GFLOP/s"
            )
            if "peak_mem_gib" in r:
                line += f"  peak {r['peak_mem_gib']:.2f} GiB"
            print(line, flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
