"""Evaluation on the fixed held-out set: the VITS negative ELBO and its parts, then synthesis metrics.

Likelihood part (every held-out utterance, eval mode: no dropout, no MAS noise; every random draw comes
from ``eval.seed`` inside a forked RNG, so two evaluations of the same weights agree exactly and training's
random stream is untouched). All three terms are nats per mel frame, summed over the held-out set and
divided by its total number of frames:

- ``val_nelbo_recon``: the posterior sample ``z ~ q(z|x)`` decoded over the whole utterance; its log-mel
  ``mu`` against the reference log-mel ``x`` under a Laplace likelihood with scale ``b``, per element
  ``|x - mu| / b + log(2 b)``, summed over mel channels. ``b = eval.nelbo_laplace_scale``, by default
  ``n_mel_channels / c_mel``: the scale at which VITS's weighted mel L1 (``c_mel * mean |x - mu|``) *is* this
  negative log-likelihood per frame, so the NELBO is the quantity the generator's non-adversarial loss
  estimates (the tiny config: 40 / 45 = 0.89; the public config: 128 / 45 = 2.84).
- ``val_nelbo_kl``: ``log q(z|x) - log p(z|c)`` at the posterior sample, with the flow's log-determinant
  (zero for the mean-only couplings of JP-Extra, included anyway) and the entropy term in expectation
  (``-1/2`` per dimension), i.e. the VITS KL term, over frames aligned to tokens by MAS.
- ``val_nelbo_dur``: the stochastic duration predictor's variational bound on ``-log p(durations | text)``
  (its training NLL, with the MAS durations as data).

``val_nelbo`` is their sum. Also: ``val_mel_l1`` (mean absolute log-mel error, the training ``loss_mel``
on whole utterances), ``val_kl`` (= ``val_nelbo_kl``), ``val_dur`` (SDP NLL + deterministic predictor's
log-duration MSE per token, the training ``loss_dur``).

Synthesis part (the first ``eval.n_utterances`` held-out utterances, one at a time):

- from text (predicted durations, ``eval.noise_scale``/``noise_scale_w``/``length_scale``/``sdp_ratio``; the
  style vector is the speaker's mean over the training items, the batch's ``speaker_style``, as SBV2's
  inference uses a mean style vector and never the reference utterance's own; the likelihood part keeps
  each utterance's own vector, as training does):
  DNSMOS (``dnsmos_ovrl``, ``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_p808``; or ``utmos``), ``val_mcd_synth``,
  ``val_logf0_rmse_synth``, ``val_logf0_corr_synth``, ``val_vuv_error_synth`` (DTW-aligned against the
  reference recording), ``rtf`` (synthesis wall time / audio seconds);
- reconstruction (the decoded posterior of the likelihood part): ``val_mcd``, ``val_logf0_rmse``,
  ``val_logf0_corr``, ``val_vuv_error``.

Per-utterance values are averaged (NaN-aware: a contour with no voiced frames does not count).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from model.audio import mel_from_config, spec_to_mel
from model.config import TrialConfig
from model.metrics import SynthesisTimer, compare, predict_mos
from model.step import batch_to_device

REF_KEYS = ("val_mcd", "val_logf0_rmse", "val_logf0_corr", "val_vuv_error")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    wavs: list[Path] = field(default_factory=list)  # written audio samples (synthesis and reconstruction)
    seconds: float = 0.0


def laplace_scale(cfg: TrialConfig) -> float:
    b = cfg.eval.nelbo_laplace_scale
    if b is None:
        b = cfg.data.n_mel_channels / cfg.train.c_mel
    if not b > 0:
        raise ValueError(f"eval.nelbo_laplace_scale must be positive, got {b}")
    return float(b)


@contextlib.contextmanager
def eval_mode(net: torch.nn.Module, seed: int, device: torch.device):
    """Eval mode and a private RNG seeded with ``seed``; restores the training mode and the RNG state."""
    was_training = net.training
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cuda"):
        torch.manual_seed(seed)
        net.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            net.train(was_training)


def _flow_with_logdet(flow: torch.nn.Module, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor):
    """z -> z_p through the flow's layers, summing their log-determinants (B,)."""
    logdet = torch.zeros(z.shape[0], device=z.device)
    layers = getattr(flow, "flows", None)
    if layers is None:  # a flow without exposed layers: assume volume preserving
        return flow(z, mask, g=g), logdet
    for layer in layers:
        z, ld = layer(z, mask, g=g)
        logdet = logdet + (ld if torch.is_tensor(ld) else torch.as_tensor(ld, device=z.device))
    return z, logdet


def likelihood_pass(net_g, batch: dict[str, Any], cfg: TrialConfig, b: float) -> dict[str, Any]:
    """Sums (not yet normalised) of the NELBO terms for one batch, plus the decoded posterior audio."""
    d = cfg.data
    g = net_g.emb_g(batch["speakers"]).unsqueeze(-1)
    g_enc = g if getattr(net_g, "use_spk_conditioned_encoder", True) else None
    x, m_p, logs_p, x_mask = net_g.enc_p(
        batch["phones"], batch["phone_lengths"], batch["tones"], batch["languages"], batch["bert"],
        batch["style"], g=g_enc,
    )  # fmt: skip
    z, m_q, logs_q, y_mask = net_g.enc_q(batch["spec"], batch["spec_lengths"], g=g)
    z_p, logdet = _flow_with_logdet(net_g.flow, z, y_mask, g)
    attn = net_g._align(z_p, m_p, logs_p, x_mask, y_mask)  # eval mode: no MAS noise
    w = attn.sum(2)
    sdp_nll = net_g.sdp(x, x_mask, w, g=g)  # (B,) nats per utterance
    logw_ = torch.log(w + 1e-6) * x_mask
    logw = net_g.dp(x, x_mask, g=g)
    dp_mse = torch.sum((logw - logw_) ** 2, [1, 2])

    a = attn.squeeze(1).to(m_p.dtype)
    m_p = torch.matmul(a, m_p.transpose(1, 2)).transpose(1, 2)
    logs_p = torch.matmul(a, logs_p.transpose(1, 2)).transpose(1, 2)
    kl = logs_p - logs_q - 0.5 + 0.5 * (z_p - m_p) ** 2 * torch.exp(-2.0 * logs_p)
    kl_sum = torch.sum(kl * y_mask) - logdet.sum()

    y_hat = net_g.dec(z * y_mask, g=g)  # (B, 1, T_y * hop)
    mel_hat = mel_from_config(y_hat.squeeze(1).float(), d)
    if cfg.model.use_mel_posterior_encoder:
        mel = batch["spec"].float()
    else:
        mel = spec_to_mel(
            batch["spec"].float(), d.sampling_rate, d.filter_length, d.n_mel_channels, d.mel_fmin, d.mel_fmax
        )
    t = min(mel.shape[-1], mel_hat.shape[-1])
    mask = y_mask[..., :t]
    abs_err = torch.sum((mel[..., :t] - mel_hat[..., :t]).abs() * mask)
    frames = torch.sum(y_mask)
    return {
        "frames": frames,
        "tokens": torch.sum(x_mask),
        "abs_err": abs_err,
        "recon": abs_err / b + frames * d.n_mel_channels * math.log(2 * b),
        "kl": kl_sum,
        "sdp": sdp_nll.sum(),
        "dp": dp_mse.sum(),
        "y_hat": y_hat,
    }


def _write(path: Path, wav: np.ndarray, sr: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16")
    return path


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.mean(xs)) if xs else math.nan


def evaluate(
    net_g: torch.nn.Module,
    val_batches: Sequence[dict[str, Any]],
    cfg: TrialConfig,
    *,
    device: torch.device | str = "cpu",
    audio_dir: str | Path | None = None,
    synthesis: bool = True,
) -> EvalResult:
    """All validation metrics of ``net_g`` on ``val_batches`` (collated held-out batches, fixed order)."""
    t0 = time.perf_counter()
    device = torch.device(device)
    d, e = cfg.data, cfg.eval
    sr = d.sampling_rate
    b = laplace_scale(cfg)
    if not val_batches:
        raise ValueError("evaluate: the held-out set is empty (data.val_utterances must be >= 1)")
    sums = {k: 0.0 for k in ("frames", "tokens", "abs_err", "recon", "kl", "sdp", "dp")}
    refs: list[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]] = []  # id, ref wav, recon wav, item
    with eval_mode(net_g, e.seed, device):
        for batch in val_batches:
            bd = batch_to_device(batch, device)
            out = likelihood_pass(net_g, bd, cfg, b)
            for k in sums:
                sums[k] += float(out[k])
            if synthesis and len(refs) < e.n_utterances:
                y_hat = out["y_hat"].float().cpu()
                for i in range(len(batch["ids"])):
                    if len(refs) >= e.n_utterances:
                        break
                    n = int(batch["wav_lengths"][i])
                    item = {k: v[i : i + 1] for k, v in batch.items() if torch.is_tensor(v)}
                    refs.append(
                        (
                            str(batch["ids"][i]),
                            batch["wav"][i, 0, :n].float().numpy(),
                            y_hat[i, 0, :n].numpy(),
                            item,
                        )
                    )
        frames = max(sums["frames"], 1.0)
        m = {
            "val_nelbo_recon": sums["recon"] / frames,
            "val_nelbo_kl": sums["kl"] / frames,
            "val_nelbo_dur": sums["sdp"] / frames,
            "val_mel_l1": sums["abs_err"] / (frames * d.n_mel_channels),
            "val_kl": sums["kl"] / frames,
            "val_dur": (sums["sdp"] + sums["dp"]) / max(sums["tokens"], 1.0),
        }
        m["val_nelbo"] = m["val_nelbo_recon"] + m["val_nelbo_kl"] + m["val_nelbo_dur"]

        if not synthesis:
            return EvalResult(m, [], time.perf_counter() - t0)

        timer = SynthesisTimer(device)
        syn, rec, mos_rows, wavs = [], [], [], []
        for k, (uid, ref, recon, item) in enumerate(refs):
            it = batch_to_device(item, device)
            with timer:
                audio, _, _, dur = net_g.infer(
                    it["phones"], it["phone_lengths"], it["speakers"], it["tones"], it["languages"],
                    it["bert"], it.get("speaker_style", it["style"]), noise_scale=e.noise_scale,
                    length_scale=e.length_scale,
                    noise_scale_w=e.noise_scale_w, sdp_ratio=e.sdp_ratio,
                )  # fmt: skip
            n = max(1, int(dur[0].sum())) * d.hop_length
            wav = audio[0, 0, :n].float().cpu().numpy()
            timer.add_audio(len(wav), sr)
            if e.mos_backend != "none":
                mos_rows.append(predict_mos(wav, sr, e.mos_backend))
            if e.intonation_metrics:
                syn.append(_safe_compare(compare, ref, wav, sr))
                rec.append(_safe_compare(compare, ref, recon, sr))
            if audio_dir is not None and k < e.n_audio_samples:
                wavs.append(_write(Path(audio_dir) / f"{uid}_synth.wav", wav, sr))
                wavs.append(_write(Path(audio_dir) / f"{uid}_recon.wav", recon, sr))
    for key in {k for row in mos_rows for k in row}:
        m[key] = _nanmean([row.get(key, math.nan) for row in mos_rows])
    if e.intonation_metrics and refs:
        for name in ("mcd", "logf0_rmse", "logf0_corr", "vuv_error"):
            m[f"val_{name}"] = _nanmean([r[name] for r in rec])
            m[f"val_{name}_synth"] = _nanmean([r[name] for r in syn])
    m["rtf"] = timer.rtf
    return EvalResult(m, wavs, time.perf_counter() - t0)


def _safe_compare(compare, ref: np.ndarray, test: np.ndarray, sr: int) -> dict[str, float]:
    """MCD / intonation of one pair; NaNs when the test audio is too short or silent to analyse."""
    try:
        return compare(ref, test, sr)
    except ValueError:
        return {"mcd": math.nan, "logf0_rmse": math.nan, "logf0_corr": math.nan, "vuv_error": math.nan}
