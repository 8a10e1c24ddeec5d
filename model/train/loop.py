"""``run_trial(cfg, sink)``: one trial from config to final metrics.

Parts (each swappable, torchtitan-style): data (``data.py``), nets + optimizers + the step
(``model.step``), budget (``budget.py``), checkpoints (``checkpoint.py``), evaluation (``evaluate.py``).

The loop keeps the device busy: ``train_step`` returns detached device tensors; they are summed on the device
and moved to the host in one transfer every ``train.log_interval`` steps, where the divergence guard
looks at them (a non-finite loss ends the trial with status ``diverged``; nothing is raised). Logged at
every log step: the mean losses since the last log, ``steps``, ``epoch``, ``lr`` and ``lr_d`` (the
generator's and the discriminator's lr of the update just taken, from the schedule), ``flops``
(cumulative: steps x flops_per_step), ``data_seen_s`` (audio seconds of the batches trained on),
``data_hours`` (unique hours of the training subset), throughput (``steps_per_s``, ``audio_s_per_s``).
Once at step 0: parameter counts (total and per submodule: ``params_enc_p``, ``params_enc_q``,
``params_flow``, ``params_dec``, ``params_sdp``, ``params_dp``, ``params_emb_g``, ``params_disc_mpd`` [,
``params_disc_dur_disc``, ``params_disc_wavlm_disc``]), ``flops_per_step`` (measured with
``model.counting`` at the training set's mean utterance length), ``total_flops`` (planned),
``steps_planned``, ``warmup_steps``.

The lr schedule (``model.train.schedule``) is planned with the steps (``plan_budget``). WSD trunk and
branches (docs/recipe.md): a trunk (``train.branch_budgets``) writes ``branch_points.json`` in its output
directory at the start (``{"cooldown_frac", "flops_per_step", "points": [{"budget", "steps",
"branch_step", "checkpoint"}]}``, also logged as an artifact), saves a kept checkpoint at every branch
point and logs the metric ``branch_step`` (= the step) there. A branch (``train.branch_from``) starts from
the trunk's checkpoint at its own branch point as a full resume (nets, optimizers, schedulers, step, data
position, counters, random state), logs ``branch_step`` at that step and the param ``branch.source``, and
trains the cooldown to its own planned steps; a retry resumes from the branch's own checkpoint.

CPU runs are reproducible (seeded; a resumed run ends with the same weights as an uninterrupted one, and a
branch the same weights as an independent WSD trial of its budget). ``train.precision``: fp32 (TF32 off),
tf32 (TF32 matmuls and convolutions) or bf16 (autocast in ``model.step``) on CUDA; CPU always runs fp32
(a warning once per process when tf32/bf16 was asked). CUDA also gets cudnn.benchmark, pinned memory and
fused AdamW.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import TrialConfig
from model.counting import flops_per_step, parameter_counts
from model.mas import maximum_path
from model.metrics.mos import load_utmos
from model.sink import Sink
from model.step import resolve_device, scheduled_lr, train_step
from model.text.features import resolve_text_dims
from model.train import checkpoint as ckpt
from model.train.budget import Budget, plan_budget
from model.train.data import TrialData
from model.train.evaluate import evaluate, laplace_scale
from model.train.init import InitError, build_state, info_from_state, load_init, resolve_init_path
from model.train.schedule import lr_lambda

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrialResult:
    status: str  # finished | diverged | failed
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)  # final evaluation (and last train losses)
    checkpoint: str | None = None
    output_dir: str = ""
    message: str = ""


class Diverged(Exception):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_warned_cpu_precision = False


def setup_backends(device: torch.device, cfg: TrialConfig) -> None:
    """``train.precision`` on this device (see the module docstring), cudnn.benchmark, determinism."""
    global _warned_cpu_precision
    precision = cfg.train.precision
    if device.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32  # process-wide: set for every trial, both ways
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            log.warning("%s has no bf16 support: training in fp32", torch.cuda.get_device_name(device))
            cfg.train.precision = "fp32"
    elif precision != "fp32" and not _warned_cpu_precision:
        log.warning("train.precision %s applies to CUDA only: this %s run trains in fp32", precision, device)
        _warned_cpu_precision = True
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def warm_numba_threads() -> None:
    """The first numba ``parallel=True`` call (MAS) starts an OpenMP pool and changes torch's thread count
    (1 -> cores). Trigger it once up front and restore the count, so every step of a run - and of a resumed
    run - uses the same number of threads (and so the same float reduction order)."""
    n = torch.get_num_threads()
    try:
        v = torch.zeros(1, 2, 2)
        maximum_path(v, torch.ones(1, 2, 2), impl="numba")
    except Exception:  # pragma: no cover - numba could not start its pool: nothing to warm
        pass
    torch.set_num_threads(n)


def system_params(device: torch.device) -> dict[str, str]:
    """Where the trial ran (the analysis reads ``system.gpu_name`` to attribute measured throughput)."""
    p = {"system.device": device.type, "system.torch": torch.__version__}
    if device.type == "cuda":
        p["system.gpu_name"] = torch.cuda.get_device_name(device)
    return p


def _static_metrics(cfg: TrialConfig, budget: Budget, data: TrialData) -> dict[str, float]:
    counts = parameter_counts(cfg)
    m: dict[str, float] = {
        "params_generator": counts["generator"]["total"],
        "params_discriminator": counts["discriminator"]["total"],
    }
    for part, n in counts["generator"].items():
        if part != "total":
            m[f"params_{part}"] = n
    for part, n in counts["discriminator"].items():
        if part != "total":
            m[f"params_disc_{part}"] = n
    m.update(
        flops_per_step=budget.flops_per_step,
        total_flops=budget.total_flops,
        steps_planned=budget.steps,
        warmup_steps=budget.schedule.warmup_steps,
        data_hours=data.data_hours,
        available_hours=float(data.prepared.available_hours),
        nelbo_laplace_scale=laplace_scale(cfg),
        batches_per_epoch=data.batches_per_epoch(),
        # the text-feature model (frozen, computed once into the cache): reported, not in N or C
        params_text_model=data.prepared.params_text_model,
        flops_text_features=data.prepared.flops_text_features,
    )
    if budget.compute_budget is not None:
        m["compute_budget"] = budget.compute_budget
    return m


def _write_branch_points(cfg: TrialConfig, budget: Budget, sink: Sink) -> Path:
    """``<output_dir>/branch_points.json`` of a trunk (module docstring), written before the first step."""
    ckdir = ckpt.checkpoint_dir(cfg)
    points = [
        {"budget": b, "steps": total, "branch_step": s, "checkpoint": str(ckdir / f"ckpt_{s:08d}.pt")}
        for b, (total, s) in sorted(budget.branch_points.items(), key=lambda kv: kv[1][1])
    ]
    out = Path(cfg.output_dir) / "branch_points.json"
    doc = {
        "cooldown_frac": cfg.train.cooldown_frac,
        "flops_per_step": budget.flops_per_step,
        "points": points,
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(out)
    sink.log_artifact(out)
    return out


def run_trial(
    cfg: TrialConfig,
    sink: Sink,
    *,
    resume: bool = True,
    progress: Progress | None = None,
    step_fn: Callable | None = None,
    raise_errors: bool = True,
) -> TrialResult:
    """Train and evaluate one trial; see the module docstring.

    ``step_fn(state, batch) -> dict[str, Tensor]`` replaces ``model.step.train_step`` (tests inject faults).
    An exception marks the trial ``failed`` on the sink and is re-raised (the orchestrator retries from the
    last checkpoint) unless ``raise_errors`` is False, in which case a failed ``TrialResult`` is returned.
    """
    try:
        return _run(cfg, sink, resume=resume, progress=progress, step_fn=step_fn)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        log.exception("trial %s failed", cfg.trial_id)
        try:
            sink.set_status("failed", msg)
        except Exception:  # the sink itself may be what failed
            log.exception("could not record the failure on the sink")
        if raise_errors:
            raise
        return TrialResult("failed", 0, output_dir=cfg.output_dir, message=msg)


def _run(cfg, sink, *, resume, progress, step_fn) -> TrialResult:
    step_fn = step_fn or train_step
    t, e = cfg.train, cfg.eval
    # train.scheduler_per and eval.mos_backend are choices: checked when the config is built (model.config)
    if t.log_interval < 1:
        raise ValueError(f"train.log_interval must be >= 1, got {t.log_interval}")
    if e.mos_backend == "utmos" and e.n_utterances > 0:  # fail now, not after hours of training
        load_utmos()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(t.device)
    setup_backends(device, cfg)
    warm_numba_threads()

    emit = progress or (lambda ev: None)
    emit({"kind": "prepare", "step": 0, "total": 0})
    resolve_text_dims(cfg)  # model.bert_dim from data.text_features (refuses a mismatch) before any work
    data = TrialData.prepare(cfg, device=device)
    val_batches = data.val_batches()

    with torch.random.fork_rng(devices=[]):  # counting builds nets on meta: keep the seeded stream intact
        fps = flops_per_step(cfg, utterance_s=data.mean_utterance_s, disk_cache=cfg.data.cache_dir)
    budget = plan_budget(cfg, fps, data.batches_per_epoch())  # steps and lr schedule; refuses bad plans
    plan = budget.schedule.to_dict()
    seed_everything(t.seed)
    state = build_state(cfg, device, lr_factor=lr_lambda(budget.schedule))  # + train.freeze
    static = _static_metrics(cfg, budget, data)
    sink.log_params(system_params(device))
    sink.log_metrics(static, 0)
    if budget.branch_points:
        _write_branch_points(cfg, budget, sink)

    epoch, batch_in_epoch, seen_s = 0, 0, 0.0
    if not resume:  # start over: earlier checkpoints in this directory must not be resumed from later
        for old in ckpt.remove_checkpoints(ckpt.checkpoint_dir(cfg)):
            log.warning("resume=False: removed earlier checkpoint %s", old)
    # the newest checkpoint that loads (a corrupted newer one is moved aside with a warning)
    last, payload = ckpt.latest_readable(ckpt.checkpoint_dir(cfg)) if resume else (None, None)
    source = last
    if last is None and t.branch_from:  # a fresh branch: its trunk's checkpoint at the branch point
        try:
            source = resolve_init_path(t.branch_from, cfg, where="train.branch_from", step=budget.branch_step)
        except InitError as e:
            raise ckpt.CheckpointMismatch(str(e)) from None
    if source is not None:
        if source == last:  # loaded by latest_readable
            ckpt.check_compatible(payload, cfg, source, plan)
        else:
            payload = ckpt.load_checkpoint(source)
            ckpt.check_branch_source(
                payload, cfg, source, step=budget.branch_step, flops_per_step=fps, schedule=budget.schedule
            )
            sink.log_params({"branch.source": str(Path(source).resolve())})
        ckpt.restore(state, payload)
        epoch, batch_in_epoch = payload["epoch"], payload["batch_in_epoch"]
        seen_s = float(payload["counters"].get("data_seen_s", 0.0))
        log.info(
            "%s %s from %s (step %d, epoch %d, batch %d)",
            "resumed" if source == last else "branched",
            cfg.trial_id,
            source,
            state.step,
            epoch,
            batch_in_epoch,
        )
        del payload
        if source != last:
            sink.log_metrics({"branch_step": state.step}, state.step)
    elif t.init_from:  # a fresh fine-tune trial: weights of another trial (a resumed one has its own)
        load_init(state, cfg)
    init = info_from_state(state)
    if init is not None:  # the pretraining compute and data behind this trial, for the analysis
        sink.log_params(init.params())
        sink.log_metrics(init.metrics(), 0)
    emit(
        {
            "kind": "start",
            "step": state.step,
            "total": budget.steps,
            "metrics": static,
            "resumed": last is not None,
        }
    )

    sr = cfg.data.sampling_rate
    acc: dict[str, torch.Tensor] = {}
    n_acc, t_log, seen_log, step_log = 0, time.perf_counter(), seen_s, state.step
    paused = 0.0  # seconds spent in evaluation and checkpointing since the last log (not training time)
    last_train: dict[str, float] = {}
    saved: Path | None = last

    def counters() -> dict[str, float]:
        c = {
            "data_seen_s": seen_s,
            "flops": state.step * budget.flops_per_step,
            "data_hours": data.data_hours,
        }
        if init is not None:  # carried on, so a trial started from this one counts the whole chain
            c.update(pretrain_flops=init.flops, pretrain_hours=init.hours)
        return c

    branch_steps = {s for _, s in (budget.branch_points or {}).values()}

    def save() -> Path:
        nonlocal paused
        t0 = time.perf_counter()
        kept = state.step in branch_steps
        p = ckpt.save_checkpoint(
            state,
            cfg,
            epoch=epoch,
            batch_in_epoch=batch_in_epoch,
            counters=counters(),
            keep=t.keep_checkpoints,
            schedule=plan,
            kept=kept,
        )
        sink.log_checkpoint(p, state.step)
        if kept:
            sink.log_metrics({"branch_step": state.step}, state.step)
        paused += time.perf_counter() - t0
        return p

    def flush() -> dict[str, float]:
        nonlocal acc, n_acc, t_log, seen_log, step_log, paused
        keys = list(acc)
        vals = (torch.stack([acc[k].float() for k in keys]) / max(n_acc, 1)).cpu().tolist()  # one transfer
        row = dict(zip(keys, vals, strict=True))
        bad = [k for k, v in row.items() if k.startswith("loss") and not math.isfinite(v)]
        if bad:
            raise Diverged(f"non-finite {', '.join(bad)} in steps {state.step - n_acc + 1}..{state.step}")
        now = time.perf_counter()
        dt = max(now - t_log - paused, 1e-9)
        row.update(
            steps=state.step,
            epoch=epoch,
            lr=scheduled_lr(state.sched_g, state.step - 1),  # the update just taken
            lr_d=scheduled_lr(state.sched_d, state.step - 1),
            flops=state.step * budget.flops_per_step,
            data_seen_s=seen_s,
            data_hours=data.data_hours,
            steps_per_s=(state.step - step_log) / dt,
            audio_s_per_s=(seen_s - seen_log) / dt,
        )
        sink.log_metrics(row, state.step)
        acc, n_acc, t_log, seen_log, step_log, paused = {}, 0, now, seen_s, state.step, 0.0
        return row

    def run_eval(final: bool) -> dict[str, float]:
        nonlocal paused
        t0 = time.perf_counter()
        audio_dir = out / "samples" / f"step_{state.step:08d}"
        res = evaluate(
            state.net_g, val_batches, cfg, device=device, audio_dir=audio_dir, synthesis=e.n_utterances > 0
        )
        m = dict(res.metrics, eval_s=res.seconds)
        m.update(steps=state.step, flops=state.step * budget.flops_per_step, data_seen_s=seen_s)
        sink.log_metrics(m, state.step)
        for w in res.wavs:
            sink.log_artifact(w, f"samples/step_{state.step:08d}")
        emit({"kind": "eval", "step": state.step, "total": budget.steps, "metrics": m, "final": final})
        paused += time.perf_counter() - t0
        return m

    try:
        state.train(True)
        while state.step < budget.steps:
            for batch in data.train_loader(epoch, batch_in_epoch):
                losses = step_fn(state, batch)
                batch_in_epoch += 1
                seen_s += float(batch["wav_lengths"].sum()) / sr  # host tensor: no device sync
                for k, v in losses.items():
                    acc[k] = acc[k] + v if k in acc else v.detach().clone()
                n_acc += 1
                if state.step % t.log_interval == 0 or state.step >= budget.steps:
                    last_train = flush()
                    emit({"kind": "train", "step": state.step, "total": budget.steps, "metrics": last_train})
                if state.step >= budget.steps:
                    break
                if e.eval_every and state.step % e.eval_every == 0:
                    run_eval(final=False)
                if state.step in branch_steps or (
                    t.checkpoint_every and state.step % t.checkpoint_every == 0
                ):
                    saved = save()
            else:
                epoch, batch_in_epoch = epoch + 1, 0
                continue
            break
        if n_acc:
            last_train = flush()
    except Diverged as d:
        msg = f"diverged at step {state.step}: {d}"
        log.warning("trial %s %s", cfg.trial_id, msg)
        sink.log_metrics({"diverged_step": state.step, "steps": state.step}, state.step)
        sink.set_status("diverged", msg)
        emit({"kind": "done", "step": state.step, "total": budget.steps, "status": "diverged"})
        return TrialResult("diverged", state.step, dict(last_train), saved and str(saved), str(out), msg)

    if saved is None or ckpt.list_checkpoints(ckpt.checkpoint_dir(cfg))[-1][0] != state.step:
        saved = save()
    final = run_eval(final=True)
    metrics = {**{k: v for k, v in last_train.items() if k.startswith("loss")}, **final}
    sink.set_status("finished")
    emit(
        {"kind": "done", "step": state.step, "total": budget.steps, "status": "finished", "metrics": metrics}
    )
    return TrialResult("finished", state.step, metrics, str(saved), str(out))
