"""Configuration as plain dataclasses: one object per trial flows through data, model and trainer.

Sections mirror Style-Bert-VITS2's ``config.json`` (``data`` / ``model`` / ``train``) and use its key
names, so a public config loads unchanged; keys this project does not know are *reported* (returned by
``load_sbv2_config`` and logged by callers), never silently dropped from the saved copy.

Project-only settings (corpus, data hours, discriminator width, evaluation, tracking) live in the same
dataclasses with names that do not clash with the public ones.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from model.textfile import TextFileError, read_json, read_yaml

# ``data.min_quality: default``: the filter that separates the built-in corpus's degraded items from its clean
# ones (why these bounds: model/data/quality.py, above where it imports this).
DEFAULT_MIN_QUALITY = "dnsmos_bak >= 2.5 and snr_db >= 35 and clip_ratio <= 0.001 and transcript_absz <= 4"

# ----------------------------------------------------------------------------------------------------
# sections


@dataclass
class DataConfig:
    # --- Style-Bert-VITS2 `data` keys ---
    training_files: str = ""
    validation_files: str = ""
    max_wav_value: float = 32768.0
    sampling_rate: int = 44100
    filter_length: int = 2048
    hop_length: int = 512
    win_length: int = 2048
    n_mel_channels: int = 128
    mel_fmin: float = 0.0
    mel_fmax: float | None = None
    add_blank: bool = True
    n_speakers: int = 512
    cleaned_text: bool = True
    use_jp_extra: bool = True
    spk2id: dict[str, int] = field(default_factory=dict)
    num_styles: int = 1
    style2id: dict[str, int] = field(default_factory=lambda: {"Neutral": 0})
    # --- project keys ---
    corpus: str = "builtin"  # "builtin" (offline synthetic corpus), a directory or an esd.list path
    corpus_format: Literal["auto", "esd", "jsut", "jvs", "builtin"] = "auto"
    builtin_hours: float = 0.5  # size of the built-in corpus when corpus == "builtin"
    builtin_seed: int = 0
    corpus_dir: str = "data/corpus"  # where corpora we build (builtin) are written
    cache_dir: str = "data/cache"  # shared feature cache (keyed by feature settings, not the model)
    data_hours: float | None = None  # training subset size in hours (nested); None = everything
    subset_seed: int = 0
    val_utterances: int = 8  # fixed held-out set, disjoint from every training subset
    min_duration_s: float = 0.3
    max_duration_s: float = 15.0
    strict: bool = False  # strict validation fails on the first bad item; lenient skips and reports
    # text features (model/text/features.py): none (zeros) | bert (bert_model below, SBV2's path) | a Hugging
    # Face model id (already in the HF cache) or local directory; a sweep axis. Replaces use_bert.
    text_features: str = "none"
    # a model id's kind: auto (from its config.json's architectures) | encoder | causal (bert: always encoder)
    text_features_kind: Literal["auto", "encoder", "causal"] = "auto"
    text_features_layers: list[int] = field(default_factory=lambda: [-3])  # hidden states, averaged
    text_features_level: Literal["token", "sentence", "both"] = "token"  # per character / per utterance
    text_features_sentence: Literal["mean", "last"] = "mean"  # the sentence vector: token mean / last token
    text_features_proj_dim: int | None = None  # fixed random projection to this width before caching
    bert_model: str = "ku-nlp/deberta-v2-large-japanese-char-wwm"  # the model of text_features: bert
    num_workers: int = 0
    builtin_speakers: int = 4  # synthetic speakers of the built-in corpus (pitch/speed variants of one voice)
    cache_mel: bool = False  # also store log-mel in the feature cache (the trainer derives it from spec)
    prepare_workers: int = 0  # processes for corpus synthesis/validation/features; 0 = auto
    # data quality and source mixing (model/data/select.py): both are sweep axes
    min_quality: str | None = None  # training filter, e.g. "dnsmos_ovrl >= 3.2 and snr_db >= 30"; "default"
    val_min_quality: str | None = None  # filter on the held-out set (keep it fixed across a sweep)
    sources: dict[str, float] | None = None  # weighted mixture of named corpora, e.g. {jsut: 0.8, jvs: 0.2}
    corpora: dict[str, str] = field(default_factory=dict)  # corpus name -> path, or "builtin"
    builtin_degrade: float = 0.0  # fraction of the built-in corpus degraded in known ways (degrade.py)
    builtin_degrade_seed: int = 0
    # style vectors (model/data/style.py): zeros | resemblyzer | wespeaker[:ID_OR_PATH] | torchscript:PATH;
    # a sweep field and part of the style cache's key (the audio/text caches do not depend on it)
    style_encoder: str = "resemblyzer"


@dataclass
class ModelConfig:
    # --- Style-Bert-VITS2 `model` keys ---
    use_spk_conditioned_encoder: bool = True
    use_noise_scaled_mas: bool = True
    use_mel_posterior_encoder: bool = False
    use_duration_discriminator: bool = False  # JP-Extra default
    use_wavlm_discriminator: bool = True  # JP-Extra ships it on; see `wavlm_discriminator` below
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    p_dropout: float = 0.1
    resblock: Literal["1", "2"] = "1"  # ResBlock1 | ResBlock2 (a string, as in SBV2's config.json)
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(
        default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    )
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8, 2, 2, 2])
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 8, 2, 2])
    n_layers_q: int = 3
    use_spectral_norm: bool = False
    gin_channels: int = 512
    use_transformer_flow: bool = True
    n_layers_trans_flow: int = 6
    n_flow_layer: int = 4
    flow_share_parameter: bool = False
    slm: dict[str, Any] = field(
        default_factory=lambda: {
            "model": "microsoft/wavlm-base-plus",
            "sr": 16000,
            "hidden": 768,
            "nlayers": 13,
            "initial_channel": 64,
        }
    )
    # --- project keys ---
    n_vocab: int | None = None  # None: size of model.text.symbols table
    num_tones: int | None = None  # None: from model.text.symbols
    num_languages: int | None = None  # None: from model.text.symbols
    # text-feature input width (bert_proj); null: the width of data.text_features (1024 for none, fed
    # zeros); an explicit value must match the features; 0 (with none) drops the projection
    bert_dim: int | None = None
    style_dim: int = 256  # style vector size; 0 disables the projection
    wavlm_discriminator: bool = False  # actually build the WavLM discriminator (needs pretrained WavLM)
    disc_width: float = 1.0  # channel multiplier of every discriminator (1.0 = public sizes)
    disc_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    gradient_checkpointing: bool = False
    # monotonic alignment search: auto (numba on CPU, torch on CUDA) | numba | torch | reference (python)
    mas_impl: Literal["auto", "numba", "torch", "reference"] = "auto"
    mas_noise_scale_initial: float = 0.01  # noise-scaled MAS (SBV2 train script values)
    mas_noise_scale_delta: float = 2e-6  # subtracted per optimizer step, floored at 0
    # stochastic duration predictor width; None = hidden_channels, as in SBV2 (whose SDP overrides its
    # filter width with its input width, hidden_channels); an int is an explicit override
    sdp_filter_channels: int | None = None
    dp_filter_channels: int = 256  # deterministic duration predictor width (SBV2: fixed 256 at every size)
    # width-aware init and per-tensor Adam lr (model/parametrization.py, docs/mup.md): standard | mup
    parametrization: Literal["standard", "mup"] = "standard"
    mup_base_width: int | None = None  # hidden_channels at which mup equals standard (needed by mup)

    def validate(self, where: str = "model") -> None:
        """Cross-field checks, run by ``build_dataclass`` when the config is built (``ConfigError`` names
        ``<where>.<field>``) and again by ``model.parametrization`` before a net is built."""
        b = self.mup_base_width
        if b is not None and b <= 0:
            raise ConfigError(
                f"{where}.mup_base_width: must be a positive width (the base model's hidden_channels), got {b}"
            )
        if self.parametrization != "mup":
            return
        if b is None:
            raise ConfigError(
                f"{where}.mup_base_width: parametrization 'mup' needs a base width, the hidden_channels "
                "at which muP and the standard parametrization are the same model"
            )
        if b % self.n_heads:
            raise ConfigError(
                f"{where}.mup_base_width: {b} is not divisible by n_heads {self.n_heads} "
                "(the base model keeps the heads and splits its width across them)"
            )


@dataclass
class TrainConfig:
    # --- Style-Bert-VITS2 `train` keys ---
    log_interval: int = 200
    eval_interval: int = 1000
    seed: int = 42
    epochs: int = 1000
    learning_rate: float = 1e-4  # SBV2 JP-Extra config.json (peak lr of every schedule)
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    eps: float = 1e-9
    batch_size: int = 2
    fp16_run: bool = False
    lr_decay: float = 0.99996  # lr_schedule "sbv2" only: factor per epoch (or per step, scheduler_per)
    segment_size: int = 16384
    init_lr_ratio: float = 1.0
    warmup_epochs: int = 0
    c_mel: float = 45.0
    c_kl: float = 1.0
    c_commit: float = 100.0
    skip_optimizer: bool = False
    freeze_ZH_bert: bool = False
    freeze_JP_bert: bool = False
    freeze_EN_bert: bool = False
    freeze_emo: bool = False
    freeze_style: bool = False
    freeze_decoder: bool = False
    # --- project keys ---
    steps: int | None = None  # exact number of optimizer steps
    compute_budget: float | None = None  # FLOPs; converted to steps with the measured FLOPs per step
    c_dur: float = 1.0
    c_adv: float = 1.0
    c_fm: float = 1.0
    # gradient-norm clipping as SBV2 does it: generator at 500, discriminators unclipped (None); the
    # pre-clip norms are logged either way (grad_norm_g, grad_norm_d)
    grad_clip_g: float | None = 500.0
    grad_clip_d: float | None = None
    # fp32 (default; SBV2's maintainers and users report bf16 instability) | tf32 (TF32 matmuls and
    # convolutions on CUDA) | bf16 (bf16 autocast on CUDA; losses and mels stay fp32). CPU runs fp32.
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    checkpoint_every: int = 0  # 0: only at the end (and at eval points)
    keep_checkpoints: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    # --- the learning-rate schedule (model/train/schedule.py; docs/recipe.md has the formulas) ---
    # cosine (default: warm-up, cosine to min_lr_frac * lr at the trial's planned last step) | wsd
    # (warm-up, constant, decay over the last cooldown_frac of the planned steps) | constant (warm-up,
    # then constant: the WSD trunk) | sbv2 (Style-Bert-VITS2's lr_decay per epoch, for reproductions)
    lr_schedule: Literal["sbv2", "cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 0  # linear warm-up over this many optimizer steps
    warmup_frac: float | None = None  # ... or over this fraction of the planned steps (not both)
    min_lr_frac: float = 0.1  # cosine / wsd end at min_lr_frac * learning_rate
    cooldown_frac: float = 0.2  # wsd: the last 20% of the planned steps decay (Hagele et al. 2024)
    cooldown_shape: Literal["linear", "1-sqrt"] = "1-sqrt"  # wsd decay shape
    # lr_schedule sbv2 only: epoch (SBV2: lr_decay once per epoch) | step (independent of data size)
    scheduler_per: Literal["epoch", "step"] = "epoch"
    # --- WSD trunk and branches (docs/recipe.md): one constant-lr run, a cooldown branch per budget ---
    branch_budgets: list[float] = field(default_factory=list)  # non-empty: this trial is a trunk
    branch_from: str | None = None  # a branch: the trunk (same syntax as init_from); needs compute_budget
    # --- starting from another trial's weights (model/train/init.py) ---
    init_from: str | None = None  # checkpoint file, trial dir / checkpoints dir, or "sweep:<name>/<trial_id>"
    init_speakers: Literal["resize", "reinit", "keep"] = "resize"  # emb_g when loading init_from
    freeze: list[str] = field(
        default_factory=list
    )  # generator parts kept fixed: enc_p, flow, dec, emb_g, dotted


@dataclass
class EvalConfig:
    eval_every: int = 0  # 0: only at the end
    n_utterances: int = 4  # held-out sentences synthesised per evaluation
    mos_backend: Literal["dnsmos", "utmos", "none"] = "dnsmos"
    n_audio_samples: int = 2  # wavs logged per evaluation
    noise_scale: float = 0.667
    noise_scale_w: float = 0.8
    length_scale: float = 1.0
    seed: int = 1234  # fixes the noise of stochastic parts so evaluations are repeatable
    sdp_ratio: float = 0.2  # synthesis: share of the stochastic duration predictor (SBV2 DEFAULT_SDP_RATIO)
    nelbo_laplace_scale: float | None = None  # b of the Laplace mel likelihood; None: n_mel_channels / c_mel
    intonation_metrics: bool = True  # MCD / log-F0 / V-UV against the references (CPU, ~0.5 s per pair)


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db
    experiment: str = "vits-scaling"
    run_name: str | None = None
    parent_run_id: str | None = None
    run_id: str | None = None  # this trial's MLflow run (pre-created by the sweep driver; else found by tags)
    tags: dict[str, str] = field(default_factory=dict)
    log_checkpoint: bool = False


@dataclass
class TrialConfig:
    """Everything one trial needs; built once (from YAML/JSON or a sweep point) and passed down."""

    name: str = "trial"
    trial_id: str = "0"
    sweep: str | None = None
    output_dir: str = "runs/trials/trial"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    axes: dict[str, Any] = field(default_factory=dict)  # the sweep coordinates that produced this trial

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True, where: str = "config") -> TrialConfig:
        return build_dataclass(cls, d, strict=strict, where=where)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "tracking": TrackingConfig,
}


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the file and the field path."""


# ----------------------------------------------------------------------------------------------------
# building dataclasses from dicts with errors that name the field


def build_dataclass(
    cls: type, d: dict[str, Any] | None, *, strict: bool, where: str, unknown: list[str] | None = None
):
    """``cls`` (a config dataclass) from a mapping, coercing each field; errors name ``where.field``.

    ``strict``: an unknown key is a ``ConfigError``; otherwise it is appended to ``unknown`` (if given).
    A key this project replaced (``train.grad_clip``, ``train.bf16_run``) is a ``ConfigError`` naming its
    replacement, strict or not. A ``Literal[...]`` field (a choice: ``train.scheduler_per``,
    ``eval.mos_backend``, ...) refuses any other value here, when the config is built, with the allowed
    values in the message; so do the cross-field rules of ``check_section`` (schedule, branches, muP).
    """
    if d is None:
        return cls()
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    if cls is TrialConfig and isinstance(d.get("data"), dict):
        d = dict(d)
        model = dict(d["model"]) if isinstance(d.get("model"), dict) else None
        d["data"] = legacy_data_keys(d["data"], model, f"{where}.data")
        if model is not None:
            d["model"] = model
    elif cls is DataConfig:
        d = legacy_data_keys(d, None, where)
    for key, value in d.items():
        path = f"{where}.{key}"
        if key in REPLACED.get(cls, {}):
            raise ConfigError(f"{path}: no longer a setting; replaced by {REPLACED[cls][key]}")
        if key not in known:
            if strict:
                raise ConfigError(f"{path}: unknown field (allowed: {', '.join(sorted(known))})")
            if unknown is not None:
                unknown.append(path)
            continue
        sub = SECTIONS.get(key) if cls is TrialConfig else None
        if sub is not None:
            kwargs[key] = build_dataclass(sub, value, strict=strict, where=path, unknown=unknown)
        else:
            kwargs[key] = _coerce(known[key], value, path, cls)
    obj = cls(**kwargs)
    check_section(obj, where)
    return obj


# keys this project once had, and what replaced them (a config that still sets one is refused, naming it)
REPLACED: dict[type, dict[str, str]] = {
    TrainConfig: {
        "grad_clip": "train.grad_clip_g (generator, default 500 as in Style-Bert-VITS2) and "
        "train.grad_clip_d (discriminators, default null: not clipped)",
        "bf16_run": "train.precision (fp32 | tf32 | bf16; a Style-Bert-VITS2 config.json's bf16_run is "
        "still read by load_sbv2_config)",
    },
}


def _fraction(value: float | None, path: str, *, low: float, high: float, closed: str) -> None:
    """``value`` in the interval [low, high] with the ends ``closed`` names ("both", "low", "none")."""
    if value is None:
        return
    ok_low = value >= low if closed in ("both", "low") else value > low
    ok_high = value <= high if closed == "both" else value < high
    if not (ok_low and ok_high and math.isfinite(value)):
        lb = "[" if closed in ("both", "low") else "("
        rb = "]" if closed == "both" else ")"
        raise ConfigError(f"{path}: {value!r} is outside {lb}{low:g}, {high:g}{rb}")


def check_train(t: TrainConfig, where: str = "train") -> None:
    """The cross-field rules of ``train``, checked when a config is built (errors name ``where.field``).

    Schedule: warm-up in steps or as a fraction (not both; neither for ``sbv2``, which has none),
    ``min_lr_frac`` in [0, 1], ``cooldown_frac`` in (0, 1), warm-up not longer than ``train.steps`` when
    that is set (with a FLOPs budget ``model.train.budget.plan_budget`` checks it against the planned
    steps). Clipping norms positive or null. Branches (docs/recipe.md): a trunk (``branch_budgets``) is
    ``wsd`` with warm-up in steps and no ``steps`` / ``compute_budget`` of its own; a branch
    (``branch_from``) is ``wsd`` with warm-up in steps, a ``compute_budget`` and no ``steps`` /
    ``init_from``."""
    if not (t.learning_rate > 0 and math.isfinite(t.learning_rate)):
        raise ConfigError(f"{where}.learning_rate: must be a positive number, got {t.learning_rate!r}")
    for name in ("grad_clip_g", "grad_clip_d"):
        v = getattr(t, name)
        if v is not None and not v > 0:
            raise ConfigError(f"{where}.{name}: must be positive or null (not clipped), got {v!r}")
    if t.warmup_steps < 0:
        raise ConfigError(f"{where}.warmup_steps: must be >= 0, got {t.warmup_steps}")
    if t.warmup_steps and t.warmup_frac is not None:
        raise ConfigError(
            f"{where}.warmup_frac: warmup_steps ({t.warmup_steps}) and warmup_frac ({t.warmup_frac}) "
            "are both set; set one"
        )
    _fraction(t.warmup_frac, f"{where}.warmup_frac", low=0.0, high=1.0, closed="both")
    _fraction(t.min_lr_frac, f"{where}.min_lr_frac", low=0.0, high=1.0, closed="both")
    _fraction(t.cooldown_frac, f"{where}.cooldown_frac", low=0.0, high=1.0, closed="none")
    if t.lr_schedule == "sbv2" and (t.warmup_steps or t.warmup_frac):
        raise ConfigError(
            f"{where}.lr_schedule: sbv2 (exponential lr_decay) has no warm-up; "
            "use cosine, wsd or constant, or drop warmup_steps / warmup_frac"
        )
    if t.steps is not None and t.warmup_steps > t.steps:
        raise ConfigError(
            f"{where}.warmup_steps: {t.warmup_steps} is longer than the plan (train.steps = {t.steps})"
        )
    if t.branch_budgets:
        for i, b in enumerate(t.branch_budgets):
            if isinstance(b, bool) or not isinstance(b, int | float) or not (b > 0 and math.isfinite(b)):
                raise ConfigError(
                    f"{where}.branch_budgets[{i}]: must be a positive number of FLOPs, got {b!r}"
                )
        t.branch_budgets = [float(b) for b in t.branch_budgets]
        _branch_rules(t, where, "branch_budgets (a WSD trunk)")
        for name in ("steps", "compute_budget", "branch_from"):
            if getattr(t, name) is not None:
                raise ConfigError(
                    f"{where}.{name}: a trunk (branch_budgets set) trains to its last branch point; "
                    f"leave {name} unset"
                )
    if t.branch_from is not None:
        _branch_rules(t, where, "branch_from (a WSD branch)")
        if t.compute_budget is None:
            raise ConfigError(
                f"{where}.compute_budget: a branch (branch_from set) needs its compute_budget: it fixes "
                "the branch point and the end of the cooldown"
            )
        for name in ("steps", "init_from"):
            if getattr(t, name) is not None:
                raise ConfigError(
                    f"{where}.{name}: a branch (branch_from set) starts from its trunk; leave {name} unset"
                )


def _branch_rules(t: TrainConfig, where: str, what: str) -> None:
    if t.lr_schedule != "wsd":
        raise ConfigError(f"{where}.lr_schedule: {what} needs lr_schedule wsd, got {t.lr_schedule!r}")
    if t.warmup_frac is not None:
        raise ConfigError(
            f"{where}.warmup_frac: {what} takes its warm-up in steps (warmup_steps), so trunk and every "
            "branch share it"
        )


def check_model(m: ModelConfig, where: str = "model") -> None:
    """Rules of ``model`` beyond the field types (the nets' own shape rules are in ``model.generator``)."""
    if m.sdp_filter_channels is not None and m.sdp_filter_channels < 1:
        raise ConfigError(
            f"{where}.sdp_filter_channels: must be >= 1 or null (= hidden_channels), got {m.sdp_filter_channels}"
        )
    m.validate(where)  # muP: a positive base width the heads divide


STYLE_ENCODERS = ("zeros", "resemblyzer", "wespeaker", "torchscript")  # model/data/style.py


def parse_style_encoder(spec: Any, where: str = "data.style_encoder") -> tuple[str, str]:
    """``zeros | resemblyzer | wespeaker[:ID_OR_PATH] | torchscript:PATH`` -> ``(kind, argument)``: the
    spelling only, checked when the config is built (loading it is ``model.data.style``'s job)."""
    allowed = "zeros, resemblyzer, wespeaker, wespeaker:<hub id or path>, torchscript:<path>"
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{where}: expected a style encoder ({allowed}), got {spec!r}")
    kind, _, arg = spec.strip().partition(":")
    if kind not in STYLE_ENCODERS:
        raise ConfigError(f"{where}: unknown style encoder {spec!r} (allowed: {allowed})")
    if kind in ("zeros", "resemblyzer") and arg:
        raise ConfigError(f"{where}: {kind!r} takes no argument, got {spec!r}")
    if kind == "torchscript" and not arg:
        raise ConfigError(f"{where}: torchscript needs a file, e.g. 'torchscript:enc.pt', got {spec!r}")
    return kind, arg


def check_data(d: DataConfig, where: str = "data") -> None:
    """Rules of ``data`` that need no files: the text-feature fields and the style encoder's spelling (whether a model is on this machine and
    its layer range are checked by ``model.text.features`` before training)."""
    if not d.text_features.strip():
        raise ConfigError(f"{where}.text_features: empty (none, bert, or a model id / local directory)")
    if not d.text_features_layers:
        raise ConfigError(f"{where}.text_features_layers: needs at least one hidden-state index")
    for i, k in enumerate(d.text_features_layers):
        if isinstance(k, bool) or not isinstance(k, int):
            raise ConfigError(f"{where}.text_features_layers[{i}]: expected an integer index, got {k!r}")
    if d.text_features_proj_dim is not None and d.text_features_proj_dim < 1:
        raise ConfigError(
            f"{where}.text_features_proj_dim: must be >= 1 or null, got {d.text_features_proj_dim}"
        )
    parse_style_encoder(d.style_encoder, f"{where}.style_encoder")


def check_section(obj: Any, where: str) -> None:
    """The cross-field rules of a built section (``check_train``, ``check_model``, ``check_data``)."""
    if isinstance(obj, TrainConfig):
        check_train(obj, where)
    elif isinstance(obj, ModelConfig):
        check_model(obj, where)
    elif isinstance(obj, DataConfig):
        check_data(obj, where)


def legacy_data_keys(d: dict[str, Any], model: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Configs written before ``data.text_features`` (saved trials, sweep states) load unchanged:
    ``data.use_bert: true/false`` is ``text_features: bert/none`` (refused if ``text_features`` says
    otherwise), and ``data.bert_dim`` moves to ``model.bert_dim`` unless the model section has its own (the
    width the generator was built with, which old configs always carried; a ``data`` section read alone,
    as from a config.json, leaves it to that file's ``model`` section)."""
    d = dict(d)
    if "use_bert" in d:
        use = d.pop("use_bert")
        if not isinstance(use, bool):
            raise ConfigError(f"{where}.use_bert: expected bool, got {use!r} (it is now data.text_features)")
        want = "bert" if use else "none"
        have = d.get("text_features")
        if have is not None and have != want:
            raise ConfigError(
                f"{where}.use_bert: {use} contradicts {where}.text_features {have!r}; set text_features only"
            )
        d.setdefault("text_features", want)
    if "bert_dim" in d:
        dim = d.pop("bert_dim")
        if model is not None and model.get("bert_dim") is None:
            model["bert_dim"] = dim
    return d


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def literal_choices(cls: type, name: str) -> tuple[Any, ...] | None:
    """The values a ``Literal[...]`` field of config dataclass ``cls`` allows (None: not a choice field)."""
    hint = _hints(cls).get(name)
    if typing.get_origin(hint) is not Literal:
        return None
    return typing.get_args(hint)


def _coerce_choice(value: Any, allowed: tuple[Any, ...], path: str) -> Any:
    """A choice field's value, or a ``ConfigError`` naming the field and the allowed values.

    A whole number spelling a string choice is that string (``resblock: 2`` is ``"2"``; MLflow params
    read back from a table come as numbers)."""
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in allowed:
        value = str(value)
    if isinstance(value, str) and value in allowed:
        return value
    raise ConfigError(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")


def _coerce(f: dataclasses.Field, value: Any, path: str, cls: type) -> Any:
    t = f.type if isinstance(f.type, str) else str(f.type)
    if value is None:
        if "None" in t:
            return None
        raise ConfigError(f"{path}: must not be null (type {t})")
    allowed = literal_choices(cls, f.name)
    if allowed is not None:
        return _coerce_choice(value, allowed, path)
    base = t.replace(" | None", "")
    try:
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if base.startswith("list") and not isinstance(value, list):
            raise TypeError
        if base.startswith("dict") and not isinstance(value, dict):
            raise TypeError
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: expected {t}, got {value!r}") from None
    return copy.deepcopy(value)


_REPLACE_WHOLE = ("spk2id", "style2id", "tags", "sources")  # mappings an override replaces, never merges


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in _REPLACE_WHOLE:
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ----------------------------------------------------------------------------------------------------
# files: Style-Bert-VITS2 config.json and this project's YAML


def _sbv2_train(train: dict[str, Any], where: str) -> dict[str, Any]:
    """SBV2's ``train`` keys in this project's terms: ``bf16_run`` -> ``precision`` (true: bf16, false:
    fp32; an explicit ``precision``, as this project's export writes, must agree with it), and the
    schedule SBV2 trains with (``lr_schedule: sbv2``: lr_decay per epoch) unless the file names one."""
    train = dict(train)
    if "bf16_run" in train:
        bf16 = train.pop("bf16_run")
        if not isinstance(bf16, bool):
            raise ConfigError(f"{where}.bf16_run: expected bool, got {bf16!r}")
        if "precision" not in train:
            train["precision"] = "bf16" if bf16 else "fp32"
        elif bf16 != (train["precision"] == "bf16"):
            raise ConfigError(
                f"{where}.bf16_run: {bf16} contradicts {where}.precision {train['precision']!r}; "
                "set one of them"
            )
    train.setdefault("lr_schedule", "sbv2")
    return train


def load_sbv2_config(path: str | Path, base: TrialConfig | None = None) -> tuple[TrialConfig, list[str]]:
    """Load a Style-Bert-VITS2 ``config.json`` (on top of ``base``, default the ``default`` preset: SBV2's
    config with its BERT features); returns the config and the list of unknown keys.

    ``train.bf16_run`` becomes ``train.precision``; without an ``lr_schedule`` key the config trains
    with SBV2's own schedule (``sbv2``), since that is what the file describes."""
    path = Path(path)
    try:
        raw = read_json(path)
    except TextFileError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a Style-Bert-VITS2 config.json holds an object, got {type(raw).__name__}")
    unknown: list[str] = []
    cfg = copy.deepcopy(base) if base is not None else default_config()
    if isinstance(raw.get("train"), dict):
        raw["train"] = _sbv2_train(raw["train"], f"{path.name}:train")
    for section in ("data", "model", "train"):
        if section in raw:
            setattr(
                cfg,
                section,
                build_dataclass(
                    SECTIONS[section],
                    merge(asdict(getattr(cfg, section)), raw[section]),
                    strict=False,
                    where=f"{path.name}:{section}",
                    unknown=unknown,
                ),
            )
    for key in raw:
        if key not in ("data", "model", "train", "model_name", "version", "vits_scaling"):  # model.sbv2
            unknown.append(f"{path.name}:{key}")
    if "model_name" in raw:
        cfg.name = str(raw["model_name"])
    return cfg, unknown


def save_sbv2_config(
    cfg: TrialConfig, path: str | Path, *, extra: dict[str, Any] | None = None, version: str = "2.0-JP-Extra"
) -> None:
    """Write the ``data``/``model``/``train`` sections in Style-Bert-VITS2's layout (project keys included).

    ``extra``: more top-level keys (the export's ``vits_scaling`` record; SBV2 ignores keys it does not know).

    SBV2's ``bf16_run`` is written from ``train.precision`` (true only for bf16). Project keys keep their
    own meaning: ``model.sdp_filter_channels`` null is "follow hidden_channels", which is what SBV2 does
    (SBV2 reads no such key), so it is written as null, never as a width SBV2 would not use."""
    train = asdict(cfg.train)
    train["bf16_run"] = cfg.train.precision == "bf16"
    out = {
        "model_name": cfg.name,
        "version": version,
        "data": asdict(cfg.data),
        "model": asdict(cfg.model),
        "train": train,
        **(extra or {}),
    }
    Path(path).write_text(json.dumps(out, indent=2, ensure_ascii=False), encoding="utf-8")


def is_sbv2_config(raw: Any) -> bool:
    """Whether a parsed JSON document is a Style-Bert-VITS2 ``config.json`` (its version string, its
    ``model_name``, or SBV2's ``model.inter_channels``), not this project's JSON of the same sections."""
    if not isinstance(raw, dict):
        return False
    model = raw.get("model")
    return "version" in raw or "model_name" in raw or (isinstance(model, dict) and "inter_channels" in model)


def load_config(path: str | Path, preset: str | None = None) -> TrialConfig:
    """Load a trial config from this project's YAML (or JSON in the same shape) or a SBV2 config.json.

    The file's values apply on top of a preset: its own top-level ``preset: tiny`` key, else ``preset`` (a
    sweep's ``base.preset``, ``model info --preset``), else ``default``. Naming two different presets is refused.
    """
    path = Path(path)
    try:  # a directory, non-UTF-8 bytes, bad syntax, a key given twice: errors that name file and line
        raw = read_json(path) if path.suffix == ".json" else read_yaml(path)
    except TextFileError as e:
        raise ConfigError(str(e)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of sections, got {type(raw).__name__}")
    own = raw.pop("preset", None)
    if own is not None and preset is not None and own != preset:
        raise ConfigError(
            f"{path}: preset: the file names preset {own!r}, but it is applied on {preset!r}; give one"
        )
    base = preset_config(own or preset or "default", where=f"{path}: preset")
    if path.suffix == ".json" and is_sbv2_config(raw):
        cfg, _unknown = load_sbv2_config(path, base=base)
        return cfg
    return TrialConfig.from_dict(merge(base.to_dict(), raw), strict=True, where=str(path))


def dump_config(cfg: TrialConfig, path: str | Path) -> None:
    Path(path).write_text(
        yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"n_layers": 6}} -> {"model.n_layers": 6}`` (for MLflow params and tables)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("spk2id", "style2id"):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ----------------------------------------------------------------------------------------------------
# named presets used by tests, the demo and the seed reproduction


def tiny_config(sample_rate: int = 16000) -> TrialConfig:
    """A model small enough for CPU tests: seconds per step with a tiny discriminator, low sample rate."""
    cfg = TrialConfig(name="tiny")
    d, m, t = cfg.data, cfg.model, cfg.train
    d.sampling_rate = sample_rate
    d.filter_length = d.win_length = 512
    d.hop_length = 128
    d.n_mel_channels = 40
    d.n_speakers = 4
    d.val_utterances = 4
    m.inter_channels = m.hidden_channels = 32
    m.filter_channels = 64
    m.n_heads = 2
    m.n_layers = 2
    m.resblock = "2"
    m.resblock_kernel_sizes = [3]
    m.resblock_dilation_sizes = [[1, 3]]
    m.upsample_rates = [8, 4, 4]
    m.upsample_initial_channel = 64
    m.upsample_kernel_sizes = [16, 8, 8]
    m.n_layers_q = 2
    m.gin_channels = 16
    m.n_layers_trans_flow = 1
    m.n_flow_layer = 2
    m.bert_dim = None  # text features off (data.text_features none): 1024 zeros, the SBV2 layout
    m.style_dim = 256
    m.use_wavlm_discriminator = False
    m.disc_width = 1 / 16
    m.disc_periods = [2, 3]
    # the SDP follows hidden_channels (sdp_filter_channels None); the deterministic duration predictor
    # is fixed-width (256) in SBV2 and kept small here (a tiny-preset difference, docs/recipe.md)
    m.dp_filter_channels = 32
    # no style encoder: the CPU tests, the demo and the ladder keep zero style vectors (resemblyzer costs
    # ~40 s per hour of audio on one core, README "style vectors"); public presets embed real ones
    d.style_encoder = "zeros"
    t.batch_size = 2
    t.segment_size = 2048
    t.log_interval = 10
    return cfg


def default_config() -> TrialConfig:
    """Style-Bert-VITS2 JP-Extra's public config, with its DeBERTa-v2 large Japanese char features
    (``data.text_features: bert``): training refuses to start when the model is not on this machine
    (model/text/features.py) rather than train on zeros; set ``data.text_features: none`` to run without."""
    cfg = TrialConfig()
    cfg.data.text_features = "bert"
    return cfg


def seed_large_config() -> TrialConfig:
    """The seed experiment's '0.3 B-equivalent': inter/hidden 256, filter 2048, 16 heads, 24 layers (BERT
    features on, as ``default``)."""
    cfg = TrialConfig(name="sbv2-0.3b-equivalent")
    cfg.data.text_features = "bert"
    cfg.model.inter_channels = cfg.model.hidden_channels = 256
    cfg.model.filter_channels = 2048
    cfg.model.n_heads = 16
    cfg.model.n_layers = 24
    return cfg


PRESETS: dict[str, Callable[[], TrialConfig]] = {
    "default": default_config,  # Style-Bert-VITS2 JP-Extra's public config, BERT features on
    "tiny": tiny_config,
    "seed_large": seed_large_config,
}


def preset_config(name: str, where: str = "preset") -> TrialConfig:
    """A fresh config of the named preset (the one table of presets: sweeps, ``model info``, benches)."""
    if name not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {name!r} (allowed: {', '.join(PRESETS)})")
    return PRESETS[name]()
