"""ONNX export of the inference path (issue 13 item 2): onnxruntime agrees with PyTorch on a fixed input
(noise given as inputs) within ``TOLERANCE``, at other lengths too; a graph that differs is refused naming
the file and the max difference, and the target file is not written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import onnx_export as ox
from model.config import tiny_config
from model.step import build_train_state
from model.train import checkpoint as ckpt
from orchestrator.export import ExportError, export_trial


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(config, generator, onnx file, export result): one tiny trial checkpoint through `export --format onnx`."""
    root = tmp_path_factory.mktemp("onnx")
    cfg = tiny_config()
    cfg.output_dir, cfg.trial_id = str(root / "trial"), "t0"
    torch.manual_seed(0)
    state = build_train_state(cfg, "cpu")
    ckpt_path = ckpt.save_checkpoint(state, cfg, epoch=0, batch_in_epoch=0, counters={})
    res = export_trial(str(ckpt_path), "onnx", root / "out")
    res["checkpoint"] = str(ckpt_path)
    return cfg, state.net_g.eval(), root / "out" / "t0.onnx", res


def test_onnx_matches_pytorch_on_the_fixed_input(exported):
    cfg, net, path, res = exported
    assert res["max_abs_diff"] <= ox.TOLERANCE and res["tolerance"] == ox.TOLERANCE
    assert not path.with_name(path.name + ".unverified").exists()
    ref = ox.torch_audio(net, ox.check_inputs(cfg))
    assert ref.shape[-1] > 0 and np.abs(ref).max() > 0  # the check input makes real audio


def test_onnx_lengths_and_scalars_are_dynamic(exported):
    """Another sentence length, sdp_ratio, noise and length scale than the traced ones."""
    cfg, net, path, _ = exported
    inp = ox.check_inputs(
        cfg,
        phones=list(range(1, 30)),
        tones=[0, 1] * 14 + [0],
        sdp_ratio=0.7,
        noise_scale=0.3,
        length_scale=1.6,
        seed=4,
    )
    ref = ox.torch_audio(ox.inference_copy(net, cfg), inp)
    assert ref.shape != ox.torch_audio(net, ox.check_inputs(cfg)).shape
    assert ox.verify(path, net, inp) <= ox.TOLERANCE


def test_perturbed_onnx_weight_is_refused(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    cfg, net, path, _ = exported
    model = onnx.load(str(path))
    dec = [t for t in model.graph.initializer if "dec.conv_pre" in t.name]  # the decoder's first conv
    assert dec, [t.name for t in model.graph.initializer][:20]
    for init in dec:
        arr = numpy_helper.to_array(init).copy() + 0.05
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(
        ox.OnnxMismatch, match=r"bad\.onnx: output 'audio' (differs from PyTorch by max abs|has shape)"
    ):
        ox.verify(bad, net, ox.check_inputs(cfg))


def test_export_beyond_tolerance_keeps_the_target_unwritten(exported, tmp_path):
    cfg, net, _, res = exported
    if res["max_abs_diff"] == 0:
        pytest.skip("onnxruntime matched PyTorch bit for bit: no difference to refuse")
    target = tmp_path / "m.onnx"
    with pytest.raises(
        ox.OnnxMismatch, match=r"m\.onnx\.unverified: output 'audio' differs .* > tolerance 0"
    ):
        ox.export_onnx(net, cfg, target, tolerance=0.0)
    assert not target.exists() and (tmp_path / "m.onnx.unverified").exists()


def test_export_command_onnx(exported, tmp_path):
    _, _, path, res = exported
    assert res["files"] == {"t0.onnx": path.stat().st_size} and res["max_abs_diff"] <= ox.TOLERANCE
    with pytest.raises(ExportError, match="not empty"):
        export_trial(res["checkpoint"], "onnx", path.parent)
    with pytest.raises(ExportError, match=r"--format: 'wav'"):
        export_trial(res["checkpoint"], "wav", tmp_path / "out2")
