"""The one throughput table (``analysis.throughput``): its rows, and that ``allocate`` and the dry-run estimate
read the same figure from it, and that the shipped GPU sweeps plan with the figure their comments quote."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.throughput import ACCELERATORS, CPU_UTILISATION, VITS_MFU, accelerator

ROOT = Path(__file__).resolve().parents[1]


def test_rows_are_dense_peaks_with_a_source():
    for key, row in ACCELERATORS.items():
        assert row.fp32 > 0 and row.source, key
        if row.bf16 is not None:  # a tensor unit: its dense bf16/fp16 peak is above the plain fp32 peak
            assert row.bf16 > row.fp32, key
    assert ACCELERATORS["h200"].bf16 == ACCELERATORS["h100"].bf16  # same compute, more memory
    assert ACCELERATORS["cpu"].bf16 is None


def test_lookup_ignores_case_spaces_and_dashes_and_names_the_known_rows():
    assert accelerator("RTX-4090") is ACCELERATORS["rtx4090"]
    assert accelerator("H 200") is ACCELERATORS["h200"]
    with pytest.raises(ValueError, match=r"unknown accelerator 'tpu9'; known: \[.*'h100'"):
        accelerator("tpu9")


def test_achieved_is_peak_times_the_stated_utilisation():
    h100 = ACCELERATORS["h100"]
    assert h100.achieved() == pytest.approx(989e12 * VITS_MFU)
    assert h100.achieved(0.1) == pytest.approx(98.9e12)
    assert ACCELERATORS["cpu"].achieved() == pytest.approx(ACCELERATORS["cpu"].fp32 * CPU_UTILISATION)
    assert "MFU 0.015" in h100.describe() and "data sheet" in h100.describe()


def test_allocate_and_the_dry_run_estimate_use_the_same_figure():
    from analysis.allocate import gpu_throughput
    from orchestrator.plan.estimate import trial_seconds
    from orchestrator.plan.schema import validate_spec

    raw = {"name": "t", "base": {"preset": "tiny"}, "resources": {"cpu": 1, "gpu": 1}}
    for gpu in ("h200", "a100", "l4"):
        spec = validate_spec({**raw, "estimate": {"accelerator": gpu, "overhead_s": 0}})
        rate = 1e15 / trial_seconds(spec, 1000, 1e12)
        assert rate == pytest.approx(gpu_throughput(gpu)[0]) == pytest.approx(accelerator(gpu).achieved())
    # a measured flops_per_s wins over the table; a GPU sweep naming nothing plans with the default row
    spec = validate_spec({**raw, "estimate": {"accelerator": "h200", "flops_per_s": 2e13, "overhead_s": 0}})
    assert trial_seconds(spec, 1000, 1e12) == pytest.approx(1e15 / 2e13)
    spec = validate_spec({**raw, "estimate": {"overhead_s": 0}})
    assert trial_seconds(spec, 1000, 1e12) == pytest.approx(1e15 / ACCELERATORS["h100"].achieved())


def test_shipped_gpu_sweeps_plan_with_the_h100_row_they_quote():
    """Their cost comments say "~1.5e13 achieved FLOP/s (analysis/throughput.py)": the figure they set must
    stay the table's H100 planning figure, rounded, or the comments and the table have drifted apart."""
    from orchestrator.plan.load import load_spec

    gpu_sweeps = 0
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        if spec.resources.gpu <= 0:
            continue
        gpu_sweeps += 1
        rate = spec.estimate.flops_per_s or accelerator(spec.estimate.accelerator or "h100").achieved()
        assert rate == pytest.approx(ACCELERATORS["h100"].achieved(), rel=0.02), path.name
        assert "analysis/throughput.py" in path.read_text(encoding="utf-8"), path.name
    assert gpu_sweeps >= 4
