"""Training losses of VITS / Style-Bert-VITS2 JP-Extra.

- adversarial losses are least squares (LSGAN): real -> 1, fake -> 0;
- feature matching is the L1 distance between real and generated discriminator feature maps, times 2;
- the KL term is between the posterior sample pushed through the flow, ``z_p``, and the prior
  N(m_p, exp(logs_p)^2), evaluated at the sample, summed over channels and averaged over unmasked frames;
- the mel loss is L1 between log-mel spectrograms.

Weights (``c_mel`` 45, ``c_kl`` 1, ``c_dur`` 1, ``c_adv`` 1, ``c_fm`` 1) come from ``TrainConfig`` and are
applied by the training step (``model/step.py``); the functions here return unweighted terms.
Every loss is computed in float32 whatever the autocast dtype of its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(
    real_outputs: list[torch.Tensor], fake_outputs: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Sum over discriminators of mean((1 - D(real))^2) + mean(D(fake)^2); also the per-part terms."""
    loss = 0.0
    r_losses, g_losses = [], []
    for dr, dg in zip(real_outputs, fake_outputs, strict=True):
        r = torch.mean((1 - dr.float()) ** 2)
        g = torch.mean(dg.float() ** 2)
        loss = loss + r + g
        r_losses.append(r.detach())
        g_losses.append(g.detach())
    return loss, r_losses, g_losses


def generator_loss(fake_outputs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sum over discriminators of mean((1 - D(fake))^2); also the per-discriminator terms."""
    loss = 0.0
    parts = []
    for dg in fake_outputs:
        part = torch.mean((1 - dg.float()) ** 2)
        loss = loss + part
        parts.append(part.detach())
    return loss, parts


def feature_loss(fmap_r: list[list[torch.Tensor]], fmap_g: list[list[torch.Tensor]]) -> torch.Tensor:
    """2 x sum over discriminators and layers of mean |real - generated| (real maps are constants)."""
    loss = 0.0
    for dr, dg in zip(fmap_r, fmap_g, strict=True):
        for r, g in zip(dr, dg, strict=True):
            loss = loss + torch.mean(torch.abs(r.float().detach() - g.float()))
    return loss * 2


def kl_loss(
    z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor, z_mask: torch.Tensor
) -> torch.Tensor:
    """KL(q(z|x) || p(z|c)) estimated at the posterior sample: sum over channels, mean over valid frames.

    ``z_p``, ``logs_q`` are (B, C, T_frames) from the posterior (``z_p`` after the flow); ``m_p``, ``logs_p``
    the prior statistics expanded to frames; ``z_mask`` (B, 1, T_frames).
    """
    z_p, logs_q, m_p, logs_p = z_p.float(), logs_q.float(), m_p.float(), logs_p.float()
    kl = logs_p - logs_q - 0.5 + 0.5 * (z_p - m_p) ** 2 * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)


def mel_loss(mel_real: torch.Tensor, mel_fake: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of log-mel spectrograms."""
    return F.l1_loss(mel_fake.float(), mel_real.float())


def duration_loss(l_length: torch.Tensor) -> torch.Tensor:
    """The generator's per-utterance duration losses (already length-normalised) summed over the batch."""
    return torch.sum(l_length.float())


def wavlm_feature_loss(real_hidden: tuple[torch.Tensor, ...], fake_hidden: tuple[torch.Tensor, ...]):
    """Mean |real - generated| summed over WavLM layers (JP-Extra's WavLM feature-matching term)."""
    loss = 0.0
    for r, g in zip(real_hidden, fake_hidden, strict=True):
        loss = loss + torch.mean(torch.abs(r.float().detach() - g.float()))
    return loss


def lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss of a single discriminator output pair."""
    return torch.mean((1 - real.float()) ** 2) + torch.mean(fake.float() ** 2)


def lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss of a single discriminator output."""
    return torch.mean((1 - fake.float()) ** 2)
