"""Parameter counts per submodule and FLOPs per training step (FlopCounterMode on the meta device)."""

from __future__ import annotations

import time

import pytest
import torch

from model.config import TrialConfig, tiny_config
from model.counting import (
    config_hash,
    count_parameters,
    flops_per_step,
    model_info,
    parameter_counts,
    step_shape,
)
from model.step import build_generator

PARTS = ("enc_p", "enc_q", "flow", "dec", "sdp", "dp", "emb_g")


def test_count_parameters_per_child_sums_to_total():
    cfg = tiny_config()
    torch.manual_seed(0)
    net = build_generator(cfg)
    counts = count_parameters(net)
    assert set(PARTS) <= set(counts)
    assert counts["total"] == sum(p.numel() for p in net.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    # the meta-device count used by model_info agrees with the real module
    assert parameter_counts(cfg)["generator"] == {"total": counts["total"], **{k: counts[k] for k in PARTS}}


def test_default_discriminator_has_the_public_size_and_width_shrinks_it():
    cfg = TrialConfig()
    counts = parameter_counts(cfg)
    assert counts["discriminator"] == {"total": 46_747_132, "mpd": 46_747_132}
    cfg.model.disc_width = 0.5
    half = parameter_counts(cfg)["discriminator"]["mpd"]
    assert 46_747_132 / 4.5 < half < 46_747_132 / 3.5
    cfg.model.use_duration_discriminator = True
    with_dur = parameter_counts(cfg)["discriminator"]
    assert with_dur["dur_disc"] > 0 and with_dur["total"] == with_dur["mpd"] + with_dur["dur_disc"]


def test_flops_positive_linear_in_batch_and_growing_with_segment_and_length():
    cfg = tiny_config()
    f1 = flops_per_step(cfg, batch_size=1)
    f2 = flops_per_step(cfg, batch_size=2)
    f4 = flops_per_step(cfg, batch_size=4)
    assert f1 > 0
    assert f2 == pytest.approx(2 * f1, rel=0.01) and f4 == pytest.approx(4 * f1, rel=0.01)
    assert flops_per_step(cfg, 2, segment_size=4096) > f2  # bigger decoder / discriminator window
    assert flops_per_step(cfg, 2, utterance_s=8.0) > f2  # longer utterances: encoders and flow
    # the flow and posterior encoder run over every frame, forward and backward (>= ~6 FLOPs/param/frame)
    shape = step_shape(cfg, 2)
    gen = parameter_counts(cfg)["generator"]
    assert f2 > 0.5 * 6 * (gen["flow"] + gen["enc_q"]) * shape.frames * shape.batch_size


def test_flops_are_cached_and_keyed_by_config():
    cfg = tiny_config()
    flops_per_step(cfg)
    t0 = time.perf_counter()
    again = flops_per_step(cfg)
    assert time.perf_counter() - t0 < 0.05
    assert again == flops_per_step(tiny_config())
    wider = tiny_config()
    wider.model.hidden_channels = wider.model.inter_channels = 48
    assert config_hash(wider) != config_hash(cfg)
    assert flops_per_step(wider) > again
    # data-subset or training-length changes do not change the model's cost (shared cache entry)
    other = tiny_config()
    other.data.data_hours = 0.1
    other.train.steps = 10
    assert config_hash(other) == config_hash(cfg)


def test_duration_and_wavlm_discriminators_add_flops(tmp_path):
    from transformers import WavLMConfig, WavLMModel

    base = flops_per_step(tiny_config())
    cfg = tiny_config()
    cfg.model.use_duration_discriminator = True
    assert flops_per_step(cfg) > base
    WavLMModel(
        WavLMConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            conv_dim=(8,) * 7,
            num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2,
        )
    ).save_pretrained(tmp_path / "wavlm")
    cfg = tiny_config()
    cfg.model.use_wavlm_discriminator = cfg.model.wavlm_discriminator = True
    cfg.model.slm = {
        "model": str(tmp_path / "wavlm"),
        "sr": 16000,
        "hidden": 16,
        "nlayers": 3,
        "initial_channel": 8,
    }
    assert flops_per_step(cfg) > base
    assert parameter_counts(cfg)["discriminator"]["wavlm_disc"] > 0


def test_model_info_shape_and_bad_sizes():
    info = model_info(tiny_config(), batch_size=2, segment_size=2048)
    assert list(info) == ["generator", "discriminator", "flops_per_step", "batch_size", "segment_size"]
    assert info["batch_size"] == 2 and info["segment_size"] == 2048
    assert isinstance(info["flops_per_step"], int) and info["flops_per_step"] > 0
    with pytest.raises(ValueError, match="hop_length"):
        model_info(tiny_config(), segment_size=1000)
    with pytest.raises(ValueError, match="batch_size"):
        model_info(tiny_config(), batch_size=-1)


def test_meta_count_equals_a_real_cpu_step_count():
    """The meta-device count (zero MAS path) equals FlopCounterMode around a real step of the same shapes."""
    from torch.utils.flop_counter import FlopCounterMode

    from model.counting import meta_batch, step_flops
    from model.step import build_train_state, train_step

    cfg = tiny_config()
    shape = step_shape(cfg, 2, utterance_s=0.5)
    torch.manual_seed(0)
    state = build_train_state(cfg, "cpu")
    batch = meta_batch(cfg, shape, device="cpu")
    batch["spec"] = torch.rand_like(batch["spec"])
    batch["wav"] = 0.1 * torch.rand_like(batch["wav"])
    with FlopCounterMode(display=False) as counter:
        train_step(state, batch, update=False)
    assert counter.get_total_flops() == step_flops(cfg, shape)


def test_flops_disk_cache_is_shared_across_processes(tmp_path, monkeypatch):
    """Each Ray trial is a new process: the count is read from the shared cache instead of recounted."""
    import model.step
    from model import counting
    from model.config import tiny_config

    cfg = tiny_config()
    counting.clear_cache()  # other tests may have counted this config in memory already
    first = counting.flops_per_step(cfg, disk_cache=tmp_path)
    assert list((tmp_path / "flops").glob("*.json"))
    counting.clear_cache()  # as in a fresh process

    def boom(*a, **k):
        raise AssertionError("counted again instead of reading the disk cache")

    monkeypatch.setattr(model.step, "train_step", boom)
    assert counting.flops_per_step(cfg, disk_cache=tmp_path) == first
    counting.clear_cache()
    cfg.model.hidden_channels = cfg.model.inter_channels = 48  # another shape is counted, not reused
    with pytest.raises(AssertionError, match="counted again"):
        counting.flops_per_step(cfg, disk_cache=tmp_path)
