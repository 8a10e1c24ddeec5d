"""The one table of accelerator throughput assumptions: peak FLOP/s per accelerator and the utilisation VITS
training is assumed to reach on it. Used by ``allocate --gpu-hours/--gpu`` (``analysis.allocate``) and by the
sweep dry-run estimate when a sweep's ``estimate: {accelerator: ...}`` names one (``orchestrator.plan.estimate``);
the cost comments of the shipped sweeps (``sweeps/*.yaml``) quote these numbers. Standard library only, so the
planner imports it without the analysis stack.

Peaks are dense (no structured sparsity) figures from the vendors' data sheets: ``bf16`` is the bf16/fp16
tensor-core peak (fp32 accumulate where the sheet distinguishes), ``fp32`` the plain fp32 (non-tensor) peak.
The CPU row is not a data sheet: it was measured on this project's 2-core development box (AMD EPYC, one
thread, a 256 x 256 / 512 x 512 fp32 torch matmul: 39-48 GFLOP/s, so 4.4e10).

Utilisation (what a planning figure multiplies the peak by; MFU = model FLOPs per second / peak):

* GPU: ``VITS_MFU`` = 1.5% of the dense bf16 peak, i.e. ~1.5e13 FLOP/s on an H100 SXM, the figure the shipped
  GPU sweeps plan with. Why so low: a VITS step is dominated by the HiFi-GAN-style decoder's 1-D (transposed)
  convolutions and the multi-period / multi-scale discriminators' small 2-D convolutions, at a batch of a few
  clips, with two optimizer steps (G and D) per step and the default precision fp32 (README, ``precision``),
  which does not use the bf16 tensor cores at all. 1.5e13 is ~22% of the H100's fp32 peak (6.7e13), a
  plausible figure for cuDNN on such shapes; a transformer LM's 40-50% MFU does not transfer. It is an
  assumption, not yet measured on a GPU in this project: ``bench/train_throughput.py`` measures it, and a
  sweep's measured trials (``allocate``) or ``estimate.flops_per_s`` / ``--mfu`` replace it.
* CPU: ``CPU_UTILISATION`` = 0.15 of the measured fp32 matmul rate: the demo's tiny trials reach ~6.7 GFLOP/s
  on one core here (``sweeps/demo.yaml``) against the 4.4e10 matmul figure above.
"""

from __future__ import annotations

from dataclasses import dataclass

VITS_MFU = 0.015
CPU_UTILISATION = 0.15
DEFAULT_ACCELERATOR = "h100"


@dataclass(frozen=True)
class Accelerator:
    """One row: dense peaks in FLOP/s (``bf16`` None where there is no bf16/fp16 tensor unit) and where they come
    from."""

    name: str
    bf16: float | None
    fp32: float
    source: str

    def achieved(self, mfu: float | None = None) -> float:
        """Planning FLOP/s of one VITS trial: bf16 peak x ``mfu`` (default ``VITS_MFU``); for a CPU (no bf16
        peak) the fp32 figure x ``mfu`` (default ``CPU_UTILISATION``)."""
        if self.bf16 is None:
            return self.fp32 * (CPU_UTILISATION if mfu is None else mfu)
        return self.bf16 * (VITS_MFU if mfu is None else mfu)

    def describe(self, mfu: float | None = None) -> str:
        """The assumption in words, for a result that rests on it."""
        if self.bf16 is None:
            u = CPU_UTILISATION if mfu is None else mfu
            return f"assumed: {self.name} fp32 {self.fp32:.3g} FLOP/s ({self.source}) x utilisation {u:g}"
        u = VITS_MFU if mfu is None else mfu
        return f"assumed: {self.name} dense bf16 peak {self.bf16:.3g} FLOP/s ({self.source}) x MFU {u:g}"


ACCELERATORS: dict[str, Accelerator] = {
    "h100": Accelerator("H100 SXM5", 989e12, 67e12, "NVIDIA H100 data sheet; PCIe: 756e12 / 51e12"),
    "h200": Accelerator("H200 SXM", 989e12, 67e12, "NVIDIA H200 data sheet: the H100's compute, more memory"),
    "a100": Accelerator("A100 SXM4", 312e12, 19.5e12, "NVIDIA A100 data sheet"),
    "l40s": Accelerator("L40S", 362e12, 91.6e12, "NVIDIA L40S data sheet"),
    "l4": Accelerator("L4", 121e12, 30.3e12, "NVIDIA L4 data sheet (242e12 is with sparsity)"),
    "rtx4090": Accelerator(
        "RTX 4090", 165e12, 82.6e12, "NVIDIA Ada whitepaper, fp16 tensor, fp32 accumulate"
    ),
    "a6000": Accelerator("RTX A6000", 155e12, 38.7e12, "NVIDIA RTX A6000 data sheet, fp16 tensor"),
    "v100": Accelerator("V100 SXM2", 125e12, 15.7e12, "NVIDIA V100 data sheet, fp16 tensor (no bf16)"),
    "t4": Accelerator("T4", 65e12, 8.1e12, "NVIDIA T4 data sheet, fp16 tensor"),
    "cpu": Accelerator("CPU (one core)", None, 4.4e10, "fp32 matmul measured on the 2-core dev box"),
}


def normalise(name: str) -> str:
    """``"RTX-4090"``, ``"rtx 4090"`` -> ``"rtx4090"``: the form keys and GPU-name columns are compared in."""
    return str(name).lower().replace(" ", "").replace("-", "").replace("_", "")


def accelerator(name: str) -> Accelerator:
    """The row of ``name`` (case, spaces and dashes ignored); ``ValueError`` naming the known ones otherwise."""
    key = normalise(name)
    if key not in ACCELERATORS:
        raise ValueError(f"unknown accelerator {name!r}; known: {sorted(ACCELERATORS)}")
    return ACCELERATORS[key]
