"""``vits-scaling model info`` and the config files it reads (SBV2 config.json, project YAML)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import yaml
from typer.testing import CliRunner

from model.config import (
    ConfigError,
    TrialConfig,
    dump_config,
    load_config,
    load_sbv2_config,
    save_sbv2_config,
    tiny_config,
)
from orchestrator.cli import app

# a Style-Bert-VITS2 JP-Extra style config.json (keys as the public file has them), with one unknown key
# per section and one at the top level, and non-default values to check they arrive
SBV2 = {
    "model_name": "my_voice",
    "version": "2.7.0-JP-Extra",
    "train": {
        "log_interval": 200,
        "eval_interval": 1000,
        "seed": 42,
        "epochs": 100,
        "learning_rate": 0.0001,
        "betas": [0.8, 0.99],
        "eps": 1e-09,
        "batch_size": 6,
        "bf16_run": False,
        "fp16_run": False,
        "lr_decay": 0.99996,
        "segment_size": 16384,
        "init_lr_ratio": 1,
        "warmup_epochs": 0,
        "c_mel": 45,
        "c_kl": 1.0,
        "c_commit": 100,
        "skip_optimizer": False,
        "freeze_ZH_bert": False,
        "freeze_JP_bert": False,
        "freeze_EN_bert": False,
        "freeze_emo": False,
        "freeze_style": False,
        "freeze_decoder": False,
        "keep_ckpts": 1,
    },
    "data": {
        "use_jp_extra": True,
        "training_files": "Data/my_voice/train.list",
        "validation_files": "Data/my_voice/val.list",
        "max_wav_value": 32768.0,
        "sampling_rate": 44100,
        "filter_length": 2048,
        "hop_length": 512,
        "win_length": 2048,
        "n_mel_channels": 128,
        "mel_fmin": 0.0,
        "mel_fmax": None,
        "add_blank": True,
        "n_speakers": 1,
        "cleaned_text": True,
        "spk2id": {"my_voice": 0},
        "num_styles": 2,
        "style2id": {"Neutral": 0, "Happy": 1},
    },
    "model": {
        "use_spk_conditioned_encoder": True,
        "use_noise_scaled_mas": True,
        "use_mel_posterior_encoder": False,
        "use_duration_discriminator": False,
        "use_wavlm_discriminator": True,
        "inter_channels": 192,
        "hidden_channels": 192,
        "filter_channels": 768,
        "n_heads": 2,
        "n_layers": 6,
        "kernel_size": 3,
        "p_dropout": 0.1,
        "resblock": "1",
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "upsample_rates": [8, 8, 2, 2, 2],
        "upsample_initial_channel": 512,
        "upsample_kernel_sizes": [16, 16, 8, 2, 2],
        "n_layers_q": 3,
        "use_spectral_norm": False,
        "gin_channels": 512,
        "slm": {
            "model": "./slm/wavlm-base-plus",
            "sr": 16000,
            "hidden": 768,
            "nlayers": 13,
            "initial_channel": 64,
        },
        "some_future_key": 3,
    },
    "unknown_top": 1,
}


@pytest.fixture
def sbv2_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SBV2, indent=2), encoding="utf-8")
    return path


def test_sbv2_config_load_reports_unknown_and_round_trips(sbv2_json, tmp_path):
    cfg, unknown = load_sbv2_config(sbv2_json)
    assert cfg.name == "my_voice"
    assert cfg.train.batch_size == 6 and cfg.train.learning_rate == 1e-4 and cfg.train.c_mel == 45.0
    assert isinstance(cfg.train.c_mel, float) and cfg.train.precision == "fp32"  # bf16_run: false
    assert cfg.train.lr_schedule == "sbv2"  # SBV2's own schedule: lr_decay once per epoch
    assert cfg.data.n_speakers == 1 and cfg.data.style2id == {"Neutral": 0, "Happy": 1}
    assert cfg.data.mel_fmax is None
    assert cfg.model.resblock_dilation_sizes == [[1, 3, 5]] * 3
    assert cfg.model.slm["model"] == "./slm/wavlm-base-plus"
    assert sorted(unknown) == sorted(
        ["config.json:train.keep_ckpts", "config.json:model.some_future_key", "config.json:unknown_top"]
    )
    # save -> load gives the same config, with every public key still present under its public name
    out = tmp_path / "saved.json"
    save_sbv2_config(cfg, out)
    again, unknown2 = load_sbv2_config(out)
    assert unknown2 == []
    assert again.to_dict() == cfg.to_dict()
    saved = json.loads(out.read_text())
    for section in ("data", "model", "train"):
        for key in SBV2[section]:
            if key not in ("keep_ckpts", "some_future_key"):
                assert key in saved[section], (section, key)
    # load_config recognises the SBV2 layout too
    assert load_config(sbv2_json).to_dict() == cfg.to_dict()


def test_sbv2_bf16_run_maps_to_precision_and_project_keys_export_truly(tmp_path):
    raw = json.loads(json.dumps(SBV2))
    raw["train"]["bf16_run"] = True
    src = tmp_path / "config.json"
    src.write_text(json.dumps(raw), encoding="utf-8")
    cfg, _ = load_sbv2_config(src)
    assert cfg.train.precision == "bf16"
    assert cfg.model.sdp_filter_channels is None  # SBV2 has no such key: the SDP follows hidden
    out = tmp_path / "saved.json"
    save_sbv2_config(cfg, out)
    saved = json.loads(out.read_text())
    assert saved["train"]["bf16_run"] is True and saved["train"]["precision"] == "bf16"
    assert saved["model"]["sdp_filter_channels"] is None  # never a width SBV2 would not build
    assert load_sbv2_config(out)[0].to_dict() == cfg.to_dict()
    cfg.train.precision, cfg.model.sdp_filter_channels = "tf32", 96  # an explicit override survives
    save_sbv2_config(cfg, out)
    saved = json.loads(out.read_text())
    assert saved["train"]["bf16_run"] is False and saved["model"]["sdp_filter_channels"] == 96
    assert load_sbv2_config(out)[0].to_dict() == cfg.to_dict()
    saved["train"]["bf16_run"] = True  # now contradicts precision tf32
    out.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"saved.json:train.bf16_run.*precision"):
        load_sbv2_config(out)


@pytest.mark.parametrize(
    ("key", "value", "replacement"),
    [("grad_clip", 100.0, "train.grad_clip_g"), ("bf16_run", True, "train.precision")],
)
def test_replaced_train_keys_are_refused_naming_the_replacement(tmp_path, key, value, replacement):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"train": {key: value}}))
    with pytest.raises(ConfigError, match=rf"old.yaml.train.{key}: .*replaced by {replacement}"):
        load_config(path)


def test_yaml_round_trip_and_errors(tmp_path):
    cfg = tiny_config()
    path = tmp_path / "trial.yaml"
    dump_config(cfg, path)
    assert load_config(path).to_dict() == cfg.to_dict()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"hidden_channels": "big"}}))
    with pytest.raises(ConfigError, match=r"bad.yaml.model.hidden_channels: expected int"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"model": {"hiden_channels": 3}}))
    with pytest.raises(ConfigError, match=r"model.hiden_channels: unknown field"):
        load_config(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        load_config(broken)
    with pytest.raises(ConfigError, match="broken.json"):
        load_sbv2_config(broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------------------------
# the command


def _tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    dump_config(tiny_config(), path)
    return path


def test_model_info_json_shape(tmp_path):
    res = CliRunner().invoke(
        app, ["model", "info", "--config", str(_tiny_yaml(tmp_path)), "--json", "--batch-size", "3"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert set(info) == {"generator", "discriminator", "flops_per_step", "batch_size", "segment_size"}
    gen = info["generator"]
    for part in ("enc_p", "enc_q", "flow", "dec", "sdp", "dp", "emb_g"):
        assert gen[part] > 0, part
    assert gen["total"] == sum(v for k, v in gen.items() if k != "total")
    assert info["discriminator"]["total"] == info["discriminator"]["mpd"] > 0
    assert info["flops_per_step"] > 0
    assert info["batch_size"] == 3 and info["segment_size"] == tiny_config().train.segment_size


def test_model_info_table_and_sbv2_unknown_keys(sbv2_json, tmp_path):
    # the SBV2 file's model at a tiny size, so the command stays fast
    raw = json.loads(sbv2_json.read_text())
    tiny = tiny_config()
    raw["data"].update(
        {
            k: getattr(tiny.data, k)
            for k in ("sampling_rate", "filter_length", "hop_length", "win_length", "n_mel_channels")
        }
    )
    raw["model"].update({k: v for k, v in asdict(tiny.model).items() if k != "slm"})
    raw["train"]["segment_size"] = tiny.train.segment_size
    sbv2_json.write_text(json.dumps(raw))
    res = CliRunner().invoke(app, ["model", "info", "--config", str(sbv2_json)])
    assert res.exit_code == 0, res.output
    assert "enc_p" in res.stdout and "mpd" in res.stdout and "FLOPs per training step" in res.stdout
    err = res.stderr.replace("\n", "")
    assert "some_future_key" in err and "unknown_top" in err


def test_model_info_bad_config_is_one_clean_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  n_layers: many\n")
    res = CliRunner().invoke(app, ["model", "info", "--config", str(bad)])
    assert res.exit_code == 2
    err = res.stderr.replace("\n", "")  # rich wraps long lines
    assert "model.n_layers: expected int" in err and "Traceback" not in res.output


def test_default_config_is_used_without_a_file():
    assert TrialConfig().model.hidden_channels == 192
