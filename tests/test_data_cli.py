"""The data commands: synth builds a corpus, prepare fills the cache once, info and g2p report."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()


def test_synth_prepare_info(tmp_path):
    out = tmp_path / "corpus"
    r = runner.invoke(
        app,
        [
            "data",
            "synth",
            "--hours",
            "0.002",
            "--out",
            str(out),
            "--sample-rate",
            "16000",
            "--workers",
            "1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["utterances"] >= 1 and not res["reused"] and (out / "esd.list").is_file()
    r = runner.invoke(
        app, ["data", "synth", "--hours", "0.002", "--out", str(out), "--sample-rate", "16000", "--json"]
    )
    assert json.loads(r.stdout)["reused"]

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data:\n  sampling_rate: 16000\n  filter_length: 512\n  win_length: 512\n  hop_length: 128\n"
        f"  val_utterances: 1\n  cache_dir: {tmp_path / 'cache'}\n  prepare_workers: 1\n"
        "  text_features: none\n",  # the default preset asks for DeBERTa, not on this machine
        encoding="utf-8",
    )
    r = runner.invoke(app, ["data", "prepare", str(out), "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["features_computed"] == 2 * first["utterances"] > 0
    r = runner.invoke(app, ["data", "prepare", str(out), "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "reused" in r.stdout
    r = runner.invoke(app, ["data", "prepare", str(out), "--config", str(cfg), "--json"])
    assert json.loads(r.stdout)["features_computed"] == 0

    r = runner.invoke(app, ["data", "info", str(out), "--config", str(cfg), "--json"])
    info = json.loads(r.stdout)
    assert info["utterances"] == first["utterances"] and info["val_utterances"] == 1

    r = runner.invoke(app, ["data", "prepare", str(out), "--config", str(cfg), "--hours", "100"])
    assert r.exit_code == 2 and "data_hours=100" in r.output
    r = runner.invoke(app, ["data", "prepare", str(tmp_path / "nope"), "--config", str(cfg)])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_g2p_command():
    r = runner.invoke(app, ["data", "g2p", "雨が降る。", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["text"] == "雨が降る." and sum(res["word2ph"]) == len(res["phones"]) == len(res["tones"])
