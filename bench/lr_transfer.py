"""Does the best learning rate stay put across widths? Standard parametrization against muP.

    OMP_NUM_THREADS=1 nice -n 10 python bench/lr_transfer.py                 # the default grid (~15 min)
    python bench/lr_transfer.py --widths 16 32 --lrs 1e-4 1e-3 --steps 20  # a quick look

For every width x learning rate x parametrization it trains the tiny config (hidden = inter = width,
filter = 2 x width, decoder and discriminators fixed, no dropout; muP base width = the smallest width) for
``--steps`` steps at a constant lr (no schedule, so only the lr differs) on the same synthetic data, then
prints the held-out ``val_nelbo`` (``model.train.evaluate``, the metric the scaling fits use) at each lr,
the best lr per width and whether it moves across widths. Figures are printed, nothing is asserted.

The data (same for every run, seeded): a toy text-to-speech task in which text matters, so the text
encoder, flow and duration predictors (the parts muP rescales) have something to learn. Each utterance is
a sequence of phone tokens drawn from a few symbols, each held for 2-6 frames and sounded as a harmonic
tone whose pitch the symbol sets (a different timbre per speaker); BERT and style inputs are zero, as in
the offline demo. Training cycles through a fixed pool of batches; the held-out batches are separate
utterances of the same task. A run whose loss goes non-finite is reported as ``nan`` and never wins.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from model.audio import spec_from_config
from model.config import TrialConfig, tiny_config
from model.parametrization import at_width
from model.step import build_train_state, train_step
from model.text.features import bert_input_dim
from model.train.evaluate import evaluate

SYMBOLS = 8  # phone ids 1..8 of the symbol table, each a pitch


def config(width: int, mode: str, base: int, lr: float) -> TrialConfig:
    """The tiny config at ``width`` (hidden = inter = width, filter = 2 x width), no dropout, lr ``lr``."""
    cfg = at_width(tiny_config(), width)
    cfg.model.p_dropout, cfg.train.learning_rate, cfg.eval.mos_backend = 0.0, lr, "none"
    cfg.model.parametrization, cfg.model.mup_base_width = mode, base
    return cfg


def toy_batch(cfg: TrialConfig, gen: torch.Generator, batch: int = 2, tokens: int = 10) -> dict:
    """One batch of the toy task in the data loader's format (item 0 the longest, zero padding)."""
    d, m = cfg.data, cfg.model
    hop, sr = d.hop_length, d.sampling_rate
    n_tok = [tokens] + [
        int(torch.randint(tokens - 3, tokens + 1, (1,), generator=gen)) for _ in range(batch - 1)
    ]
    phones = torch.zeros(batch, tokens, dtype=torch.long)
    durs = torch.zeros(batch, tokens, dtype=torch.long)
    for i, n in enumerate(n_tok):
        phones[i, :n] = torch.randint(1, SYMBOLS + 1, (n,), generator=gen)
        durs[i, :n] = torch.randint(2, 7, (n,), generator=gen)
    frames = durs.sum(1)
    order = torch.argsort(frames, descending=True)  # the longest item first, as the bucketed loader does
    phones, durs, frames = phones[order], durs[order], frames[order]
    phone_lengths = torch.tensor(n_tok)[order]
    t_y = int(frames[0])
    speakers = torch.randint(0, d.n_speakers, (batch,), generator=gen)
    wav = torch.zeros(batch, 1, t_y * hop)
    for i in range(batch):
        pos, phase = 0, 0.0
        bright = 0.4 + 0.15 * int(speakers[i])  # timbre per speaker: how fast the harmonics fall off
        for k in range(int(phone_lengths[i])):
            f0 = 140.0 * 2 ** (int(phones[i, k]) / 6)
            n = int(durs[i, k]) * hop
            tt = torch.arange(n) / sr
            tone = sum(bright**h * torch.sin(2 * math.pi * f0 * (h + 1) * tt + phase) for h in range(4))
            wav[i, 0, pos : pos + n] = 0.25 * tone
            phase += 2 * math.pi * f0 * n / sr
            pos += n
    spec = spec_from_config(wav, d)[..., :t_y]
    fmask = (torch.arange(t_y).unsqueeze(0) < frames.unsqueeze(1)).unsqueeze(1)
    t_x = tokens
    return {
        "phones": phones,
        "tones": torch.zeros(batch, t_x, dtype=torch.long),
        "languages": torch.zeros(batch, t_x, dtype=torch.long),
        "phone_lengths": phone_lengths,
        "bert": torch.zeros(batch, bert_input_dim(cfg.model, cfg.data), t_x),
        "style": torch.zeros(batch, m.style_dim),
        "spec": spec * fmask,
        "spec_lengths": frames,
        "wav": wav,
        "wav_lengths": frames * hop,
        "speakers": speakers,
        "ids": [f"toy{i}" for i in range(batch)],
    }


def toy_data(cfg: TrialConfig, n_train: int, n_val: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    gen = torch.Generator().manual_seed(seed)
    batches = [toy_batch(cfg, gen) for _ in range(n_train + n_val)]
    return batches[:n_train], batches[n_train:]


def run(cfg: TrialConfig, train: list[dict], val: list[dict], steps: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    state = build_train_state(cfg, "cpu")
    mel = []
    for step in range(steps):
        out = train_step(state, train[step % len(train)])
        mel.append(out["loss_mel"])
    last = torch.stack(mel[-max(1, steps // 5) :])
    if not bool(torch.isfinite(last).all()):
        return {"val_nelbo": math.nan, "train_mel": math.nan}
    try:
        m = evaluate(state.net_g, val, cfg, synthesis=False).metrics
    except (RuntimeError, ValueError):  # a diverged net can fail inside the alignment search
        return {"val_nelbo": math.nan, "train_mel": math.nan}
    return {"val_nelbo": float(m["val_nelbo"]), "train_mel": float(last.mean())}


def best(row: dict[float, dict[str, float]], key: str) -> float | None:
    ok = {lr: r[key] for lr, r in row.items() if math.isfinite(r[key])}
    return min(ok, key=ok.get) if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 2.5e-4, 6e-4, 1.5e-3, 4e-3])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--train-batches", type=int, default=12)
    ap.add_argument("--val-batches", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", default=["standard", "mup"], choices=["standard", "mup"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = min(args.widths)
    train, val = toy_data(
        config(base, "standard", base, 1e-4), args.train_batches, args.val_batches, args.seed
    )
    frames = sum(int(b["spec_lengths"].sum()) for b in train) / sum(len(b["ids"]) for b in train)
    print(
        f"tiny config, widths {args.widths} (muP base {base}), {args.steps} steps at constant lr, batch 2, "
        f"{args.train_batches} training batches (mean {frames:.0f} frames), {args.val_batches} held-out; "
        f"seed {args.seed}; metric: held-out val_nelbo (lower is better)"
    )
    t0 = time.perf_counter()
    results: dict[tuple[str, int], dict[float, dict[str, float]]] = {}
    for mode in args.modes:
        for width in args.widths:
            row = results[(mode, width)] = {}
            for lr in args.lrs:
                t = time.perf_counter()
                row[lr] = run(config(width, mode, base, lr), train, val, args.steps, args.seed)
                print(
                    f"  {mode:8s} width {width:4d} lr {lr:8.2e}: val_nelbo {row[lr]['val_nelbo']:9.3f} "
                    f"train mel {row[lr]['train_mel']:7.3f}  ({time.perf_counter() - t:5.1f} s)",
                    flush=True,
                )
    print(f"\n{time.perf_counter() - t0:.0f} s in all\n")
    head = " ".join(f"{lr:>9.1e}" for lr in args.lrs)
    print(f"{'parametrization':15s} {'width':>5s} {head}   best lr")
    for (mode, width), row in results.items():
        b = best(row, "val_nelbo")
        cells = " ".join((f"{row[lr]['val_nelbo']:8.3f}" + ("*" if lr == b else " ")) for lr in args.lrs)
        edge = " (grid edge)" if b in (args.lrs[0], args.lrs[-1]) else ""
        print(f"{mode:15s} {width:5d} {cells}   {b if b is None else f'{b:.1e}'}{edge}")
    print()
    for mode in args.modes:
        winners = [best(results[(mode, w)], "val_nelbo") for w in args.widths]
        idx = [args.lrs.index(b) for b in winners if b is not None]
        moved = max(idx) - min(idx) if idx else None
        text = ", ".join(
            f"{w}: {b if b is None else f'{b:.1e}'}" for w, b in zip(args.widths, winners, strict=True)
        )
        print(f"{mode:8s} best lr per width: {text}; spread across widths: {moved} grid step(s)")


if __name__ == "__main__":
    main()
