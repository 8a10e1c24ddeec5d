"""One device-agnostic VITS training step: discriminator update, then generator update.

``build_train_state(cfg, device, lr_factor=...)`` makes the generator, the multi-period discriminator (and,
when configured, the duration discriminator and the WavLM discriminator with its frozen WavLM), AdamW
optimizers and one ``LambdaLR`` scheduler per optimizer, all following the same factor of the step
(``model.train.schedule`` makes it from the trial's plan; without one the lr stays constant).
``train_step(state, batch)`` runs

1. the generator forward (posterior, flow, alignment, durations, decoder on a random segment);
2. the real mel of that segment (sliced from the batch's linear spectrogram) and the mel of ``y_hat``;
3. the discriminator step: MPD on (real, generated.detach()) [+ duration discriminator, + WavLM
   discriminator], least-squares loss, clip at ``train.grad_clip_d`` (None: not clipped), AdamW;
4. the generator step: c_mel * mel L1 + c_kl * KL + c_dur * duration + c_adv * adversarial + c_fm * feature
   matching [+ c_adv * duration-discriminator adversarial, + WavLM feature matching and adversarial], clip
   at ``train.grad_clip_g`` (SBV2: 500), AdamW;
5. every scheduler advances one step (so ``state.step`` is the step the next update's lr belongs to).

It returns detached scalar tensors and never calls ``.item()`` (no host sync per step): the trainer decides
when to read them. The component losses (``loss_mel``, ``loss_kl``, ...) are *unweighted*; ``loss_g_total``
is the weighted sum that was back-propagated; ``grad_norm_g`` / ``grad_norm_d`` are the pre-clip norms
(device tensors: clipping and norms never sync). bf16 autocast is used only on CUDA with
``train.precision: bf16``; losses and mel spectrograms are always computed in float32.

During the generator step the discriminators' parameters are frozen (``requires_grad_(False)``), so the
backward pass through them computes only input gradients, not weight gradients that would be thrown away.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from model import commons
from model.audio import mel_from_config, spec_to_mel
from model.config import TrialConfig
from model.discriminators import (
    DurationDiscriminator,
    MultiPeriodDiscriminator,
    WavLMDiscriminator,
    WavLMFeatures,
)
from model.generator import SynthesizerTrn
from model.losses import (
    discriminator_loss,
    duration_loss,
    feature_loss,
    generator_loss,
    kl_loss,
    lsgan_d,
    lsgan_g,
    mel_loss,
    wavlm_feature_loss,
)

NETS = ("net_g", "net_d", "net_dur_disc", "net_wd")
LrFactor = Callable[[int], float]  # optimizer step -> factor on each param group's base lr


@dataclass
class TrainState:
    cfg: TrialConfig
    device: torch.device
    net_g: nn.Module
    net_d: MultiPeriodDiscriminator
    optim_g: torch.optim.Optimizer
    optim_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    net_dur_disc: DurationDiscriminator | None = None
    optim_dur_disc: torch.optim.Optimizer | None = None
    sched_dur_disc: torch.optim.lr_scheduler.LRScheduler | None = None
    net_wd: WavLMDiscriminator | None = None
    optim_wd: torch.optim.Optimizer | None = None
    sched_wd: torch.optim.lr_scheduler.LRScheduler | None = None
    wavlm: WavLMFeatures | None = None  # frozen feature extractor (not checkpointed: loaded from its source)
    step: int = 0  # optimizer steps taken
    extra: dict[str, Any] = field(default_factory=dict)  # trainer bookkeeping saved with the checkpoint

    # --- helpers ---------------------------------------------------------------------------------
    def nets(self) -> dict[str, nn.Module]:
        return {k: getattr(self, k) for k in NETS if getattr(self, k) is not None}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        names = {
            "net_g": "optim_g",
            "net_d": "optim_d",
            "net_dur_disc": "optim_dur_disc",
            "net_wd": "optim_wd",
        }
        return {v: getattr(self, v) for k, v in names.items() if getattr(self, k) is not None}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        names = {
            "net_g": "sched_g",
            "net_d": "sched_d",
            "net_dur_disc": "sched_dur_disc",
            "net_wd": "sched_wd",
        }
        return {v: getattr(self, v) for k, v in names.items() if getattr(self, k) is not None}

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        if self.device.type == "cuda" and self.cfg.train.precision == "bf16":
            return torch.bfloat16
        return None

    def train(self, mode: bool = True) -> None:
        for net in self.nets().values():
            net.train(mode)

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd: dict[str, Any] = {"step": self.step, "extra": dict(self.extra)}
        for k, net in self.nets().items():
            sd[k] = net.state_dict()
        for k, opt in self.optimizers().items():
            sd[k] = opt.state_dict()
        for k, sched in self.schedulers().items():
            sd[k] = sched.state_dict()
        return sd

    def load_state_dict(self, sd: dict[str, Any], *, strict: bool = True) -> None:
        """Restore nets, optimizers, schedulers and the step count (missing parts raise a clear KeyError).

        The schedulers keep *this* state's factor (a plain function, never in a state dict); every param
        group's lr is then recomputed from it at the restored step, so a checkpoint written under another
        plan (a WSD branch loading its trunk's) continues on this state's curve. Under the same plan the
        recomputed lr is the saved one, bit for bit."""
        for part in (self.nets(), self.optimizers(), self.schedulers()):
            for k, obj in part.items():
                if k not in sd:
                    raise KeyError(f"checkpoint has no '{k}' (it has: {', '.join(sorted(sd))})")
                if isinstance(obj, nn.Module):
                    obj.load_state_dict(sd[k], strict=strict)
                else:
                    obj.load_state_dict(sd[k])
        self.step = int(sd.get("step", 0))
        self.extra = dict(sd.get("extra", {}))
        for sched in self.schedulers().values():
            sync_lr(sched)


# ----------------------------------------------------------------------------------------------------
# building


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _adamw(params, cfg: TrialConfig, device: torch.device) -> torch.optim.AdamW:
    t = cfg.train
    kwargs: dict[str, Any] = {"lr": t.learning_rate, "betas": tuple(t.betas), "eps": t.eps}
    if device.type == "cuda":
        kwargs["fused"] = True
    elif device.type == "cpu":
        kwargs["foreach"] = True  # one multi-tensor op per update, not ~10 per parameter (tiny models)
    return torch.optim.AdamW([p for p in params if p.requires_grad], **kwargs)


def constant_lr(step: int) -> float:
    """The factor of a state built without a schedule: the lr stays at ``train.learning_rate``."""
    return 1.0


def _sched(opt: torch.optim.Optimizer, factor: LrFactor) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=factor)


def scheduled_lr(sched: torch.optim.lr_scheduler.LambdaLR, step: int, group: int = 0) -> float:
    """The lr of param group ``group`` for the update taken after ``step`` updates (the trainer logs the
    lr of the update just taken: ``step = state.step - 1``); the same arithmetic ``LambdaLR`` does."""
    return sched.base_lrs[group] * sched.lr_lambdas[group](step)


def sync_lr(sched: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set every param group's lr from the scheduler's own factor at its current step."""
    lrs = [scheduled_lr(sched, sched.last_epoch, i) for i in range(len(sched.base_lrs))]
    for g, lr in zip(sched.optimizer.param_groups, lrs, strict=True):
        g["lr"] = lr
    sched._last_lr = lrs  # what get_last_lr() reports


def build_generator(cfg: TrialConfig) -> nn.Module:
    return SynthesizerTrn.from_config(cfg.model, cfg.data, segment_size=cfg.train.segment_size)


def build_discriminators(cfg: TrialConfig) -> dict[str, nn.Module]:
    """The discriminators this config trains: ``net_d`` always, ``net_dur_disc`` and ``net_wd`` if enabled."""
    m = cfg.model
    nets: dict[str, nn.Module] = {"net_d": MultiPeriodDiscriminator.from_config(m)}
    if m.use_duration_discriminator:
        nets["net_dur_disc"] = DurationDiscriminator.from_config(m)
    if m.use_wavlm_discriminator and m.wavlm_discriminator:
        nets["net_wd"] = WavLMDiscriminator.from_config(m)
    return nets


def build_train_state(
    cfg: TrialConfig,
    device: str | torch.device | None = "auto",
    *,
    net_g: nn.Module | None = None,
    wavlm: WavLMFeatures | None = None,
    lr_factor: LrFactor = constant_lr,
) -> TrainState:
    """Nets, AdamW optimizers (lr, betas, eps from ``train``; fused on CUDA) and ``LambdaLR`` schedulers
    following ``lr_factor`` (the trainer passes ``model.train.schedule.lr_lambda(plan)``).

    The WavLM discriminator is built only when both ``model.use_wavlm_discriminator`` (the SBV2 key) and
    ``model.wavlm_discriminator`` (this project's switch: it needs pretrained WavLM weights) are true;
    ``wavlm`` may pass an already-loaded feature extractor (tests use a tiny local one).
    """
    device = resolve_device(device)
    net_g = (net_g if net_g is not None else build_generator(cfg)).to(device)
    discs = {k: v.to(device) for k, v in build_discriminators(cfg).items()}
    if "net_wd" in discs and wavlm is None:
        wavlm = WavLMFeatures.from_config(cfg.model, cfg.data)
    if wavlm is not None:
        wavlm = wavlm.to(device)
    optims = {"net_g": _adamw(net_g.parameters(), cfg, device)}
    optims.update({k: _adamw(v.parameters(), cfg, device) for k, v in discs.items()})
    scheds = {k: _sched(o, lr_factor) for k, o in optims.items()}
    state = TrainState(
        cfg=cfg,
        device=device,
        net_g=net_g,
        net_d=discs["net_d"],
        optim_g=optims["net_g"],
        optim_d=optims["net_d"],
        sched_g=scheds["net_g"],
        sched_d=scheds["net_d"],
        net_dur_disc=discs.get("net_dur_disc"),
        optim_dur_disc=optims.get("net_dur_disc"),
        sched_dur_disc=scheds.get("net_dur_disc"),
        net_wd=discs.get("net_wd"),
        optim_wd=optims.get("net_wd"),
        sched_wd=scheds.get("net_wd"),
        wavlm=wavlm if "net_wd" in discs else None,
    )
    state.train(True)
    return state


# ----------------------------------------------------------------------------------------------------
# the step


def batch_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _autocast(state: TrainState):
    dtype = state.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=state.device.type, dtype=dtype)


def _fp32(state: TrainState):
    if state.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=state.device.type, enabled=False)


def _clip(params: list[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """Clip to ``max_norm`` (None: no clipping) and return the pre-clip total norm as a device tensor."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    foreach = grads[0].device.type in ("cpu", "cuda") or None  # multi-tensor kernels where they exist
    if max_norm is None:
        return torch.nn.utils.get_total_norm([p.grad for p in grads], foreach=foreach)
    return torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=foreach)


def _params(*nets: nn.Module | None) -> list[nn.Parameter]:
    return [p for net in nets if net is not None for p in net.parameters() if p.requires_grad]


def _out(out: Any, name: str) -> Any:
    return out[name] if isinstance(out, dict) else getattr(out, name)


def train_step(state: TrainState, batch: dict[str, Any], *, update: bool = True) -> dict[str, torch.Tensor]:
    """One discriminator update and one generator update on ``batch``; returns detached scalar tensors.

    ``update=False`` runs the forwards and backwards but neither clips nor steps the optimizers (the FLOPs
    counter uses it: optimizer arithmetic is elementwise and not counted).
    """
    cfg, dev = state.cfg, state.device
    d, t = cfg.data, cfg.train
    b = batch_to_device(batch, dev)
    seg_frames = t.segment_size // d.hop_length

    # --- generator forward --------------------------------------------------------------------------
    with _autocast(state):
        out = state.net_g(
            b["phones"], b["phone_lengths"], b["spec"], b["spec_lengths"], b["speakers"],
            b["tones"], b["languages"], b["bert"], b["style"],
        )  # fmt: skip
    y_hat = _out(out, "y_hat")
    ids_slice = _out(out, "ids_slice")
    with _fp32(state):
        if cfg.model.use_mel_posterior_encoder:  # the batch's "spec" is already the log mel
            mel = b["spec"].float()
        else:
            mel = spec_to_mel(
                b["spec"].float(), d.sampling_rate, d.filter_length, d.n_mel_channels, d.mel_fmin, d.mel_fmax
            )
        y_mel = commons.slice_segments(mel, ids_slice, seg_frames)
        y_hat_mel = mel_from_config(y_hat.float().squeeze(1), d)
    y = commons.slice_segments(b["wav"], ids_slice * d.hop_length, t.segment_size)
    y_hat_d = y_hat.detach()

    dur_disc, wd = state.net_dur_disc, state.net_wd
    if dur_disc is not None:
        hidden_x, x_mask = _out(out, "hidden_x"), _out(out, "x_mask")
        logw, logw_, g = _out(out, "logw"), _out(out, "logw_"), _out(out, "g")
    if wd is not None:
        with torch.no_grad(), _fp32(state):
            wl_real = state.wavlm.hidden_states(y)
            wl_fake_d = state.wavlm(y_hat_d)
            wl_real_stacked = torch.stack(wl_real, dim=1).transpose(-1, -2).flatten(1, 2)

    # --- discriminator step -------------------------------------------------------------------------
    with _autocast(state):
        y_d_rs, y_d_gs, _, _ = state.net_d(y, y_hat_d)
    loss_disc, _, _ = discriminator_loss(y_d_rs, y_d_gs)
    loss_d_all = loss_disc
    metrics: dict[str, torch.Tensor] = {}
    if dur_disc is not None:
        with _autocast(state):
            p_r, p_g = dur_disc(hidden_x.detach(), x_mask.detach(), logw_.detach(), logw.detach(), g.detach())
        loss_dur_disc = lsgan_d(p_r, p_g)
        loss_d_all = loss_d_all + loss_dur_disc
        metrics["loss_dur_disc"] = loss_dur_disc.detach()
    if wd is not None:
        with _autocast(state):
            s_r, s_g = wd(wl_real_stacked), wd(wl_fake_d)
        loss_wd = lsgan_d(s_r, s_g)
        loss_d_all = loss_d_all + loss_wd
        metrics["loss_wavlm_disc"] = loss_wd.detach()
    d_opts = [o for o in (state.optim_d, state.optim_dur_disc, state.optim_wd) if o is not None]
    for o in d_opts:
        o.zero_grad(set_to_none=True)
    loss_d_all.backward()
    if update:
        grad_norm_d = _clip(_params(state.net_d, dur_disc, wd), t.grad_clip_d)
        for o in d_opts:
            o.step()
    else:
        grad_norm_d = torch.zeros((), device=dev)

    # --- generator step -----------------------------------------------------------------------------
    discs = [n for n in (state.net_d, dur_disc, wd) if n is not None]
    for n in discs:
        n.requires_grad_(False)
    try:
        with _autocast(state):
            with torch.no_grad():
                _, fmap_r = state.net_d.run(y)
            y_d_gs, fmap_g = state.net_d.run(y_hat)
        loss_mel = mel_loss(y_mel, y_hat_mel)
        loss_kl = kl_loss(
            _out(out, "z_p"), _out(out, "logs_q"), _out(out, "m_p"), _out(out, "logs_p"), _out(out, "z_mask")
        )
        loss_dur = duration_loss(_out(out, "l_length"))
        loss_fm = feature_loss(fmap_r, fmap_g)
        loss_gen, _ = generator_loss(y_d_gs)
        loss_g_all = (
            t.c_mel * loss_mel + t.c_kl * loss_kl + t.c_dur * loss_dur + t.c_adv * loss_gen + t.c_fm * loss_fm
        )
        if dur_disc is not None:
            with _autocast(state):
                _, p_g = dur_disc(hidden_x, x_mask, logw_, logw, g)
            loss_dur_gen = lsgan_g(p_g)
            loss_g_all = loss_g_all + t.c_adv * loss_dur_gen
            metrics["loss_dur_gen"] = loss_dur_gen.detach()
        if wd is not None:
            with _fp32(state):
                wl_fake = state.wavlm.hidden_states(y_hat)
            loss_wl_fm = wavlm_feature_loss(wl_real, wl_fake)
            with _autocast(state):
                s_g = wd(torch.stack(wl_fake, dim=1).transpose(-1, -2).flatten(1, 2))
            loss_wl_gen = lsgan_g(s_g)
            loss_g_all = loss_g_all + t.c_fm * loss_wl_fm + t.c_adv * loss_wl_gen
            metrics["loss_wavlm_fm"] = loss_wl_fm.detach()
            metrics["loss_wavlm_gen"] = loss_wl_gen.detach()
        state.optim_g.zero_grad(set_to_none=True)
        loss_g_all.backward()
        if update:
            grad_norm_g = _clip(_params(state.net_g), t.grad_clip_g)
            state.optim_g.step()
        else:
            grad_norm_g = torch.zeros((), device=dev)
    finally:
        for n in discs:
            n.requires_grad_(True)

    if update:  # the lr of the next update (the schedule is a function of the step: resumes exactly)
        for sched in state.schedulers().values():
            sched.step()
    state.step += 1
    update_mas = getattr(state.net_g, "update_mas_noise_scale", None)
    if callable(update_mas):  # noise-scaled MAS: the schedule is a function of the step (resumes exactly)
        update_mas(state.step)
    metrics.update(
        loss_mel=loss_mel.detach(),
        loss_kl=loss_kl.detach(),
        loss_dur=loss_dur.detach(),
        loss_gen=loss_gen.detach(),
        loss_fm=loss_fm.detach(),
        loss_disc=loss_d_all.detach(),
        loss_g_total=loss_g_all.detach(),
        grad_norm_g=grad_norm_g.detach(),
        grad_norm_d=grad_norm_d.detach(),
    )
    return metrics
