"""Random batches in the data loader's contract format, for generator / step / trainer tests."""

from __future__ import annotations

import torch

from model.config import TrialConfig
from model.text import symbols
from model.text.features import bert_input_dim


def random_batch(cfg: TrialConfig, batch: int = 2, seed: int = 0, frames: tuple[int, int] = (24, 40)) -> dict:
    """A batch dict exactly like ``model.data``'s: ragged lengths, item 0 the longest, zero padding.

    Spectrogram frames per item are drawn from ``frames`` (at least ``train.segment_size / hop`` is not
    required: the generator zero-pads short windows); tokens per item are about a third of the frames.
    """
    g = torch.Generator().manual_seed(seed)
    d, m = cfg.data, cfg.model
    hop = d.hop_length
    n_vocab = m.n_vocab or symbols.NUM_SYMBOLS
    n_tones = m.num_tones or symbols.NUM_TONES
    n_lang = m.num_languages or symbols.NUM_LANGUAGES
    spec_channels = d.n_mel_channels if m.use_mel_posterior_encoder else d.filter_length // 2 + 1

    spec_lengths = torch.randint(frames[0], frames[1] + 1, (batch,), generator=g)
    spec_lengths[0] = frames[1]
    phone_lengths = torch.clamp(spec_lengths // 3 + torch.randint(-2, 3, (batch,), generator=g), min=2)
    t_x, t_y = int(phone_lengths.max()), int(spec_lengths.max())

    def ragged(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(x.shape[-1]).unsqueeze(0) < lengths.unsqueeze(1)
        shape = (batch,) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return x * mask.view(shape).to(x.dtype)

    phones = ragged(torch.randint(1, n_vocab, (batch, t_x), generator=g), phone_lengths)
    tones = ragged(torch.randint(0, n_tones, (batch, t_x), generator=g), phone_lengths)
    languages = ragged(torch.randint(0, n_lang, (batch, t_x), generator=g), phone_lengths)
    bert = ragged(torch.randn(batch, bert_input_dim(cfg.model, cfg.data), t_x, generator=g), phone_lengths)
    style = torch.randn(batch, m.style_dim, generator=g) * 0.1
    spec = ragged(torch.rand(batch, spec_channels, t_y, generator=g) * 2, spec_lengths)
    wav = ragged(torch.rand(batch, 1, t_y * hop, generator=g) * 1.6 - 0.8, spec_lengths * hop)
    return {
        "phones": phones,
        "tones": tones,
        "languages": languages,
        "phone_lengths": phone_lengths,
        "bert": bert,
        "style": style,
        "spec": spec,
        "spec_lengths": spec_lengths,
        "wav": wav,
        "wav_lengths": spec_lengths * hop,
        "speakers": torch.randint(0, d.n_speakers, (batch,), generator=g),
        "ids": [f"rand_{seed}_{i}" for i in range(batch)],
    }


def generator_inputs(b: dict) -> dict:
    """The keyword arguments of ``SynthesizerTrn.forward`` taken from a batch dict."""
    return {
        "phones": b["phones"],
        "phone_lengths": b["phone_lengths"],
        "spec": b["spec"],
        "spec_lengths": b["spec_lengths"],
        "speakers": b["speakers"],
        "tones": b["tones"],
        "languages": b["languages"],
        "bert": b["bert"],
        "style": b["style"],
    }
