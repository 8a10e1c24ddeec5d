"""Style vectors (model/data/style.py): real embeddings that mean the speaker, one cache file per
(corpus, encoder) that every trial reuses, batches and evaluation that use them, SBV2's export rows,
and every bad input refused with the config fields named."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
import yaml
from fixtures_data import builtin_corpus, data_cfg  # noqa: F401

from model.config import ConfigError, TrialConfig, tiny_config
from model.data import prepare_data
from model.data import style as style_mod
from model.data.manifest import ManifestItem, fingerprint
from model.data.select import select
from model.data.style import (
    StyleCache,
    StyleEncoderError,
    encoder_key,
    parse_encoder,
    speaker_means,
    style_vectors_for_export,
)


class _ScriptEncoder(torch.nn.Module):
    """A cheap deterministic encoder: 8 waveform statistics through a fixed random projection."""

    def __init__(self, dim: int, sample_rate: int, seed: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(8, dim, generator=g))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.reshape(-1)
        f = torch.stack(
            [
                x.abs().mean(),
                x.std(),
                x.pow(2).mean(),
                x.max(),
                x.min(),
                x.abs().max(),
                (x[1:] * x[:-1]).mean(),
                x.mean(),
            ]
        )
        return (f @ self.proj).unsqueeze(0)


class _Length(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sample_rate = 8000

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 4), float(wav.shape[1]))


class _NoRate(torch.nn.Module):
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return wav[:, :4]


def _script(path, dim=256, sample_rate=8000, seed=0, cls=_ScriptEncoder):
    mod = cls(dim, sample_rate, seed) if cls is _ScriptEncoder else cls()  # the others take no settings
    torch.jit.save(torch.jit.script(mod), str(path))
    return f"torchscript:{path}"


def _counting(monkeypatch):
    """Count encoder loads and embedded utterances through ``style.load_encoder``."""
    calls = {"loads": 0, "embedded": 0}
    real = style_mod.load_encoder

    def load(spec, device=None):
        calls["loads"] += 1
        enc = real(spec, device)
        inner = enc.embed

        def embed(waves, sr):
            calls["embedded"] += len(waves)
            return inner(waves, sr)

        enc.embed = embed
        return enc

    monkeypatch.setattr(style_mod, "load_encoder", load)
    return calls


@pytest.fixture(scope="module")
def rz(builtin_corpus, tmp_path_factory):  # noqa: F811
    """The built-in corpus prepared once with resemblyzer (the offline encoder the public presets use)."""
    cache = tmp_path_factory.mktemp("style") / "cache"
    cfg = data_cfg(builtin_corpus.esd_list, cache, style_encoder="resemblyzer")
    return cfg, prepare_data(cfg)


def test_resemblyzer_vectors_are_256d_and_tell_the_speakers_apart(rz):
    """A real check of meaning: the built-in speakers are pitch/speed variants of one synthetic voice, and
    still each utterance's vector is nearest its own speaker's centroid (leave-one-out; 17/18 measured)."""
    _, p = rz
    items = p.train_items + p.val_items
    assert p.style_stats.computed == len(items) and p.summary()["style_computed"] == len(items)
    V = np.stack([p.styles[i.id] for i in items])
    assert V.shape == (len(items), 256) and V.dtype == np.float32 and np.isfinite(V).all()
    assert np.allclose(np.linalg.norm(V, axis=1), 1.0, atol=1e-4)  # resemblyzer's output is L2-normalised
    S = np.array([i.speaker for i in items])
    assert len(set(S)) == 2
    sim = V @ V.T
    off = ~np.eye(len(S), dtype=bool)
    same, diff = sim[(S[:, None] == S[None, :]) & off], sim[S[:, None] != S[None, :]]
    assert same.mean() > diff.mean()
    hits = 0
    for k in range(len(S)):
        keep = np.arange(len(S)) != k
        cents = {s: V[keep & (S == s)].mean(0) for s in set(S)}
        hits += max(cents, key=lambda s: float(V[k] @ cents[s] / np.linalg.norm(cents[s]))) == S[k]
    assert hits / len(S) >= 0.8, f"leave-one-out speaker accuracy {hits}/{len(S)}"


def test_the_style_cache_is_reused_across_trials(rz, monkeypatch):
    """Another trial of the sweep (another size, seed and data-hours subset) embeds nothing and loads no
    encoder; the audio and text caches are the ones a zeros trial uses (the encoder is not in their key)."""
    cfg, p = rz

    def no_encoder(*a, **k):
        raise AssertionError("the encoder was loaded although every vector is cached")

    monkeypatch.setattr(style_mod, "load_encoder", no_encoder)
    other = data_cfg(cfg.data.corpus, cfg.data.cache_dir, style_encoder="resemblyzer", data_hours=0.005)
    other.model.hidden_channels = other.model.inter_channels = 48
    other.train.seed = 3
    q = prepare_data(other)
    assert q.style_stats.computed == 0 and q.style_stats.reused == len(q.train_items) + len(q.val_items)
    assert q.style_stats.path == p.style_stats.path and len(q.train_items) < len(p.train_items)
    assert all(np.array_equal(q.styles[i.id], p.styles[i.id]) for i in q.train_items)
    z = prepare_data(data_cfg(cfg.data.corpus, cfg.data.cache_dir, style_encoder="zeros"))
    assert z.styles is None and z.stats.computed == 0  # same audio/text cache, nothing recomputed
    assert (z.stats.audio_dir, z.stats.text_dir) == (p.stats.audio_dir, p.stats.text_dir)


def test_batches_carry_each_utterances_vector_and_its_speakers_mean(rz):
    cfg, p = rz
    means = speaker_means(p.styles, p.train_items)
    for split in ("train", "val"):
        for b in p.make_loader(split, batch_size=3, seed=1):
            assert b["style"].shape == b["speaker_style"].shape == (len(b["ids"]), cfg.model.style_dim)
            for k, uid in enumerate(b["ids"]):
                it = next(i for i in p.manifest if i.id == uid)
                assert torch.equal(b["style"][k], torch.from_numpy(p.styles[uid]))
                assert torch.allclose(b["speaker_style"][k], torch.from_numpy(means[it.speaker]))
                assert b["style"][k].abs().sum() > 0
    spk = p.train_items[0].speaker
    mine = [p.styles[i.id] for i in p.train_items if i.speaker == spk]  # held-out vectors never enter it
    assert np.allclose(p.speaker_styles[spk], np.mean(mine, axis=0))


def test_training_learns_from_the_style_vector(rz):
    """With real vectors the style projection's weight gets a gradient; with zeros it cannot (only a bias)."""
    from model.step import build_train_state, train_step

    cfg, p = rz
    batch = next(iter(p.make_loader("train", batch_size=2, seed=0)))
    grads = []
    for style in (batch["style"], torch.zeros_like(batch["style"])):
        torch.manual_seed(0)
        state = build_train_state(cfg, "cpu")
        train_step(state, {**batch, "style": style}, update=False)
        grads.append(state.net_g.enc_p.style_proj.weight.grad.abs().sum().item())
    assert grads[0] > 0 and grads[1] == 0


def test_zeros_keeps_zero_style_and_needs_no_encoder(builtin_corpus, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(style_mod, "load_encoder", lambda *a, **k: pytest.fail("zeros loads no encoder"))
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache")
    assert cfg.data.style_encoder == "zeros"  # the tiny preset's default
    p = prepare_data(cfg)
    b = next(iter(p.make_loader("train", batch_size=2)))
    assert not b["style"].any() and not b["speaker_style"].any()
    names, vecs = p.export_style_vectors()
    assert names == ["Neutral"] and vecs.shape == (1, 256) and not vecs.any()
    assert not list((tmp_path / "cache").glob("style-*"))


def test_evaluation_synthesises_with_the_speaker_mean(rz):
    """The likelihood pass uses each utterance's own vector, synthesis from text the speaker's mean."""
    from model.step import build_generator
    from model.train.evaluate import evaluate

    cfg, p = rz
    cfg.eval.mos_backend = "none"
    cfg.eval.intonation_metrics = False
    cfg.eval.n_utterances = 2
    torch.manual_seed(0)
    net = build_generator(cfg)
    seen = []
    real = net.infer

    def infer(*args, **kw):
        seen.append(args[6].clone())
        return real(*args, **kw)

    net.infer = infer
    batches = list(p.make_loader("val", batch_size=2))
    evaluate(net, batches, cfg, synthesis=True)
    assert len(seen) == 2
    for k, uid in enumerate(batches[0]["ids"][:2]):
        spk = next(i.speaker for i in p.val_items if i.id == uid)
        assert torch.allclose(seen[k][0], torch.from_numpy(p.speaker_styles[spk]))
        assert not torch.allclose(seen[k][0], torch.from_numpy(p.styles[uid]))


def test_torchscript_encoder_concurrent_trials_embed_each_utterance_once(
    builtin_corpus,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    calls = _counting(monkeypatch)
    spec = _script(tmp_path / "enc.pt")
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", style_encoder=spec)
    items = select(cfg.data).manifest
    fp = fingerprint(items)
    out = [None] * 3

    def run(k):
        out[k] = StyleCache(tmp_path / "cache", fp, spec).prepare(items, style_dim=256)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o[1].computed for o in out) == len(items) == calls["embedded"] and calls["loads"] == 1
    assert all(np.array_equal(out[0][0][i.id], out[2][0][i.id]) for i in items)
    # a module is fed audio at its own sample_rate: one second at 16 kHz reaches an 8 kHz module as 8000 samples
    enc = style_mod.TorchScriptEncoder(_script(tmp_path / "len.pt", cls=_Length).split(":", 1)[1])
    assert enc.embed([np.zeros(16000, np.float32)], 16000)[0, 0] == 8000


# ----------------------------------------------------------------------------------------------------
# bad inputs


def test_a_misspelt_encoder_is_refused_when_the_config_is_built(tmp_path):
    for bad, part in [
        ("resemblizer", "unknown style encoder"),
        ("torchscript", "needs a file"),
        ("zeros:x", "no argument"),
        ("", "expected"),
    ]:
        with pytest.raises(ConfigError, match="data.style_encoder") as e:
            TrialConfig.from_dict({"data": {"style_encoder": bad}})
        assert part in str(e.value)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "st",
                "base": {"preset": "tiny"},
                "axes": {"data.style_encoder": ["zeros", "resemblyzer"]},
                "estimate": {"count": False},
            }
        )
    )
    from orchestrator.plan import SpecError, resolve

    plan = resolve(sweep, count=False)  # a sweep field like every data.* field
    assert sorted(t.config.data.style_encoder for t in plan.trials) == ["resemblyzer", "zeros"]
    sweep.write_text(sweep.read_text().replace("resemblyzer", "resemblizer"))
    with pytest.raises(SpecError, match=r"axes.data.style_encoder\[1\]: unknown style encoder 'resemblizer'"):
        resolve(sweep, count=False)  # refused at submit, before any trial starts


def test_an_encoder_that_cannot_load_offline_fails_before_any_feature(builtin_corpus, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # where pyannote is installed: an empty cache, no network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", style_encoder="wespeaker")
    with pytest.raises(StyleEncoderError) as e:
        prepare_data(cfg)
    msg = str(e.value)
    assert "data.style_encoder" in msg and "pyannote/wespeaker-voxceleb-resnet34-LM" in msg
    assert "Hugging Face cache" in msg or "local" in msg
    assert not list((tmp_path / "cache").rglob("*.pt"))  # no audio or text feature was computed
    for spec, part in [
        (f"torchscript:{tmp_path / 'missing.pt'}", "no such file"),
        (_script(tmp_path / "norate.pt", cls=_NoRate), "sample_rate"),
    ]:
        with pytest.raises(StyleEncoderError, match="data.style_encoder") as e:
            prepare_data(data_cfg(builtin_corpus.esd_list, tmp_path / "cache", style_encoder=spec))
        assert part in str(e.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a module")
    with pytest.raises(StyleEncoderError, match="not a loadable TorchScript module"):
        prepare_data(
            data_cfg(builtin_corpus.esd_list, tmp_path / "cache", style_encoder=f"torchscript:{junk}")
        )


def test_an_encoder_of_another_width_is_refused_naming_both_fields(builtin_corpus, tmp_path):  # noqa: F811
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", style_encoder="resemblyzer")
    cfg.model.style_dim = 128
    with pytest.raises(
        StyleEncoderError, match=r"data.style_encoder='resemblyzer' gives 256-d .* model.style_dim=128"
    ):
        prepare_data(cfg)  # known width: refused before any work
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.pt"))
    cfg.model.style_dim = 0
    with pytest.raises(StyleEncoderError, match="model.style_dim=0"):
        prepare_data(cfg)
    spec = _script(tmp_path / "enc64.pt", dim=64)
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", style_encoder=spec)
    with pytest.raises(StyleEncoderError, match=r"gives 64-d vectors but model.style_dim=256"):
        prepare_data(cfg)  # measured width: refused at the first embedding, nothing written
    assert not list((tmp_path / "cache").glob("style-*/embeddings.npz"))


def test_another_encoders_cache_is_never_mixed_in(builtin_corpus, tmp_path, monkeypatch):  # noqa: F811
    calls = _counting(monkeypatch)
    a = _script(tmp_path / "a.pt", seed=0)
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", style_encoder=a)
    pa = prepare_data(cfg)
    n = calls["embedded"]
    assert n == len(pa.train_items) + len(pa.val_items)
    key_a = encoder_key(a)
    _script(tmp_path / "a.pt", seed=1)  # the same path, other weights: another key, recomputed
    pb = prepare_data(cfg)
    assert encoder_key(a) != key_a  # the file's digest is in the key
    assert calls["embedded"] == 2 * n and pb.style_stats.path != pa.style_stats.path
    uid = pa.train_items[0].id
    assert not np.array_equal(pa.styles[uid], pb.styles[uid])
    # a file copied over from the other encoder's directory is refused, naming it
    shutil.copy(pa.style_stats.path, pb.style_stats.path)
    with pytest.raises(StyleEncoderError, match="made for") as e:
        prepare_data(cfg)
    assert pb.style_stats.path in str(e.value) and "data.style_encoder" in str(e.value)
    assert parse_encoder("wespeaker").arg == "pyannote/wespeaker-voxceleb-resnet34-LM"


# ----------------------------------------------------------------------------------------------------
# SBV2's style_vectors.npy rows


def _items(labels):
    return [
        ManifestItem(f"u{k}", spk, "t", f"u{k}.wav", 1.0, 16000, extras={"style": lab} if lab else {})
        for k, (spk, lab) in enumerate(labels)
    ]


def test_style_vectors_for_export_neutral_first_then_each_style():
    items = _items([("a", None), ("a", "Happy"), ("a", "Happy"), ("a", "Sad"), ("b", "Sad")])
    vecs = {it.id: np.full(4, float(k), np.float32) for k, it in enumerate(items)}
    names, rows = style_vectors_for_export(vecs, items)
    assert names == ["Neutral", "Happy", "Sad"] and rows.dtype == np.float32
    assert np.allclose(rows[:, 0], [2.0, 1.5, 3.5])  # mean of all, then of each label
    names, rows = style_vectors_for_export(vecs, items, {"Neutral": 0, "Sad": 1, "Happy": 2}, speaker="a")
    assert names == ["Neutral", "Sad", "Happy"] and np.allclose(rows[:, 0], [1.5, 3.0, 1.5])
    names, rows = style_vectors_for_export(vecs, _items([("a", None), ("a", None)]))
    assert names == ["Neutral"] and rows.shape == (1, 4)
    with pytest.raises(ValueError, match="Neutral"):
        style_vectors_for_export(vecs, items, {"Happy": 0, "Sad": 1})
    with pytest.raises(ValueError, match="'Angry' has no labelled"):
        style_vectors_for_export(vecs, items, {"Neutral": 0, "Happy": 1, "Sad": 2, "Angry": 3})
    with pytest.raises(ValueError, match="does not name"):
        style_vectors_for_export(vecs, items, {"Neutral": 0, "Happy": 1})
    with pytest.raises(ValueError, match="speaker 'c'"):
        style_vectors_for_export(vecs, items, speaker="c")
    with pytest.raises(ValueError, match="no style vector"):
        style_vectors_for_export({}, items)


def test_export_rows_of_a_prepared_corpus(rz):
    _, p = rz
    names, rows = p.export_style_vectors()
    assert names == ["Neutral"] and rows.shape == (1, 256)
    assert np.allclose(rows[0], np.mean([p.styles[i.id] for i in p.train_items], axis=0))


def test_the_sbv2_export_writes_the_style_vectors_the_trial_trained_with(rz, monkeypatch):
    """``export --format sbv2``'s style table (orchestrator.export.style_table) is the training items' mean
    vector for a real encoder, read from the style cache (nothing embedded again)."""
    from orchestrator.export import style_table

    cfg, p = rz
    calls = _counting(monkeypatch)
    trial = tiny_config()
    trial.data = cfg.data
    names, rows = style_table(trial)
    assert names == ["Neutral"] and rows.shape == (1, 256) and rows.dtype == np.float32 and rows.any()
    assert np.allclose(rows[0], np.mean([p.styles[i.id] for i in p.train_items], axis=0))
    assert calls == {"loads": 0, "embedded": 0}


def test_public_presets_embed_real_style_vectors_and_tiny_keeps_zeros():
    from model.config import preset_config

    assert preset_config("default").data.style_encoder == "resemblyzer"
    assert preset_config("seed_large").data.style_encoder == "resemblyzer"
    assert tiny_config().data.style_encoder == "zeros"
