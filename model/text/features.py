"""Text features for the text encoder: none, BERT (Style-Bert-VITS2's DeBERTa), any Hugging Face encoder, or a
causal language model's hidden states (Llama-VITS). One choice, ``data.text_features``:

- ``none``: zeros (the offline demo; the tiny preset). ``model.bert_dim`` keeps its SBV2 width (1024
  unless set), so the generator's layout is SBV2's.
- ``bert``: ``data.bert_model`` (default ``ku-nlp/deberta-v2-large-japanese-char-wwm``) on the path
  Style-Bert-VITS2 takes: one id per character (a tokenizer that is not one token per character here gets
  ids character by character, unknown ones ``[UNK]``), ``[CLS] text [SEP]``, hidden layer -3. With the default layer this path's cache key and features are the
  ones before text features became an axis.
- anything else: a Hugging Face model id (looked up in the HF cache only) or a local directory, with
  ``data.text_features_kind``: ``auto`` (default: from the config's ``architectures``: ``*ForCausalLM`` /
  ``*LMHeadModel`` is causal), ``encoder`` or ``causal``; an explicit kind the config contradicts is
  refused. Both load with ``AutoModel``: a causal LM's base model (the LM head is not loaded nor
  counted), run left to right, so its last token's state has seen the whole sentence.

Layers (``data.text_features_layers``): indices into the model's hidden states (0 = the embeddings,
``num_hidden_layers`` = the last; negative counts from the end); several are averaged (e.g. ``[-4, -3, -2,
-1]``: the mean of the last four). Default ``[-3]`` (SBV2's choice). An index outside the model's range
is refused naming the field and the range.

Level (``data.text_features_level``): ``token`` (one row per character, expanded to phones through
``word2ph`` as BERT's are), ``sentence`` (one vector per utterance: ``data.text_features_sentence`` ``mean``
over the utterance's tokens or ``last``, the last token's state, which a causal LM has computed after seeing
the whole sentence; Llama-VITS's global embedding), broadcast to every phone, or ``both`` (token rows
and the sentence vector concatenated: twice the width).

Sub-word tokens -> characters -> phones (Japanese): the model's *fast* tokenizer gives each token its
character span (``return_offsets_mapping``). A character inside one token's span takes that token's row; a
token spanning several characters gives its row to each of them (a two-kana or kanji-compound token); a
character covered by several tokens (byte-level BPE splits one kanji into 2-3 byte tokens with the same
span) takes their mean; a character no token covers (removed by the tokenizer's normaliser, e.g. a space
or a stripped punctuation mark) takes the row of the nearest covered character before it (after it at the
start of the text; zeros if no character is covered). ``word2ph``'s first and last entries (the padding
phones around the utterance) take the mean of the leading / trailing special tokens (``[CLS]`` / ``[SEP]``,
``<s>``), or the first / last character's row when the tokenizer adds none. A tokenizer without offset
mapping (a slow, Python tokenizer) cannot be aligned and is refused (``data.text_features``).

Optional ``data.text_features_proj_dim``: a fixed Gaussian random projection (seed 0, entries N(0, 1/p))
of the pooled features to ``p`` dims before they are cached (Johnson-Lindenstrauss: distances kept, the
cache and the generator's ``bert_proj`` shrink); part of the cache key.

Weights are never downloaded here: a hub id must already be in the Hugging Face cache (``hf download ID``
first) or be a local directory; otherwise ``check_available`` refuses it before any training, naming the
field and the id. The feature width flows into ``model.bert_dim`` (``null``: follow the features;
``bert_input_dim``); an explicit value that differs is refused naming both fields.

Counting: ``params`` is the text model's parameter count (``params_text_model``); each utterance's forward
FLOPs (``torch.utils.flop_counter``, its share of its batch by token count, padding included) are stored
with its features and summed per trial (``flops_text_features``). Texts longer than the model's positions
run in windows of the body (each with the same special tokens) and are joined.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from model.config import ConfigError, DataConfig

log = logging.getLogger(__name__)

HIDDEN_LAYER = -3  # SBV2 takes the third-from-last hidden state of its DeBERTa

FIELD = "data.text_features"
BERT_DEFAULT = "ku-nlp/deberta-v2-large-japanese-char-wwm"

# facts about models a shipped sweep names (hidden size, hidden layers): plans and dry runs size the
# generator's bert_proj before the weights are on the machine; any other model is read from its config.json
KNOWN_MODELS: dict[str, dict] = {
    BERT_DEFAULT: {"hidden_size": 1024, "num_hidden_layers": 24, "architectures": ["DebertaV2ForMaskedLM"]},
    "llm-jp/llm-jp-3-1.8b": {
        "hidden_size": 2048,
        "num_hidden_layers": 24,
        "architectures": ["LlamaForCausalLM"],
    },
}
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class TextFeatureSpec:
    """What is computed (everything in it is part of the text cache key)."""

    model: str  # hub id or local path
    kind: str  # auto | encoder | causal (as asked; ``check_kind`` compares it with the model's config)
    layers: tuple[int, ...]
    level: str  # token | sentence | both
    sentence: str  # mean | last
    proj_dim: int | None
    char_ids: bool  # the BERT path: one id per character (SBV2), no offset mapping needed

    @property
    def is_legacy_bert(self) -> bool:
        """The exact pre-axis BERT features (their cache key is kept)."""
        return (
            self.char_ids and self.layers == (HIDDEN_LAYER,) and self.level == "token" and not self.proj_dim
        )


def spec_of(d: DataConfig) -> TextFeatureSpec | None:
    """The features ``d`` asks for; None for ``none``."""
    src = d.text_features
    if src == "none":
        return None
    bert = src == "bert"
    return TextFeatureSpec(
        model=d.bert_model if bert else src,
        kind="encoder" if bert else d.text_features_kind,
        layers=tuple(d.text_features_layers),
        level=d.text_features_level,
        sentence=d.text_features_sentence,
        proj_dim=d.text_features_proj_dim,
        char_ids=bert,
    )


def cache_key(d: DataConfig) -> dict:
    """The text-feature part of the text cache key (``model.data.cache.text_key``): for ``none`` and the
    default BERT path exactly the keys the cache had before (so existing caches stay valid)."""
    s = spec_of(d)
    if s is None:
        return {"bert": "none", "bert_layer": None}
    if s.is_legacy_bert:
        return {"bert": s.model, "bert_layer": HIDDEN_LAYER}
    return {
        "bert": s.model,
        "bert_layer": list(s.layers),
        "text_features": {
            "kind": s.kind,
            "level": s.level,
            "sentence": s.sentence if s.level != "token" else None,
            "proj_dim": s.proj_dim,
            "align": "char_ids" if s.char_ids else "offsets",
        },
    }


# -- where a model is, without the network ---------------------------------------------------------------
def _field(d: DataConfig) -> str:
    return "data.bert_model" if d.text_features == "bert" else FIELD


def _not_available(field: str, name: str, why: str) -> ConfigError:
    return ConfigError(
        f"{field}: text-feature model {name!r} is not available offline ({why}). Its weights must be in a local "
        f"directory or already in the Hugging Face cache (download it first: `hf download {name}`), or set "
        "data.text_features: none"
    )


def local_config(name: str, field: str = FIELD) -> Path:
    """The ``config.json`` of a local model directory or of a hub id in the HF cache; refused otherwise."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise _not_available(field, name, f"directory {p} has no config.json")
        return p / "config.json"
    if name.startswith((".", "/", "~")):
        raise _not_available(field, name, "no such directory")
    from huggingface_hub import try_to_load_from_cache  # the cache lookup only; never the network

    try:
        got = try_to_load_from_cache(name, "config.json")
    except Exception as e:  # an id the hub library refuses (bad characters)
        raise _not_available(field, name, f"not a model id or directory: {e}") from None
    if not isinstance(got, str):
        raise _not_available(field, name, "not in the Hugging Face cache")
    return Path(got)


def _hf_config(name: str, field: str) -> dict:
    cfg = json.loads(local_config(name, field).read_text(encoding="utf-8"))
    cfg.setdefault("hidden_size", cfg.get("n_embd") or cfg.get("d_model"))
    cfg.setdefault("num_hidden_layers", cfg.get("n_layer") or cfg.get("num_layers"))
    return cfg


def model_facts(d: DataConfig) -> dict:
    """``hidden_size`` and ``num_hidden_layers`` of the chosen model: from its config.json when it is on
    this machine, else from ``KNOWN_MODELS``; refused when neither knows it."""
    s = spec_of(d)
    assert s is not None
    try:
        return _hf_config(s.model, _field(d))
    except ConfigError:
        if s.model in KNOWN_MODELS:
            return dict(KNOWN_MODELS[s.model])
        raise


def check_layers(layers: tuple[int, ...] | list[int], n_layers: int, name: str) -> None:
    """Each index must address one of the ``n_layers + 1`` hidden states (embeddings + every layer)."""
    n = n_layers + 1
    for i, k in enumerate(layers):
        if not -n <= k < n:
            raise ConfigError(
                f"data.text_features_layers[{i}]: {k} is out of range for {name!r}, which has {n} hidden "
                f"states (allowed: {-n} .. {n - 1}; 0 = the embeddings, {n - 1} or -1 = the last layer)"
            )


def model_kind(architectures: list[str] | None) -> str:
    """``causal`` for a causal LM's config (``*ForCausalLM``, ``*LMHeadModel``), else ``encoder``."""
    return "causal" if any(a.endswith(CAUSAL_SUFFIXES) for a in architectures or []) else "encoder"


def check_kind(asked: str, architectures: list[str] | None, name: str) -> str:
    """The kind to use: the config's when ``auto``; an explicit kind the config contradicts is refused."""
    found = model_kind(architectures)
    if asked != "auto" and architectures and asked != found:
        raise ConfigError(
            f"data.text_features_kind: {asked!r} but {name!r} is {'a causal LM' if found == 'causal' else 'an encoder'} "
            f"({', '.join(architectures)}); set {found} or auto"
        )
    return found if asked == "auto" else asked


def feature_dim(d: DataConfig) -> int | None:
    """Width of the features ``d`` asks for (None for ``none``): proj_dim or the hidden size, doubled for
    ``level: both``. Layer indices are checked against the model here."""
    s = spec_of(d)
    if s is None:
        return None
    facts = model_facts(d)
    check_kind(s.kind, facts.get("architectures"), s.model)
    if facts.get("num_hidden_layers"):
        check_layers(s.layers, int(facts["num_hidden_layers"]), s.model)
    width = s.proj_dim or int(facts["hidden_size"])
    return 2 * width if s.level == "both" else width


def bert_input_dim(model_cfg, data_cfg: DataConfig) -> int:
    """The generator's text-feature input width (``model.bert_dim``): ``null`` follows the features (1024,
    SBV2's width, for ``none``, fed zeros); an explicit width must equal them (refused naming both fields)."""
    fd = feature_dim(data_cfg)
    m = model_cfg.bert_dim
    if fd is None:
        return 1024 if m is None else m
    if m is not None and m != fd:
        raise ConfigError(
            f"model.bert_dim: {m} but data.text_features {data_cfg.text_features!r} "
            f"({spec_of(data_cfg).model}) gives {fd}-dimensional features; leave model.bert_dim null to follow "
            f"the features, or set it to {fd}"
        )
    return fd


def resolve_text_dims(cfg):
    """Write the resolved ``model.bert_dim`` into a trial config (in place; returned). Idempotent."""
    cfg.model.bert_dim = bert_input_dim(cfg.model, cfg.data)
    return cfg


def check_available(d: DataConfig) -> None:
    """Before training: the chosen model's config and weights are on this machine (no download)."""
    s = spec_of(d)
    if s is None:
        return
    field = _field(d)
    conf = local_config(s.model, field)
    folder = conf.parent
    if Path(s.model).expanduser().is_dir():
        ok = any((folder / w).is_file() for w in WEIGHT_FILES)
    else:
        from huggingface_hub import try_to_load_from_cache

        ok = any(isinstance(try_to_load_from_cache(s.model, w), str) for w in WEIGHT_FILES)
    if not ok:
        raise _not_available(field, s.model, "its config is there but no weight file")
    feature_dim(d)  # layer range


# -- extraction -----------------------------------------------------------------------------------------
def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def random_projection(dim: int, p: int) -> torch.Tensor:
    """(dim, p), entries N(0, 1/p), seed 0: the same matrix on every machine."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(dim, p, generator=g) / p**0.5


class TextFeaturizer:
    """Loads the model once; ``__call__(texts)`` -> per text a dict ``{"bert": (len(text)+2, dim)`` (token
    or both levels; the cache's name for token rows), ``"sentence": (dim,)`` (sentence or both), ``"flops":
    int}``, float32 on the CPU."""

    def __init__(
        self, spec: TextFeatureSpec, device: str | None = None, max_tokens: int | None = None
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.spec = spec
        self.name = spec.model
        self.device = device or default_device()
        field = "data.bert_model" if spec.char_ids else FIELD
        local_config(spec.model, field)  # a clear refusal before transformers tries the network
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(spec.model, local_files_only=True)
            self.model = AutoModel.from_pretrained(spec.model, local_files_only=True)
        except (OSError, ValueError) as e:
            raise _not_available(field, spec.model, str(e).splitlines()[0]) from None
        if not spec.char_ids and not getattr(self.tokenizer, "is_fast", False):
            raise ConfigError(
                f"{FIELD}: the tokenizer of {spec.model!r} ({type(self.tokenizer).__name__}) is not a fast "
                "tokenizer, so it has no offset mapping and its tokens cannot be aligned to characters; give "
                "a model with a tokenizer.json (PreTrainedTokenizerFast)"
            )
        self.model.eval().to(self.device).requires_grad_(False)  # frozen (and FLOP counting needs it)
        if self.device.startswith("cuda"):
            self.model.half()
        mc = self.model.config
        self.kind = check_kind(spec.kind, getattr(mc, "architectures", None), spec.model)
        check_layers(spec.layers, int(mc.num_hidden_layers), spec.model)
        self.hidden = int(mc.hidden_size)
        self.params = sum(p.numel() for p in self.model.parameters())
        limit = getattr(mc, "max_position_embeddings", None) or 512
        self.max_tokens = min(max_tokens or limit, limit)
        self.proj = random_projection(self.hidden, spec.proj_dim) if spec.proj_dim else None
        self.dim = spec.proj_dim or self.hidden
        self._warned = False

    # -- tokens: (ids, per-token char span or None for a special token) ---------------------------------
    def tokens(self, text: str) -> list[tuple[int, tuple[int, int] | None]]:
        tok = self.tokenizer
        if self.spec.char_ids:
            return self._char_tokens(text)
        enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
        special = set(tok.all_special_ids)
        out = []
        for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            out.append((i, None if (i in special and a == b) else (a, b)))
        return out

    def _char_tokens(self, text: str) -> list[tuple[int, tuple[int, int] | None]]:
        """SBV2's alignment: ``[CLS] + one id per character + [SEP]`` (unknown characters -> ``[UNK]``)."""
        tok = self.tokenizer
        ids = tok(text, add_special_tokens=True)["input_ids"]
        if len(ids) != len(text) + 2:
            if not self._warned:
                log.info(
                    "tokenizer of %s is not one token per character here; using per-character ids", self.name
                )
                self._warned = True
            unk = tok.unk_token_id
            body = [tok.convert_tokens_to_ids(c) for c in text]
            ids = [tok.cls_token_id, *(unk if i is None else i for i in body), tok.sep_token_id]
        return [(ids[0], None), *((ids[k + 1], (k, k + 1)) for k in range(len(text))), (ids[-1], None)]

    def _windows(self, toks: list) -> list[list]:
        """Texts longer than the model's positions: windows of the body, each with the same special tokens."""
        lead = 0
        while lead < len(toks) and toks[lead][1] is None:
            lead += 1
        trail = 0
        while trail < len(toks) - lead and toks[len(toks) - 1 - trail][1] is None:
            trail += 1
        body = toks[lead : len(toks) - trail]
        step = self.max_tokens - lead - trail
        if len(body) <= step:
            return [toks]
        head, tail = toks[:lead], toks[len(toks) - trail :]
        return [head + body[i : i + step] + tail for i in range(0, len(body), step)]

    # -- features ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 16) -> list[dict]:
        from torch.utils.flop_counter import FlopCounterMode

        pieces: list[tuple[int, list]] = []  # (text index, window tokens)
        for t, text in enumerate(texts):
            for w in self._windows(self.tokens(text)):
                pieces.append((t, w))
        rows: dict[int, torch.Tensor] = {}
        flops = [0.0] * len(texts)
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][1]))
        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            L = max(len(pieces[i][1]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                w = pieces[i][1]
                ids[r, : len(w)] = torch.tensor([t for t, _ in w])
                mask[r, : len(w)] = 1
            counter = FlopCounterMode(display=False)
            with counter:
                res = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    output_hidden_states=True,
                )
            n_tok = int(mask.sum())
            states = res.hidden_states
            h = torch.stack([states[k].float() for k in self.spec.layers]).mean(0).cpu()
            for r, i in enumerate(idx):
                rows[i] = h[r, : len(pieces[i][1])]
                flops[pieces[i][0]] += counter.get_total_flops() * len(pieces[i][1]) / n_tok
        out = []
        for t, text in enumerate(texts):
            mine = [i for i in range(len(pieces)) if pieces[i][0] == t]
            toks = [tk for i in mine for tk in pieces[i][1]]
            h = torch.cat([rows[i] for i in mine])
            if self.proj is not None:
                h = h @ self.proj
            entry: dict = {"flops": int(round(flops[t]))}
            if self.spec.level in ("token", "both"):
                entry["bert"] = char_rows(h, [sp for _, sp in toks], len(text))
            if self.spec.level in ("sentence", "both"):
                body = [k for k, (_, sp) in enumerate(toks) if sp is not None] or list(range(len(toks)))
                entry["sentence"] = h[body].mean(0) if self.spec.sentence == "mean" else h[-1]
            out.append(entry)
        return out


def char_rows(h: torch.Tensor, spans: list[tuple[int, int] | None], n_chars: int) -> torch.Tensor:
    """Token rows ``h`` (n_tokens, dim) with their character spans (None: a special token) ->
    (n_chars + 2, dim): the rules of the module docstring. With several windows the leading specials of
    the first window and the trailing ones of the last are used."""
    dim = h.shape[1]
    acc = torch.zeros(n_chars, dim)
    cnt = torch.zeros(n_chars)
    body = [k for k, sp in enumerate(spans) if sp is not None]
    for k in body:
        a, b = spans[k]
        b = max(b, a + 1) if a < n_chars else b  # a zero-width span sits on its character
        acc[a:b] += h[k]
        cnt[a:b] += 1
    covered = cnt > 0
    chars = acc / cnt.clamp(min=1).unsqueeze(1)
    if covered.any():
        idx = torch.arange(n_chars)
        last = torch.where(covered, idx, torch.full_like(idx, -1)).cummax(0).values  # nearest covered before
        first = int(idx[covered][0])
        last = torch.where(last < 0, torch.full_like(last, first), last)
        chars = chars[last]
    first_body = body[0] if body else 0
    last_body = body[-1] if body else len(spans) - 1
    lead = [k for k in range(first_body) if spans[k] is None]
    trail = [k for k in range(last_body + 1, len(spans)) if spans[k] is None]
    start = h[lead].mean(0) if lead else (chars[0] if n_chars else h[0])
    end = h[trail].mean(0) if trail else (chars[-1] if n_chars else h[-1])
    return torch.cat([start.unsqueeze(0), chars, end.unsqueeze(0)])


def featurizer(d: DataConfig, device: str | None = None) -> TextFeaturizer | None:
    """The featurizer ``d`` asks for (None for ``none``); refused with the field named when it cannot be used."""
    s = spec_of(d)
    return None if s is None else TextFeaturizer(s, device=device)


def phone_features(entry: dict, word2ph, level: str) -> torch.Tensor:
    """A cached text entry -> (dim, n_phones) features: token rows expanded through ``word2ph`` and/or the
    sentence vector broadcast to every phone (``level: both`` concatenates them, token rows first)."""
    n = int(torch.as_tensor(word2ph).sum())
    parts = []
    if level in ("token", "both"):
        parts.append(expand_to_phones(entry["bert"].float(), word2ph))
    if level in ("sentence", "both"):
        parts.append(entry["sentence"].float().unsqueeze(1).expand(-1, n))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def expand_to_phones(char_feats: torch.Tensor, word2ph: list[int] | torch.Tensor) -> torch.Tensor:
    """(len(text) + 2, dim) character features -> (dim, sum(word2ph)) phone features."""
    w = torch.as_tensor(word2ph, dtype=torch.long)
    if char_feats.shape[0] != w.numel():
        raise ValueError(f"text features have {char_feats.shape[0]} rows but word2ph has {w.numel()} entries")
    return torch.repeat_interleave(char_feats, w, dim=0).T.contiguous()
