"""Character-level BERT features for the text encoder (Style-Bert-VITS2 JP-Extra uses DeBERTa-v2 char-wwm).

``BertFeaturizer(name_or_path)`` loads ``AutoTokenizer``/``AutoModel`` (a hub name or a local directory;
the hub is only contacted when the name is not already cached), runs batched on CUDA when present, and
returns per-character features: one row per token of ``[CLS] text [SEP]``, from the third-from-last
hidden layer (as Style-Bert-VITS2 does). ``expand_to_phones`` repeats each row ``word2ph`` times.

Alignment: a character-level tokenizer gives exactly one token per character. When a tokenizer does not
(a space dropped, a subword vocabulary), the ids are built character by character with
``convert_tokens_to_ids`` (unknown characters -> ``[UNK]``), so the alignment with ``word2ph`` always holds.
Texts longer than the model's positions are run in windows and joined.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

HIDDEN_LAYER = -3  # third-from-last hidden state


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class BertFeaturizer:
    def __init__(
        self,
        name_or_path: str,
        device: str | None = None,
        layer: int = HIDDEN_LAYER,
        max_tokens: int | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name_or_path
        self.device = device or default_device()
        self.layer = layer
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModel.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"BERT model {name_or_path!r} could not be loaded ({e}). Give a local directory in "
                "data.bert_model, pre-download it into the Hugging Face cache, or set data.use_bert: false."
            ) from None
        self.model.eval().to(self.device)
        if self.device.startswith("cuda"):
            self.model.half()
        self.dim = int(self.model.config.hidden_size)
        limit = getattr(self.model.config, "max_position_embeddings", 512) or 512
        self.max_tokens = min(max_tokens or limit, limit)
        self._warned = False

    # -- tokens ------------------------------------------------------------------------------------
    def char_ids(self, text: str) -> list[int]:
        """``[CLS] + one id per character + [SEP]``."""
        tok = self.tokenizer
        ids = tok(text, add_special_tokens=True)["input_ids"]
        if len(ids) == len(text) + 2:
            return list(ids)
        if not self._warned:
            log.info(
                "tokenizer of %s is not one token per character here; using per-character ids", self.name
            )
            self._warned = True
        unk = tok.unk_token_id
        per_char = []
        for c in text:
            i = tok.convert_tokens_to_ids(c)
            per_char.append(unk if i is None else i)
        return [tok.cls_token_id, *per_char, tok.sep_token_id]

    def _windows(self, ids: list[int]) -> list[list[int]]:
        body = ids[1:-1]
        step = self.max_tokens - 2
        if len(body) <= step:
            return [ids]
        return [[ids[0], *body[i : i + step], ids[-1]] for i in range(0, len(body), step)]

    # -- features ----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 16) -> list[torch.Tensor]:
        """Texts -> per-text float32 CPU tensors of shape (len(text) + 2, dim)."""
        pieces: list[tuple[int, list[int]]] = []  # (text index, window ids)
        for t, text in enumerate(texts):
            for w in self._windows(self.char_ids(text)):
                pieces.append((t, w))
        outs: list[list[tuple[int, torch.Tensor]]] = [[] for _ in texts]
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][1]))
        pad = self.tokenizer.pad_token_id or 0
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            L = max(len(pieces[i][1]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                w = pieces[i][1]
                ids[r, : len(w)] = torch.tensor(w)
                mask[r, : len(w)] = 1
            res = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), output_hidden_states=True
            )
            hidden = res.hidden_states[self.layer].float().cpu()
            for r, i in enumerate(idx):
                outs[pieces[i][0]].append((i, hidden[r, : len(pieces[i][1])]))
        result = []
        for parts in outs:
            parts = [h for _, h in sorted(parts, key=lambda x: x[0])]
            if len(parts) == 1:
                result.append(parts[0])
            else:  # join windows: first [CLS], every window's characters, last [SEP]
                result.append(torch.cat([parts[0][:1]] + [p[1:-1] for p in parts] + [parts[-1][-1:]]))
        return result


def expand_to_phones(char_feats: torch.Tensor, word2ph: list[int] | torch.Tensor) -> torch.Tensor:
    """(len(text) + 2, dim) character features -> (dim, sum(word2ph)) phone features."""
    w = torch.as_tensor(word2ph, dtype=torch.long)
    if char_feats.shape[0] != w.numel():
        raise ValueError(f"BERT features have {char_feats.shape[0]} rows but word2ph has {w.numel()} entries")
    return torch.repeat_interleave(char_feats, w, dim=0).T.contiguous()
