"""A fast stand-in for ``model.train.run_trial`` used by the orchestrator tests and the overhead benchmark.

Same signature and sink calls as the real trainer, no torch: the "loss" follows a known law
``L = E + A / N^alpha + B / D^beta`` (N from the model size, D = audio seconds seen, capped by the data
hours), so the plumbing (Ray, MLflow, resume) is tested in seconds per trial.

Behaviour knobs come from ``extra.*`` sweep axes (recorded in ``cfg.axes``):
``extra.step_s`` (sleep per step, default 0.01), ``extra.fail``: ``always`` (raise at step 2 on every
attempt), ``after:K`` (raise once, at step K, on the first attempt only: tests resume-from-checkpoint),
``kill:K`` (at step K of the first attempt the worker process SIGKILLs itself, as the OOM killer would: no
exception, no clean-up, whatever the process held in memory is gone).
Checkpoints are JSON files ``ckpt/step_<n>.json`` every ``train.checkpoint_every`` steps (default 5).

Fine-tuning (``train.init_from``, a trial directory): the parent must have a checkpoint (else the trial raises,
as the real trainer does); the parent's seconds seen transfer as ``TRANSFER`` x that much extra data in the
loss law; ``pretrain_flops`` / ``pretrain_hours`` are logged and ``init.json`` records the parent's finish time
(``done.json``, written when a trial finishes) next to this trial's start, for the stage-order test.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

E, A, ALPHA, B, BETA = 1.5, 40.0, 0.35, 25.0, 0.3
TRANSFER = 0.3


def model_size(cfg) -> int:
    m = cfg.model
    return int(
        12 * m.hidden_channels**2 * m.n_layers + 2 * m.hidden_channels * m.filter_channels * m.n_layers
    )


def loss_law(n_params: float, seconds: float) -> float:
    return E + A / max(n_params, 1.0) ** ALPHA + B / max(seconds, 1.0) ** BETA


def run_trial(cfg, sink, *, resume: bool = True) -> dict:
    out = Path(cfg.output_dir)
    ckdir = out / "ckpt"
    ckdir.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    n = model_size(cfg)
    sec_per_step = t.batch_size * t.segment_size / cfg.data.sampling_rate
    flops_per_step = 6.0 * n * t.batch_size * t.segment_size / cfg.data.hop_length
    steps = int(t.steps) if t.steps else max(1, int((t.compute_budget or 1e9) // flops_per_step))
    unique_s = (cfg.data.data_hours or 0.5) * 3600
    step_s = float(cfg.axes.get("extra.step_s", 0.01))
    fail = str(cfg.axes.get("extra.fail", ""))
    every = t.checkpoint_every or 5

    start = 0
    if resume:
        done = sorted(ckdir.glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
        if done:
            start = json.loads(done[-1].read_text())["step"]
    with open(out / "attempts.jsonl", "a") as f:
        f.write(json.dumps({"start_step": start, "time": time.time()}) + "\n")

    sink.log_params({"fake.law": f"E={E} A={A} alpha={ALPHA} B={B} beta={BETA}"})
    bonus = 0.0
    if t.init_from:
        parent = Path(t.init_from)
        last = sorted((parent / "ckpt").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
        if not last:
            raise FileNotFoundError(f"train.init_from: {parent}: no checkpoint")
        pc = json.loads(last[-1].read_text())
        done = parent / "done.json"
        (out / "init.json").write_text(
            json.dumps(
                {
                    "start": time.time(),
                    "parent_done": json.loads(done.read_text())["time"] if done.exists() else None,
                    "parent": str(parent),
                }
            )
        )
        bonus = TRANSFER * pc.get("seen", 0.0)
        sink.log_params({"pretrain.source": str(last[-1])})
        sink.log_metrics({"pretrain_flops": pc.get("flops", 0.0), "pretrain_hours": pc.get("hours", 0.0)}, 0)
    sink.log_metrics(
        {"params_generator": n, "flops_per_step": flops_per_step, "total_flops": flops_per_step * steps}, 0
    )
    for step in range(start + 1, steps + 1):
        seen = step * sec_per_step
        loss = loss_law(n, min(seen, unique_s) + 0.1 * max(0.0, seen - unique_s) + bonus)
        sink.log_metrics(
            {
                "loss_g_total": loss,
                "loss_mel": loss / 2,
                "flops": step * flops_per_step,
                "data_seen_s": seen,
                "steps": step,
            },
            step,
        )
        if fail == "always" and step == 2:
            raise RuntimeError(f"fake trial failure at step {step} (extra.fail=always)")
        if (
            fail.startswith("after:")
            and step == int(fail.split(":")[1])
            and not (out / "failed_once").exists()
        ):
            (out / "failed_once").write_text("1")
            raise RuntimeError(f"fake trial failure at step {step} (extra.fail={fail}, first attempt)")
        if (
            fail.startswith("kill:")
            and step == int(fail.split(":")[1])
            and not (out / "failed_once").exists()
        ):
            (out / "failed_once").write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)
        if step % every == 0 or step == steps:
            p = ckdir / f"step_{step}.json"
            p.write_text(
                json.dumps(
                    {
                        "step": step,
                        "flops": step * flops_per_step,
                        "seen": min(seen, unique_s),
                        "hours": cfg.data.data_hours or 0.5,
                    }
                )
            )
            sink.log_checkpoint(p, step)
        time.sleep(step_s)
    final = loss_law(n, min(steps * sec_per_step, unique_s) + bonus)
    sink.log_metrics(
        {
            "val_mel_l1": final,
            "dnsmos_ovrl": 1.0 + 3.5 / (1.0 + final),
            "data_hours": cfg.data.data_hours or 0.5,
        },
        steps,
    )
    (out / "done.json").write_text(json.dumps({"time": time.time()}))
    sink.set_status("finished")
    return {"steps": steps, "val_mel_l1": final}
