"""Style-Bert-VITS2 in and out (issue 13 items 1-2): import of SBV2 JP-Extra weights, export to its
``model_assets`` layout, and the bad inputs (not a state dict, truncated safetensors, version / architecture
mismatch, non-empty export target)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import builtin_corpus, data_cfg  # noqa: F401 - fixture
from typer.testing import CliRunner

from model import sbv2
from model.config import save_sbv2_config, tiny_config
from model.sink import MemorySink
from model.step import build_discriminators, build_generator, build_train_state
from model.text import symbols
from model.train import checkpoint as ckpt
from model.train.init import InitError, load_init
from orchestrator.cli import app
from orchestrator.export import ExportError, export_trial, style_table

# SBV2's rows for a few symbols (its sorted 112-entry list; docs/sbv2.md), written out independently
SBV2_ROW = {"_": 0, "N": 5, "a": 8, "k": 57, "q": 73, "SP": 110, "UNK": 111, ",": 106}


def _cfg(tmp: Path, seed: int = 0):
    cfg = tiny_config()
    cfg.output_dir = str(tmp / "trial")
    cfg.trial_id = "t0"
    cfg.train.seed = seed
    return cfg


def _saved_trial(tmp: Path) -> tuple[Path, object]:
    """One of this project's checkpoints (untrained tiny trial) and its config."""
    cfg = _cfg(tmp)
    torch.manual_seed(0)
    state = build_train_state(cfg, "cpu")
    return ckpt.save_checkpoint(state, cfg, epoch=0, batch_in_epoch=0, counters={}), cfg


def _sbv2_layout(tmp: Path, cfg, *, version: str = "2.1-JP-Extra", hidden: int | None = None) -> Path:
    """A checkpoint in SBV2's own layout, written here without model.sbv2: weight_g/weight_v keys,
    112/12/3 tables (row i of each table filled with the value i), {"model": ...} in G_0.pth."""
    d = tmp / "sbv2_base"
    d.mkdir()
    c = tiny_config()
    if hidden:
        c.model.hidden_channels = c.model.inter_channels = hidden
    torch.manual_seed(1)
    sd = build_generator(c).state_dict()
    out = {}
    for k, v in sd.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g")
        k = k.replace(".parametrizations.weight.original1", ".weight_v")
        out[k] = v
    h = sd["enc_p.emb.weight"].shape[1]
    for key, n in (
        ("enc_p.emb.weight", 112),
        ("enc_p.tone_emb.weight", 12),
        ("enc_p.language_emb.weight", 3),
    ):
        out[key] = torch.arange(n, dtype=torch.float32)[:, None].expand(n, h).clone()
    torch.save({"model": out, "iteration": 1000, "learning_rate": 1e-4}, d / "G_1000.pth")
    disc = build_discriminators(c)["net_d"].state_dict()
    disc = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v + 1
        for k, v in disc.items()
    }
    torch.save({"model": disc, "iteration": 1000}, d / "D_1000.pth")
    torch.save({"model": {"pre.weight": torch.zeros(1)}}, d / "WD_1000.pth")  # no WavLM D in the trial
    save_sbv2_config(cfg, d / "config.json")
    raw = json.loads((d / "config.json").read_text())
    raw["version"] = version
    (d / "config.json").write_text(json.dumps(raw))
    return d


def test_symbol_table_facts():
    assert len(sbv2.SYMBOLS) == 112 and sbv2.NUM_TONES == 12 and sbv2.NUM_LANGUAGES == 3
    assert all(sbv2.SYMBOLS[i] == s for s, i in SBV2_ROW.items())
    m = sbv2.symbol_map()
    assert m["cl"] == SBV2_ROW["q"] and m["a"] == SBV2_ROW["a"] and m["_"] == 0
    assert sorted(s for s, j in m.items() if j is None) == ["fy", "gw", "kw", "v"]
    mapped = [j for j in m.values() if j is not None]
    assert len(set(mapped)) == len(mapped) == 45  # no two of ours share a row
    # the export's spare rows are rows Japanese never uses, distinct from every mapped row
    spare = list(sbv2.export_extra_rows().values())
    assert not set(spare) & set(mapped) and all(sbv2.SYMBOLS[j] not in sbv2.JP_PHONES for j in spare)
    maps = sbv2.row_maps()
    assert maps["tones"] == {0: 6, 1: 7} and maps["languages"] == {0: 1}


def test_tables_round_trip():
    """Our table -> SBV2's (padded) -> ours again is the identity, spare rows included."""
    w = torch.randn(symbols.NUM_SYMBOLS, 8)
    big = sbv2.export_state_dict({"enc_p.emb.weight": w})["enc_p.emb.weight"]
    assert big.shape == (112, 8)
    assert torch.equal(big[SBV2_ROW["q"]], w[symbols.SYMBOL_TO_ID["cl"]])
    report = sbv2.ImportReport(source="x")
    back = sbv2.import_state_dict(
        {"enc_p.emb.weight": big},
        {"enc_p.emb.weight": torch.zeros_like(w)},
        Path("x"),
        report,
        extra_rows=sbv2.export_extra_rows(),
    )
    assert torch.equal(back["enc_p.emb.weight"], w)
    assert report.rows["symbols"] == {"mapped": 49, "dropped": 63, "initialised": []}


def test_export_then_import_is_identical(tmp_path):
    path, cfg = _saved_trial(tmp_path)
    res = export_trial(str(path), "sbv2", tmp_path / "assets", name="m")
    out = tmp_path / "assets"
    assert set(res["files"]) == {"config.json", "m.safetensors", "style_vectors.npy"}
    assert res["tables"]["symbols"] == {
        "rows": 112,
        "mapped": 45,
        "padded": 63,
        "spare": sbv2.export_extra_rows(),
    }
    assert res["tables"]["tones"] == {"rows": 12, "mapped": 2, "padded": 10}
    raw = json.loads((out / "config.json").read_text())
    assert raw["version"].endswith("JP-Extra") and raw["data"]["style2id"] == {"Neutral": 0}
    assert len(raw["data"]["spk2id"]) == cfg.data.n_speakers
    sv = np.load(out / "style_vectors.npy")
    assert sv.shape == (1, 256) and not sv.any()  # what the trial trained with (style_table's seam)
    from safetensors.torch import load_file

    sd = load_file(str(out / "m.safetensors"))
    assert sd["enc_p.emb.weight"].shape[0] == 112 and sd["enc_p.tone_emb.weight"].shape[0] == 12
    assert any(k.endswith(".weight_g") for k in sd) and not any("parametrizations" in k for k in sd)

    c2 = _cfg(tmp_path / "ft", seed=5)
    c2.train.init_from = str(out)
    state = build_train_state(c2, "cpu")
    info = load_init(state, c2)
    assert info.import_report["rows"]["symbols"]["initialised"] == []
    original = ckpt.load_checkpoint(path)["train_state"]["net_g"]
    got = state.net_g.state_dict()
    assert all(torch.equal(got[k], v) for k, v in original.items())
    net0 = build_generator(cfg)
    net0.load_state_dict(original)
    outs = []
    for net in (net0.eval(), state.net_g.eval()):
        torch.manual_seed(3)
        x = torch.tensor([[0, 20, 0, 2, 0, 5, 0]])
        outs.append(
            net.infer(
                x,
                torch.tensor([7]),
                torch.tensor([0]),
                torch.zeros_like(x),
                torch.zeros_like(x),
                torch.zeros(1, 1024, 7),
                torch.zeros(1, 256),
                sdp_ratio=0.5,
            )[0]
        )
    assert outs[0].shape == outs[1].shape and (outs[0] - outs[1]).abs().max().item() == 0.0


def test_sbv2_layout_imports_and_fine_tunes(tmp_path, builtin_corpus):  # noqa: F811 - fixture
    cfg = data_cfg(builtin_corpus.dir, tmp_path / "cache")
    cfg.output_dir, cfg.trial_id = str(tmp_path / "ft"), "ft0"
    cfg.eval.n_utterances = 0
    cfg.train.steps = 2
    base = _sbv2_layout(tmp_path, cfg)
    cfg.train.init_from = str(base)
    state = build_train_state(cfg, "cpu")
    fresh = state.net_g.state_dict()["enc_p.emb.weight"].clone()
    info = load_init(state, cfg)
    emb = state.net_g.state_dict()["enc_p.emb.weight"]
    ids = symbols.SYMBOL_TO_ID
    assert emb[ids["a"]].eq(SBV2_ROW["a"]).all() and emb[ids["cl"]].eq(SBV2_ROW["q"]).all()
    assert torch.equal(emb[ids["fy"]], fresh[ids["fy"]])  # no SBV2 row: initialised (fresh) and reported
    assert state.net_g.state_dict()["enc_p.tone_emb.weight"][1].eq(7).all()  # JP tone 1 = SBV2 row 6 + 1
    assert state.net_g.state_dict()["enc_p.language_emb.weight"][0].eq(1).all()  # JP = language 1
    r = info.import_report
    assert r["rows"]["symbols"] == {"mapped": 45, "dropped": 67, "initialised": ["fy", "gw", "kw", "v"]}
    assert r["weight_norm_renamed"] > 0 and r["loaded"] == ["net_g <- G_1000.pth", "net_d <- D_1000.pth"]
    assert r["skipped"] == ["WD_1000.pth (this trial has no net_wd)"]
    d_file = torch.load(base / "D_1000.pth")["model"]
    got = state.net_d.state_dict()
    assert torch.equal(
        got["discriminators.0.convs.0.parametrizations.weight.original1"],
        d_file["discriminators.0.convs.0.weight_v"],
    )

    from model.train import run_trial

    sink = MemorySink()
    res = run_trial(cfg, sink, resume=False)
    assert res.status == "finished" and res.steps == 2
    assert sink.params["pretrain.sbv2.symbols_initialised"] == "fy,gw,kw,v"
    assert sink.params["pretrain.source"].endswith("G_1000.pth")


# ----------------------------------------------------------------------------------------------------
# bad input


def _init(tmp_path, ref) -> None:
    cfg = _cfg(tmp_path / "x")
    cfg.train.init_from = str(ref)
    load_init(build_train_state(cfg, "cpu"), cfg)


def test_not_a_state_dict(tmp_path):
    base = _sbv2_layout(tmp_path, _cfg(tmp_path))
    g = base / "G_1000.pth"
    torch.save([1, 2, 3], g)
    with pytest.raises(InitError, match=r"G_1000\.pth: not a state dict"):
        _init(tmp_path, g)
    torch.save({"model": {"enc_p.emb.weight": "text"}}, g)
    with pytest.raises(InitError, match=r"G_1000\.pth: not a state dict: entry 'enc_p.emb.weight' is a str"):
        _init(tmp_path, g)


def test_truncated_safetensors(tmp_path):
    path, _ = _saved_trial(tmp_path)
    out = tmp_path / "assets"
    export_trial(str(path), "sbv2", out, name="m")
    f = out / "m.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(InitError, match=r"m\.safetensors: not a readable safetensors file \(truncated"):
        _init(tmp_path, f)


def test_config_version_and_architecture_mismatch(tmp_path):
    cfg = _cfg(tmp_path)
    base = _sbv2_layout(tmp_path, cfg, version="2.0")
    with pytest.raises(InitError, match=r"config\.json: version: '2\.0' is not a JP-Extra model"):
        _init(tmp_path, base)
    raw = json.loads((base / "config.json").read_text())
    raw["version"], raw["model"]["n_layers"] = "2.1-JP-Extra", 3
    (base / "config.json").write_text(json.dumps(raw))
    with pytest.raises(InitError, match=r"config\.json: .*model\.n_layers: 3 \(file\) vs 2 \(trial\)"):
        _init(tmp_path, base)


def test_weights_of_another_width_are_refused_with_both_shapes(tmp_path):
    base = _sbv2_layout(tmp_path, _cfg(tmp_path), hidden=48)  # config says 32, weights are 48 wide
    with pytest.raises(
        InitError, match=r"G_1000\.pth: net_g\.enc_p\.emb\.weight has shape \(112, 48\), expected"
    ):
        _init(tmp_path, base)


def test_export_target_not_empty_needs_force(tmp_path):
    path, _ = _saved_trial(tmp_path)
    out = tmp_path / "assets"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"assets: exists and is not empty \(pass --force"):
        export_trial(str(path), "sbv2", out)
    r = CliRunner().invoke(app, ["export", str(path), "--format", "sbv2", "--out", str(out)])
    assert r.exit_code == 2 and "not empty" in r.output and (out / "keep.txt").read_text() == "mine"
    r = CliRunner().invoke(app, ["export", str(path), "--out", str(out), "--force", "--name", "m", "--json"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.output)["files"]) == {
        "config.json",
        "keep.txt",
        "m.safetensors",
        "style_vectors.npy",
    }


def test_sweep_trial_reference(tmp_path):
    """SWEEP:TRIAL finds the trial's latest checkpoint in the sweep's storage."""
    path, _ = _saved_trial(tmp_path)
    sweep = tmp_path / "store" / "sw"
    trial = sweep / "trials" / "t0" / "checkpoints"
    trial.mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    (trial / path.name).write_bytes(path.read_bytes())
    res = export_trial("sw:t0", "sbv2", tmp_path / "o", storage=str(tmp_path / "store"))
    assert Path(res["source"]) == trial / path.name and res["name"] == "t0"
    with pytest.raises(ExportError, match=r"sw/trials/nope: no such checkpoint file or trial directory"):
        export_trial("sw:nope", "sbv2", tmp_path / "o2", storage=str(tmp_path / "store"))


def test_style_table_is_the_neutral_zero_vector():
    names, v = style_table(tiny_config())
    assert names == ["Neutral"] and v.shape == (1, 256) and v.dtype == np.float32 and not v.any()


def test_report_lines_name_what_happened():
    r = sbv2.ImportReport(
        source="G_0.pth",
        tensors=10,
        rows={"symbols": {"mapped": 45, "dropped": 67, "initialised": ["fy"]}},
        initialised=["net_g.enc_q.pre.weight"],
    )
    text = "\n".join(r.lines())
    assert "45 rows mapped, 67 SBV2 rows dropped, initialised fy" in text and "enc_q" in text
    assert asdict(r)["tensors"] == 10


def test_run_id_reference(tmp_path, monkeypatch):
    """An MLflow run id resolves through its sweep and trial tags (the store faked: no MLflow here)."""
    import orchestrator.export as ex
    from analysis.mlflow_contract import TAG_SWEEP, TAG_TRIAL

    path, _ = _saved_trial(tmp_path)
    sweep = tmp_path / "store" / "sw"
    (sweep / "trials" / "t7" / "checkpoints").mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    (sweep / "trials" / "t7" / "checkpoints" / path.name).write_bytes(path.read_bytes())
    tags = {"a" * 32: {TAG_SWEEP: "sw", TAG_TRIAL: "t7"}, "b" * 32: {}}

    class FakeTracker:
        def __init__(self, uri, retry_s=0):
            self.client = self

        def call(self, fn, **kw):
            return fn()

        def get_run(self, run_id):
            if run_id not in tags:
                raise LookupError(run_id)
            return type("Run", (), {"data": type("Data", (), {"tags": tags[run_id]})})

    monkeypatch.setattr(ex, "Tracker", FakeTracker)
    monkeypatch.setattr(ex, "existing_store", lambda uri: uri)
    store = str(tmp_path / "store")
    assert (
        ex.resolve_checkpoint("a" * 32, storage=store) == sweep / "trials" / "t7" / "checkpoints" / path.name
    )
    with pytest.raises(ExportError, match=r"run b{32}: has no vits_scaling.sweep"):
        ex.resolve_checkpoint("b" * 32, storage=store)
    with pytest.raises(ExportError, match=r"run c{32}: not found"):
        ex.resolve_checkpoint("c" * 32, storage=store)
