"""Choice fields of the config dataclasses (``Literal[...]``) are checked when the config is built."""

from __future__ import annotations

import dataclasses
import json

import pytest

from model.config import (
    SECTIONS,
    ConfigError,
    TrialConfig,
    literal_choices,
    load_config,
    load_sbv2_config,
)

CHOICE_FIELDS = [
    (section, f.name, literal_choices(cls, f.name))
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
    if literal_choices(cls, f.name) is not None
]
IDS = [f"{s}.{n}" for s, n, _ in CHOICE_FIELDS]
# choices valid only together with another field (model.parametrization: mup needs model.mup_base_width)
NEEDS = {("model", "parametrization", "mup"): {"mup_base_width": 16}}


def test_the_choice_fields_are_literals():
    assert set(IDS) == {
        "data.corpus_format",
        "data.text_features_kind",
        "data.text_features_level",
        "data.text_features_sentence",
        "model.resblock",
        "model.mas_impl",
        "model.parametrization",
        "train.scheduler_per",
        "train.lr_schedule",
        "train.cooldown_shape",
        "train.precision",
        "train.init_speakers",
        "eval.mos_backend",
    }


def test_defaults_build():
    cfg = TrialConfig.from_dict({}, strict=True)
    assert cfg == TrialConfig()
    assert TrialConfig.from_dict(TrialConfig().to_dict(), strict=True) == TrialConfig()
    for section, name, allowed in CHOICE_FIELDS:
        assert getattr(getattr(cfg, section), name) in allowed


@pytest.mark.parametrize(("section", "name", "allowed"), CHOICE_FIELDS, ids=IDS)
def test_bad_choice_refused_at_build(section, name, allowed):
    with pytest.raises(ConfigError) as e:
        TrialConfig.from_dict({section: {name: "no-such-choice"}}, strict=True)
    msg = str(e.value)
    assert f"config.{section}.{name}" in msg
    assert "no-such-choice" in msg
    for v in allowed:
        assert str(v) in msg


@pytest.mark.parametrize(("section", "name", "allowed"), CHOICE_FIELDS, ids=IDS)
def test_good_choices_accepted(section, name, allowed):
    for v in allowed:
        cfg = TrialConfig.from_dict({section: {name: v, **NEEDS.get((section, name, v), {})}}, strict=True)
        assert getattr(getattr(cfg, section), name) == v


@pytest.mark.parametrize(("section", "name", "allowed"), CHOICE_FIELDS, ids=IDS)
def test_choice_not_a_string_refused(section, name, allowed):
    for bad in (True, 1.5, ["a"], {"a": 1}):
        with pytest.raises(ConfigError, match=rf"{section}\.{name}.*allowed"):
            TrialConfig.from_dict({section: {name: bad}}, strict=True)
    with pytest.raises(ConfigError, match=rf"{section}\.{name}: must not be null"):
        TrialConfig.from_dict({section: {name: None}}, strict=True)


def test_number_spelling_a_string_choice_is_that_string():
    # YAML `resblock: 2`, and MLflow params read back from a table (analysis.allocate) come as numbers
    assert TrialConfig.from_dict({"model": {"resblock": 2}}).model.resblock == "2"
    with pytest.raises(ConfigError, match="model.resblock"):
        TrialConfig.from_dict({"model": {"resblock": 3}})


def test_yaml_file_names_file_and_field(tmp_path):
    p = tmp_path / "trial.yaml"
    p.write_text("train:\n  scheduler_per: batch\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}.train.scheduler_per" in str(e.value)
    assert "allowed: epoch, step" in str(e.value)


def test_sbv2_config_json_choice_checked(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model": {"inter_channels": 192, "resblock": "1"}}), encoding="utf-8")
    cfg, unknown = load_sbv2_config(p)
    assert cfg.model.resblock == "1" and unknown == []
    p.write_text(json.dumps({"model": {"resblock": "9"}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.json:model\.resblock.*allowed: 1, 2"):
        load_sbv2_config(p)
