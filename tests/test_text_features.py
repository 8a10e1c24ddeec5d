# ruff: noqa: F811 - the builtin_corpus fixture, imported from fixtures_data, is a test argument here
"""Text features as a sweep axis (model/text/features.py), with tiny random models the tests write locally:
a DeBERTa-v2 behind a fast tokenizer with multi-character tokens and a normaliser that drops a character,
a tiny Llama (causal LM) with a BOS-adding fast tokenizer, and the char-vocabulary DeBERTa of the BERT path.
Nothing is downloaded; the Hugging Face cache is pointed at an empty directory for the offline refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from fixtures_data import builtin_corpus, data_cfg, write_tiny_bert  # noqa: F401 - fixture

from model.config import ConfigError, DataConfig, TrialConfig, preset_config
from model.data import prepare_data
from model.data.cache import text_key
from model.text.features import (
    TextFeaturizer,
    bert_input_dim,
    feature_dim,
    phone_features,
    spec_of,
)
from model.text.g2p import g2p, to_sequence

SENTENCE = "今日は、良い天気ですね!"  # kanji, kana, punctuation; normalised to 今日は,良い天気ですね!
MULTI = ["今日", "天気", "すね"]  # tokens of the fast test tokenizer that span two characters
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>"]


def _fast_tokenizer(texts: list[str], *, bos_only: bool, drop: str | None):
    """A WordLevel tokenizer: the MULTI pairs as one token, every other character alone; ``drop`` is removed
    by the normaliser (so no token covers it); [CLS] .. [SEP] around the text, or only <s> before it."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted({c for t in texts for c in t} - {" ", drop})
    vocab = {t: i for i, t in enumerate(SPECIALS + MULTI + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    if drop:
        tok.normalizer = normalizers.Replace(drop, "")
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("|".join(MULTI) + "|."), behavior="isolated")
    if bos_only:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 4)])
        kw = {"bos_token": "<s>"}
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        kw = {"cls_token": "[CLS]", "sep_token": "[SEP]"}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", **kw), len(
        vocab
    )


def write_tiny_deberta_fast(d: Path, texts: list[str], hidden: int = 24) -> Path:
    from transformers import DebertaV2Config, DebertaV2Model

    tok, n = _fast_tokenizer(texts, bos_only=False, drop=",")
    torch.manual_seed(1)
    cfg = DebertaV2Config(
        vocab_size=n, hidden_size=hidden, num_hidden_layers=3, num_attention_heads=2, intermediate_size=2 * hidden,
        max_position_embeddings=64, relative_attention=True, position_biased_input=False,
        pos_att_type=["p2c", "c2p"], pad_token_id=0,
    )  # fmt: skip
    DebertaV2Model(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def write_tiny_llama(d: Path, texts: list[str], hidden: int = 16) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok, n = _fast_tokenizer(texts, bos_only=True, drop=None)
    torch.manual_seed(2)
    cfg = LlamaConfig(
        vocab_size=n, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
        bos_token_id=4, eos_token_id=3,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def corpus_texts(corpus) -> list[str]:
    from model.data.corpus import read_esd_list

    return [g2p(i.text).text for i in read_esd_list(corpus.esd_list)[0]] + [g2p(SENTENCE).text]


@pytest.fixture(scope="module")
def models(tmp_path_factory, builtin_corpus):  # noqa: F811
    root = tmp_path_factory.mktemp("text_models")
    texts = corpus_texts(builtin_corpus)
    return {
        "deberta": write_tiny_deberta_fast(root / "deberta", texts),
        "llama": write_tiny_llama(root / "llama", texts),
        "bert": write_tiny_bert(root / "bert-char", texts, hidden=16, layers=2),
    }


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _featurizer(**kw) -> TextFeaturizer:
    return TextFeaturizer(spec_of(DataConfig(**kw)), device="cpu")


# -- alignment -----------------------------------------------------------------------------------------
def test_subword_rows_align_to_characters_and_phones(models):
    """Multi-character tokens give their row to each character, the character the normaliser drops takes its
    left neighbour's, [CLS] / [SEP] become the first / last row, and word2ph spreads rows over phones."""
    r = g2p(SENTENCE)
    text = r.text
    assert text == "今日は,良い天気ですね!"
    feat = _featurizer(text_features=str(models["deberta"]), text_features_layers=[-1])
    assert feat.kind == "encoder" and feat.dim == 24
    (entry,) = feat([text])
    rows = entry["bert"]
    assert rows.shape == (len(text) + 2, 24)
    enc = feat.tokenizer(text, return_offsets_mapping=True)
    h = feat.model(input_ids=torch.tensor([enc["input_ids"]]), output_hidden_states=True).hidden_states[-1][0]
    tok = feat.tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tok == ["[CLS]", "今日", "は", "良", "い", "天気", "で", "すね", "!", "[SEP]"]  # "," dropped
    want_token = {
        "今": 1,
        "日": 1,
        "は": 2,
        ",": 2,
        "良": 3,
        "い": 4,
        "天": 5,
        "気": 5,
        "で": 6,
        "す": 7,
        "ね": 7,
        "!": 8,
    }
    assert torch.allclose(rows[0], h[0], atol=1e-5) and torch.allclose(rows[-1], h[-1], atol=1e-5)
    for c, ch in enumerate(text):
        assert torch.allclose(rows[c + 1], h[want_token[ch]], atol=1e-5), ch
    # to phones, with and without blanks: every phone of a character carries that character's row
    for add_blank in (False, True):
        _, _, _, w2p = to_sequence(r.phones, r.tones, r.word2ph, add_blank)
        ph = phone_features({"bert": rows}, w2p, "token")
        assert ph.shape == (24, sum(w2p))
        owner = torch.repeat_interleave(torch.arange(len(w2p)), torch.tensor(w2p))
        for j in range(ph.shape[1]):
            assert torch.equal(ph[:, j], rows[owner[j]])
    # the phones of 今 (ky, o) and 日 (o) share the token 今日; the "," phone takes は's row
    first = phone_features({"bert": rows}, r.word2ph, "token")
    assert torch.allclose(first[:, 1], h[1], atol=1e-5) and torch.allclose(first[:, 3], h[1], atol=1e-5)
    assert r.phones[6] == "," and torch.allclose(first[:, 6], h[2], atol=1e-5)


def test_causal_lm_token_and_sentence_features(models):
    text = g2p(SENTENCE).text
    feat = _featurizer(
        text_features=str(models["llama"]), text_features_level="both", text_features_sentence="last",
        text_features_layers=[-2, -1],
    )  # fmt: skip
    assert feat.kind == "causal"  # from the config's architectures (LlamaForCausalLM)
    (entry,) = feat([text])
    ids = feat.tokenizer(text)["input_ids"]
    assert feat.tokenizer.convert_ids_to_tokens(ids)[0] == "<s>"
    hs = feat.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    h = (hs[-2][0] + hs[-1][0]) / 2  # the mean of the two layers asked for
    assert torch.allclose(entry["sentence"], h[-1], atol=1e-5)  # last token: it has seen the sentence
    assert torch.allclose(entry["bert"][0], h[0], atol=1e-5)  # <s> -> the leading padding phone
    assert torch.allclose(entry["bert"][-1], h[-1], atol=1e-5)  # no trailing special: the last char's
    assert entry["flops"] > 0
    ph = phone_features(entry, g2p(SENTENCE).word2ph, "both")
    assert ph.shape[0] == 32 and torch.equal(ph[16:, 0], ph[16:, -1])  # the sentence half is constant
    # batching does not change a text's features (padding is masked)
    many = feat([text, "はい", text + text])
    assert torch.allclose(many[0]["bert"], entry["bert"], atol=1e-4)
    assert feature_dim(DataConfig(text_features=str(models["llama"]), text_features_level="both")) == 32
    with pytest.raises(ConfigError, match="data.text_features_kind: 'encoder' but .* causal LM"):
        _featurizer(text_features=str(models["llama"]), text_features_kind="encoder")


def test_bert_path_keeps_its_cache_key_and_char_ids(models):
    d = DataConfig(text_features="bert", bert_model=str(models["bert"]))
    key = text_key("fp", d)
    assert key["bert"] == str(models["bert"]) and key["bert_layer"] == -3 and "text_features" not in key
    assert text_key("fp", DataConfig())["bert"] == "none"
    feat = TextFeaturizer(spec_of(d), device="cpu")
    r = g2p("はい そうです 鬱")  # the char tokenizer drops spaces and has no 鬱: per-character ids
    toks = feat.tokens(r.text)
    assert len(toks) == len(r.text) + 2 and toks[r.text.index("鬱") + 1][0] == feat.tokenizer.unk_token_id
    long = g2p("今日は良い天気ですね!" * 4).text  # longer than the 64 positions: windows, joined
    feat.max_tokens = 16
    (e,) = feat([long])
    assert e["bert"].shape == (len(long) + 2, 16)


# -- the cache, shared across trials, and the model's input ------------------------------------------------
def test_features_cached_shared_across_trials_and_set_the_model_input(builtin_corpus, models, tmp_path):  # noqa: F811
    from model.generator import SynthesizerTrn

    cache = tmp_path / "cache"
    llama = str(models["llama"])
    cfg = data_cfg(builtin_corpus.esd_list, cache, text_features=llama, text_features_level="both")
    assert cfg.model.bert_dim is None
    first = prepare_data(cfg)
    assert first.stats.text_computed == len(first.train_items) + len(first.val_items)
    assert first.bert_dim == 32 and bert_input_dim(cfg.model, cfg.data) == 32
    b = next(iter(first.make_loader("train", batch_size=2)))
    assert (
        b["bert"].shape[:2] == (2, 32)
        and b["bert"][0, :, : int(b["phone_lengths"][0])].abs().sum(0).gt(0).all()
    )
    net = SynthesizerTrn.from_config(cfg.model, cfg.data)
    assert net.enc_p.bert_proj.in_channels == 32  # the feature width flowed into the projection
    params = sum(p.numel() for p in TextFeaturizer(spec_of(cfg.data), device="cpu").model.parameters())
    assert first.params_text_model == params
    assert (
        first.flops_text_features > 0 and first.summary()["flops_text_features"] == first.flops_text_features
    )
    # another trial of the sweep (another acoustic size, half the data): nothing recomputed, same directory
    other = data_cfg(builtin_corpus.esd_list, cache, text_features=llama, text_features_level="both")
    other.model.hidden_channels = other.model.inter_channels = 48
    other.data.data_hours = first.data_hours / 2
    second = prepare_data(other)
    assert second.stats.text_computed == 0 and second.stats.text_dir == first.stats.text_dir
    assert 0 < second.flops_text_features < first.flops_text_features  # counted for its own utterances
    # model id and layer choice are in the key: another choice, another directory
    third = prepare_data(
        data_cfg(builtin_corpus.esd_list, cache, text_features=llama, text_features_layers=[1])
    )
    enc = prepare_data(data_cfg(builtin_corpus.esd_list, cache, text_features=str(models["deberta"])))
    dirs = {first.stats.text_dir, third.stats.text_dir, enc.stats.text_dir}
    assert len(dirs) == 3 and third.stats.text_computed > 0 and enc.bert_dim == 24
    none = prepare_data(data_cfg(builtin_corpus.esd_list, cache))
    assert none.bert_dim == 1024 and none.params_text_model == 0 == none.flops_text_features
    # a projection shrinks what is cached and what the generator reads
    proj = data_cfg(builtin_corpus.esd_list, cache, text_features=llama, text_features_proj_dim=4)
    assert prepare_data(proj).bert_dim == 4


# -- bad input -----------------------------------------------------------------------------------------
def test_unavailable_model_is_refused_before_any_work(builtin_corpus, tmp_path, empty_hf_cache):  # noqa: F811
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", text_features="nobody/no-such-model")
    with pytest.raises(
        ConfigError,
        match=r"data.text_features: .*'nobody/no-such-model' is not available offline.*Hugging Face cache",
    ):
        prepare_data(cfg)
    assert not list((tmp_path / "cache").glob("audio-*/*/*.pt"))  # refused before the audio features
    with pytest.raises(ConfigError, match="data.text_features: .*no such directory"):
        feature_dim(DataConfig(text_features="./not/here"))


def test_public_presets_use_bert_and_refuse_to_train_on_zeros(builtin_corpus, tmp_path, empty_hf_cache):  # noqa: F811
    assert preset_config("default").data.text_features == "bert"
    assert preset_config("seed_large").data.text_features == "bert"
    assert preset_config("tiny").data.text_features == "none"
    assert preset_config("default").data.bert_model == "ku-nlp/deberta-v2-large-japanese-char-wwm"
    assert (
        bert_input_dim(preset_config("default").model, preset_config("default").data) == 1024
    )  # planned offline
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", text_features="bert")  # as the presets ask
    with pytest.raises(
        ConfigError, match=r"data.bert_model: .*'ku-nlp/deberta-v2-large-japanese-char-wwm'.*hf download"
    ):
        prepare_data(cfg)


def test_layer_out_of_range_slow_tokenizer_other_cache_and_width_are_refused(
    builtin_corpus, models, tmp_path
):  # noqa: F811
    with pytest.raises(
        ConfigError, match=r"data.text_features_layers\[1\]: 7 is out of range .* 3 hidden states"
    ):
        feature_dim(DataConfig(text_features=str(models["llama"]), text_features_layers=[-1, 7]))
    with pytest.raises(ConfigError, match="data.text_features: .*not a fast tokenizer.*offset mapping"):
        _featurizer(text_features=str(models["bert"]))  # the char DeBERTa's Python tokenizer, not via `bert`
    cfg = TrialConfig()
    cfg.data.text_features, cfg.model.bert_dim = str(models["llama"]), 1024
    with pytest.raises(ConfigError, match="model.bert_dim: 1024 but data.text_features .* 16-dimensional"):
        bert_input_dim(cfg.model, cfg.data)
    # a cache directory whose key names another model (copied by hand) is refused, naming the field
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", text_features=str(models["llama"]))
    p = prepare_data(cfg)
    key = Path(p.stats.text_dir) / "key.json"
    k = json.loads(key.read_text())
    k["bert"] = "someone/else"
    key.write_text(json.dumps(k))
    with pytest.raises(
        ValueError, match="data.text_features: feature cache .* other settings .*someone/else"
    ):
        prepare_data(cfg)


def test_use_bert_and_data_bert_dim_of_older_configs_still_load():
    old = TrialConfig().to_dict()
    del old["data"]["text_features"]
    old["data"].update(use_bert=True, bert_dim=1024)
    old["model"]["bert_dim"] = 1024
    cfg = TrialConfig.from_dict(old)
    assert cfg.data.text_features == "bert" and cfg.model.bert_dim == 1024
    with pytest.raises(
        ConfigError, match="config.data.use_bert: False contradicts config.data.text_features 'bert'"
    ):
        TrialConfig.from_dict({"data": {"use_bert": False, "text_features": "bert"}})
    with pytest.raises(ConfigError, match="data.text_features_kind"):
        TrialConfig.from_dict({"data": {"text_features_kind": "decoder"}})


def test_analysis_columns_count_the_text_model_or_not():
    from analysis.table import add_text_model_columns

    row = {"N": 100.0, "C": 1e9, "params_text_model": 40.0, "flops_text_features": 5e8}
    add_text_model_columns(row)
    assert row["N_with_text"] == 140.0 and row["C_with_text"] == 1.5e9 and row["N"] == 100.0
    off = {"N": 100.0, "C": 1e9}  # text features off, or a run from before the metrics
    add_text_model_columns(off)
    assert off["params_text_model"] == 0.0 and off["N_with_text"] == 100.0 and off["C_with_text"] == 1e9


# -- the text-feature axis through a sweep -----------------------------------------------------------------
SWEEP = Path(__file__).parent / "sweeps" / "text_features_cpu.yaml"


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory, models, builtin_corpus) -> Path:  # noqa: F811
    """The CPU sweep with its model placeholders, storage, tracking and cache in one tmp directory, on the
    session's built-in corpus (already built, so the sweep does not build its own)."""
    import yaml

    tmp = tmp_path_factory.mktemp("text_sweep")
    text = SWEEP.read_text(encoding="utf-8")
    for name, key in (("bert", "@BERT@"), ("deberta", "@DEBERTA@"), ("llama", "@LLAMA@")):
        text = text.replace(key, str(models[name]))
    raw = yaml.safe_load(text)
    raw["storage_path"] = str(tmp / "sweeps")
    raw["tracking_uri"] = f"sqlite:///{tmp / 'mlflow.db'}"
    raw["base"]["data"]["corpus"] = str(builtin_corpus.esd_list)
    raw["base"]["data"]["cache_dir"] = str(tmp / "cache")
    out = tmp / "text_features_cpu.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def test_the_axis_plans_four_sources_and_one_trial_reports_the_text_model(sweep_file, models, tmp_path):
    from model.sink import MemorySink
    from model.train import run_trial
    from orchestrator.plan import load_spec, resolve

    plan = resolve(load_spec(sweep_file), count=False)
    sources = [tp.config.data.text_features for tp in plan.trials]
    assert sources == ["none", "bert", str(models["deberta"]), str(models["llama"])]
    assert len({tp.trial_id for tp in plan.trials}) == 4
    cfg = plan.trials[3].config  # the causal LM: token rows + sentence vector
    assert cfg.data.text_features_level == "both" and cfg.model.bert_dim is None
    cfg.output_dir = str(tmp_path / "trial")
    cfg.train.steps = 2
    cfg.eval.n_utterances = 0  # likelihood metrics only: the sweep test synthesises
    sink = MemorySink()
    res = run_trial(cfg, sink, resume=False)
    assert res.status == "finished", res.message
    assert cfg.model.bert_dim == 32  # resolved from the features before the nets were built
    static = sink.metrics[0][1]
    assert static["params_text_model"] > 0 and static["flops_text_features"] > 0
    assert static["params_enc_p"] > 0


@pytest.mark.slow
@pytest.mark.integration
def test_text_feature_sweep_runs_end_to_end_and_the_table_has_the_columns(sweep_file):
    import os

    from analysis.table import load
    from orchestrator.driver import submit_sweep

    old = Path.cwd()
    os.chdir(sweep_file.parent)
    try:
        result = submit_sweep(sweep_file, progress=False)
    finally:
        os.chdir(old)
    assert result.n_finished == 4, result.trials
    table = load("text_features_cpu", tracking_uri_=f"sqlite:///{sweep_file.parent / 'mlflow.db'}")
    for col in ("params_text_model", "flops_text_features", "N_with_text", "C_with_text", "val_nelbo"):
        assert table[col].notna().all(), col
    by = table.set_index("data.text_features")
    assert by.loc["none", "params_text_model"] == 0 and by.loc["none", "N_with_text"] == by.loc["none", "N"]
    assert (table["params_text_model"] > 0).sum() == 3
    assert (table["C_with_text"] >= table["C"]).all()
    cols = [
        "data.text_features",
        "N",
        "params_text_model",
        "C",
        "flops_text_features",
        "C_with_text",
        "val_nelbo",
    ]
    shown = table[cols].copy()
    shown["data.text_features"] = shown["data.text_features"].map(lambda s: Path(str(s)).name)
    print("\n" + shown.to_string(index=False))


def test_a_sweep_whose_text_model_is_missing_is_refused_at_submit(tmp_path, empty_hf_cache):
    """A missing text model (or an unusable style encoder) is found once per sweep before any trial starts:
    a dry run notes it, a local submit refuses it naming the trials and the field, and launches nothing."""
    from orchestrator.driver import submit_sweep
    from orchestrator.plan import SpecError

    spec = {
        "name": "missing_text_model",
        "storage_path": str(tmp_path / "runs"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "base": {"preset": "tiny", "data": {"text_features": "bert"}, "train": {"steps": 2}},
        "axes": {"width": [16, 32], "data.style_encoder": ["zeros", "torchscript:/nowhere/enc.pt"]},
        "estimate": {"count": False},
    }
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec))
    notes = " ".join(submit_sweep(f, dry_run=True, progress=False).plan.notes)
    assert "data.bert_model" in notes and "ku-nlp/deberta-v2-large-japanese-char-wwm" in notes
    assert "data.style_encoder" in notes and "/nowhere/enc.pt" in notes
    with pytest.raises(SpecError, match=r"sweep.yaml.*trials .*: data.bert_model: .*not available offline"):
        submit_sweep(f, progress=False)
    assert not (tmp_path / "runs" / "missing_text_model").exists()  # nothing launched, no state written
