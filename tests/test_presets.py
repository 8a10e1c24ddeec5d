"""Presets have one table (``model.config.PRESETS``) and one order of application everywhere: a preset, then a
file's values, then section overrides (sweep ``base``, a config file's own ``preset:`` key, ``model info``)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from model.config import PRESETS, load_config, preset_config, tiny_config
from orchestrator.plan import load_spec
from orchestrator.plan.points import base_config
from orchestrator.plan.schema import BaseSettings
from tests.orch_helpers import cli


def test_schema_presets_are_the_config_presets():
    assert set(BaseSettings.model_fields["preset"].annotation.__args__) == set(PRESETS)


def test_config_file_preset_key_then_its_values(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\nmodel:\n  n_layers: 3\n", encoding="utf-8")
    cfg = load_config(f)
    want = tiny_config()
    want.model.n_layers = 3
    assert cfg.model == want.model and cfg.data == want.data
    # without the key the file applies on top of the preset it is given, or on the default
    g = tmp_path / "g.yaml"
    g.write_text("model:\n  n_layers: 3\n", encoding="utf-8")
    assert load_config(g, preset="tiny").model == want.model
    assert load_config(g).model.hidden_channels == preset_config("default").model.hidden_channels


def test_sweep_base_preset_then_file_then_overrides(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("model:\n  n_layers: 3\n  hidden_channels: 48\n", encoding="utf-8")
    sweep = {
        "name": "order",
        "base": {"preset": "tiny", "file": "base.yaml", "model": {"hidden_channels": 40}},
        "axes": {"n_layers": [1]},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep), encoding="utf-8")
    cfg = base_config(load_spec(tmp_path / "s.yaml"))
    tiny = tiny_config()
    assert cfg.data.sampling_rate == tiny.data.sampling_rate  # from the preset
    assert cfg.model.n_layers == 3  # from the file
    assert cfg.model.hidden_channels == 40  # the override last
    assert cfg.model.upsample_rates == tiny.model.upsample_rates


def test_model_info_preset(tmp_path: Path):
    tiny = json.loads(cli("model", "info", "--preset", "tiny", "--json", cwd=tmp_path).stdout)
    default = json.loads(cli("model", "info", "--json", cwd=tmp_path).stdout)
    assert tiny["generator"]["total"] < default["generator"]["total"] / 10
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  n_layers: 3\n", encoding="utf-8")
    three = json.loads(
        cli("model", "info", "--preset", "tiny", "--config", str(f), "--json", cwd=tmp_path).stdout
    )
    assert three["generator"]["enc_p"] > tiny["generator"]["enc_p"]
    assert three["generator"]["dec"] == tiny["generator"]["dec"]
