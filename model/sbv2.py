"""Style-Bert-VITS2 (SBV2) JP-Extra weights in and out: key names, weight-norm layout, symbol tables.

The generator is SBV2 JP-Extra's arrangement with the same layer names (``model.generator``); two things
differ in the files:

- **weight norm**: this project uses ``torch.nn.utils.parametrizations.weight_norm``
  (``<layer>.parametrizations.weight.original0`` = magnitude g, ``original1`` = direction v); SBV2 the
  older ``torch.nn.utils.weight_norm`` (``<layer>.weight_g`` / ``<layer>.weight_v``), same shapes;
- **embedding tables**: SBV2 keeps one table for three languages (112 symbols, 12 tones, 3 languages;
  this project 49 / 2 / 1, ``model.text.symbols``). The row maps are below and in docs/sbv2.md.

Facts relied on (SBV2 ``nlp/symbols.py``, same as Bert-VITS2 ``text/symbols.py``): the symbol list is
``["_"] + sorted(set(ZH + JP + EN)) + ["!", "?", "…", ",", ".", "'", "-", "SP", "UNK"]`` (65 Chinese, 42
Japanese, 39 English phones, 102 distinct); tones are one table of ``6 (ZH) + 2 (JP) + 4 (EN)`` with a
language's tone ``t`` stored at ``start[lang] + t`` (ZH 0, JP 6, EN 8); languages ``ZH 0, JP 1, EN 2``.

Symbol map (ours -> SBV2): every project symbol whose Japanese phone (or punctuation, pad, ``SP``,
``UNK``) is in SBV2's Japanese list keeps its meaning and takes that row; Open JTalk's geminate ``cl`` is
SBV2's ``q``. ``fy``, ``gw``, ``kw`` and ``v`` have no row in SBV2's Japanese list (SBV2's ``v`` row is
the Chinese ü): importing a real SBV2 checkpoint initialises them (the fresh model's rows, reported).
Exporting puts them in four rows Japanese never uses (``SPARE_ROWS``: Chinese-only symbols) and records
where under the top-level ``vits_scaling`` key of ``config.json``, so that export -> import is exact;
SBV2 never reads those rows for Japanese text. Rows of SBV2's table with no project symbol are dropped
on import and written as zeros on export (padded).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import TrialConfig, load_sbv2_config, save_sbv2_config
from model.text import symbols as ours

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# SBV2's tables (facts; see the module docstring)

ZH_PHONES = (
    "E En a ai an ang ao b c ch d e ei en eng er f g h i i0 ia ian iang iao ie in ing iong ir iu j k l m n o "
    "ong ou p q r s sh t u ua uai uan uang ui un uo v van ve vn w x y z zh AA EE OO"
).split()
JP_PHONES = (
    "N a a: b by ch d dy e e: f g gy h hy i i: j k ky m my n ny o o: p py q r ry s sh t ts ty u u: w y z zy"
).split()
EN_PHONES = (
    "aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th uh uw V w y z zh"
).split()
PUNCTUATION = ["!", "?", "…", ",", ".", "'", "-"]
SYMBOLS = ["_"] + sorted(set(ZH_PHONES + JP_PHONES + EN_PHONES)) + PUNCTUATION + ["SP", "UNK"]
NUM_TONES = 12
TONE_START = {"ZH": 0, "JP": 6, "EN": 8}
LANGUAGE_ID = {"ZH": 0, "JP": 1, "EN": 2}
NUM_LANGUAGES = len(LANGUAGE_ID)
VERSION = "2.0-JP-Extra"  # SBV2 reads a model as JP-Extra when its config version ends with "JP-Extra"
assert len(SYMBOLS) == 112

RENAMED = {"cl": "q"}  # Open JTalk's geminate is SBV2's "q"
_JP_ROWS = set(JP_PHONES) | set(PUNCTUATION) | {"_", "SP", "UNK"}
# rows Japanese text never uses (Chinese-only symbols): where an export keeps our symbols SBV2 lacks
SPARE_ROWS = [i for i, s in enumerate(SYMBOLS) if s in set(ZH_PHONES) - set(JP_PHONES) - set(EN_PHONES)]

TABLES = {  # generator tensor -> (our row -> SBV2 row)
    "enc_p.emb.weight": "symbols",
    "enc_p.tone_emb.weight": "tones",
    "enc_p.language_emb.weight": "languages",
}
G_ORIG, V_ORIG = ".parametrizations.weight.original0", ".parametrizations.weight.original1"


class Sbv2Error(ValueError):
    """A Style-Bert-VITS2 file that cannot be read or mapped; the message names the file and tensor/field."""


def symbol_map() -> dict[str, int | None]:
    """Our symbol -> its SBV2 row, or None where SBV2's Japanese list has no such phone."""
    out: dict[str, int | None] = {}
    for s in ours.SYMBOLS:
        t = RENAMED.get(s, s)
        out[s] = SYMBOLS.index(t) if t in _JP_ROWS else None
    return out


def row_maps(extra_rows: dict[str, int] | None = None) -> dict[str, dict[int, int]]:
    """Per table: our row id -> SBV2 row id (only rows that have one). ``extra_rows``: symbol -> SBV2 row
    for our symbols SBV2 lacks, as an export records them (``vits_scaling.extra_symbol_rows``)."""
    sym = {i: j for i, (_, j) in enumerate(symbol_map().items()) if j is not None}
    for s, j in (extra_rows or {}).items():
        if s in ours.SYMBOL_TO_ID and 0 <= int(j) < len(SYMBOLS):
            sym[ours.SYMBOL_TO_ID[s]] = int(j)
    return {
        "symbols": sym,
        "tones": {t: TONE_START["JP"] + t for t in range(ours.NUM_TONES)},
        "languages": {ours.LANGUAGE_ID["JP"]: LANGUAGE_ID["JP"]},
    }


TABLE_SIZES = {"symbols": len(SYMBOLS), "tones": NUM_TONES, "languages": NUM_LANGUAGES}


def export_extra_rows() -> dict[str, int]:
    """Where an export stores our symbols SBV2's Japanese list lacks (symbol -> spare SBV2 row)."""
    missing = [s for s, j in symbol_map().items() if j is None]
    return dict(zip(missing, SPARE_ROWS, strict=False))


def export_tables() -> dict[str, dict[str, Any]]:
    """What an export does to each table: SBV2 rows, rows mapped from ours, rows padded with zeros (and,
    for symbols, the spare rows holding our symbols SBV2 lacks)."""
    maps, extra = row_maps(), export_extra_rows()
    out: dict[str, dict[str, Any]] = {}
    for table, n in TABLE_SIZES.items():
        used = len(maps[table]) + (len(extra) if table == "symbols" else 0)
        out[table] = {"rows": n, "mapped": len(maps[table]), "padded": n - used}
    out["symbols"]["spare"] = extra
    return out


# ----------------------------------------------------------------------------------------------------
# key names


def to_sbv2_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``parametrizations.weight.original0/1`` -> ``weight_g`` / ``weight_v``; other keys unchanged."""
    out = {}
    for k, v in sd.items():
        if k.endswith(G_ORIG):
            k = k[: -len(G_ORIG)] + ".weight_g"
        elif k.endswith(V_ORIG):
            k = k[: -len(V_ORIG)] + ".weight_v"
        out[k] = v
    return out


def from_sbv2_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``to_sbv2_keys`` (and a DDP ``module.`` prefix dropped)."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if k.endswith(".weight_g"):
            k = k[: -len(".weight_g")] + G_ORIG
        elif k.endswith(".weight_v"):
            k = k[: -len(".weight_v")] + V_ORIG
        out[k] = v
    return out


# ----------------------------------------------------------------------------------------------------
# reports


@dataclass
class ImportReport:
    """What an import did, per file: tensors mapped, weight-norm pairs renamed, table rows mapped / padded /
    dropped / initialised, tensors initialised because the file lacks them, files skipped."""

    source: str
    tensors: int = 0
    weight_norm_renamed: int = 0
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # table -> mapped, dropped, initialised
    initialised: list[str] = field(default_factory=list)  # tensors kept at their fresh init
    skipped: list[str] = field(default_factory=list)  # files found and not loaded, with the reason
    loaded: list[str] = field(default_factory=list)  # "<net> <- <file>"

    def lines(self) -> list[str]:
        out = [f"Style-Bert-VITS2 import from {self.source}"]
        out += [f"  loaded {x}" for x in self.loaded]
        out.append(f"  tensors mapped: {self.tensors} ({self.weight_norm_renamed} weight_g/weight_v renamed)")
        for t, r in self.rows.items():
            init = f", initialised {', '.join(r['initialised'])}" if r["initialised"] else ""
            out.append(f"  {t}: {r['mapped']} rows mapped, {r['dropped']} SBV2 rows dropped{init}")
        if self.initialised:
            out.append(
                f"  initialised (not in the file): {len(self.initialised)} tensors, e.g. {self.initialised[:3]}"
            )
        out += [f"  skipped {x}" for x in self.skipped]
        return out

    def params(self) -> dict[str, str]:
        """Flat strings for a sink's ``log_params``."""
        p = {"pretrain.sbv2.tensors": str(self.tensors)}
        for t, r in self.rows.items():
            p[f"pretrain.sbv2.{t}"] = f"{r['mapped']} mapped, {r['dropped']} dropped"
            if r["initialised"]:
                p[f"pretrain.sbv2.{t}_initialised"] = ",".join(r["initialised"])
        if self.initialised:
            p["pretrain.sbv2.initialised_tensors"] = str(len(self.initialised))
        return p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------
# state dicts both ways


def export_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our generator state dict -> SBV2 key names and table sizes (padding rows zero; our symbols SBV2
    lacks in ``export_extra_rows()``'s spare rows)."""
    maps = row_maps(export_extra_rows())
    out = {}
    for k, v in sd.items():
        if k in TABLES:
            table = TABLES[k]
            big = torch.zeros(TABLE_SIZES[table], v.shape[1], dtype=v.dtype)
            for i, j in maps[table].items():
                big[j] = v[i]
            v = big
        out[k] = v.detach().cpu().contiguous()
    return to_sbv2_keys(out)


def import_state_dict(
    sd: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
    path: Path,
    report: ImportReport,
    *,
    label: str = "net_g",
    extra_rows: dict[str, int] | None = None,
    optional: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """An SBV2 state dict -> one that ``own`` (our fresh net's state dict) loads strictly.

    Tables are mapped row by row (``row_maps``); our rows with no SBV2 row keep ``own``'s fresh values.
    Tensors whose names start with one of ``optional`` may be missing (an inference-only SBV2 file has no
    ``enc_q``) and keep their fresh values; any other missing or unexpected tensor, or a shape that does not
    match, is refused naming the tensor (and both shapes)."""
    renamed = sum(k.endswith((".weight_g", ".weight_v")) for k in sd)
    sd = from_sbv2_keys(sd)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    hard_missing = [k for k in missing if not k.startswith(optional)]
    if hard_missing or unexpected:
        raise Sbv2Error(
            f"{path}: {label} does not match this model's architecture: missing {hard_missing[:5]}"
            f"{' ...' if len(hard_missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''} (another flow type, number of layers or a non-JP-Extra model?)"
        )
    maps = row_maps(extra_rows) if label == "net_g" else {}
    out = {}
    for k, mine in own.items():
        if k not in sd:
            out[k] = mine
            report.initialised.append(f"{label}.{k}")
            continue
        v = sd[k]
        if label == "net_g" and k in TABLES:
            table = TABLES[k]
            if v.dim() != 2 or v.shape[0] != TABLE_SIZES[table] or v.shape[1] != mine.shape[1]:
                raise Sbv2Error(
                    f"{path}: {label}.{k} has shape {tuple(v.shape)}, expected SBV2's "
                    f"({TABLE_SIZES[table]}, {mine.shape[1]}) for this model ({table} table, hidden width "
                    f"{mine.shape[1]}; this model's own table is {tuple(mine.shape)})"
                )
            new = mine.clone()
            init = []
            for i in range(mine.shape[0]):
                if i in maps[table]:
                    new[i] = v[maps[table][i]].to(mine.dtype)
                else:
                    init.append(_row_name(table, i))
            report.rows[table] = {
                "mapped": mine.shape[0] - len(init),
                "dropped": TABLE_SIZES[table] - (mine.shape[0] - len(init)),
                "initialised": init,
            }
            out[k] = new
            continue
        if v.shape != mine.shape:
            raise Sbv2Error(
                f"{path}: {label}.{_sbv2_name(k)} has shape {tuple(v.shape)}, this model {tuple(mine.shape)}"
            )
        out[k] = v.to(mine.dtype)
    report.tensors += len(sd)
    report.weight_norm_renamed += renamed
    return out


def _row_name(table: str, i: int) -> str:
    if table == "symbols":
        return ours.SYMBOLS[i]
    return f"{table[:-1]} {i}"


def _sbv2_name(k: str) -> str:
    return next(iter(to_sbv2_keys({k: None})))  # type: ignore[dict-item]


# ----------------------------------------------------------------------------------------------------
# files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an SBV2 weight file: ``*.safetensors``, or a ``*.pth`` holding ``{"model": state_dict,
    ...}`` (SBV2's training checkpoints) or a bare state dict. Anything else is refused naming the file."""
    path = Path(path)
    if not path.is_file():
        raise Sbv2Error(f"{path}: no such Style-Bert-VITS2 weight file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise Sbv2Error(
                f"{path}: not a readable safetensors file (truncated or corrupted? {type(e).__name__}: {e})"
            ) from None
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many kinds for torn or foreign bytes
            raise Sbv2Error(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
        sd = raw.get("model", raw) if isinstance(raw, dict) else raw
    if not isinstance(sd, dict) or not sd:
        raise Sbv2Error(f"{path}: not a state dict (got {type(sd).__name__}; expected name -> tensor)")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise Sbv2Error(
            f"{path}: not a state dict: entry {bad[0]!r} is a {type(sd[bad[0]]).__name__}, not a tensor"
        )
    return sd


@dataclass
class Sbv2Files:
    generator: Path
    config: Path
    others: dict[str, Path]  # our net name -> SBV2 file (D_*, DUR_*, WD_*)


OTHER_PREFIX = {"net_d": "D_", "net_dur_disc": "DUR_", "net_wd": "WD_"}


def is_sbv2_source(path: Path) -> bool:
    """Whether ``path`` names SBV2 weights: a ``*.safetensors`` / ``G_*.pth`` file, or a directory holding
    one beside a ``config.json`` (this project's own checkpoints are ``ckpt_*.pt``)."""
    if path.is_file():
        return path.suffix == ".safetensors" or (path.name.startswith("G_") and path.suffix == ".pth")
    if path.is_dir() and (path / "config.json").is_file():
        return bool(_generators(path))
    return False


def _step(p: Path) -> int:
    digits = "".join(c for c in p.stem.split("_")[-1] if c.isdigit())
    return int(digits) if digits else -1


def _generators(d: Path) -> list[Path]:
    gs = sorted(d.glob("G_*.pth")) + sorted(d.glob("G_*.safetensors"))
    if not gs:
        gs = [p for p in sorted(d.glob("*.safetensors")) if not p.name.startswith(("D_", "DUR_", "WD_"))]
    return sorted(gs, key=lambda p: (_step(p), p.suffix == ".safetensors"))


def find_files(path: Path) -> Sbv2Files:
    """The generator (the named file, or a directory's latest ``G_*``; else its one model ``*.safetensors``),
    the ``config.json`` beside it and any ``D_`` / ``DUR_`` / ``WD_`` files of the same step."""
    if path.is_dir():
        gs = _generators(path)
        if not gs:
            raise Sbv2Error(f"{path}: no G_*.pth or *.safetensors generator in this directory")
        gen = gs[-1]
    else:
        gen = path
    cfg = gen.parent / "config.json"
    if not cfg.is_file():
        raise Sbv2Error(f"{gen}: no config.json beside it (SBV2 weights are read with their config.json)")
    others = {}
    if gen.name.startswith("G_"):
        tail = gen.name[2:]
        for net, prefix in OTHER_PREFIX.items():
            for cand in (gen.parent / (prefix + tail), gen.parent / (prefix + Path(tail).stem + ".pth")):
                if cand.is_file():
                    others[net] = cand
                    break
    return Sbv2Files(gen, cfg, others)


ARCH_KEYS = (
    "inter_channels hidden_channels filter_channels n_heads n_layers kernel_size resblock resblock_kernel_sizes "
    "resblock_dilation_sizes upsample_rates upsample_initial_channel upsample_kernel_sizes n_layers_q "
    "gin_channels use_transformer_flow n_layers_trans_flow n_flow_layer flow_share_parameter "
    "use_spk_conditioned_encoder use_mel_posterior_encoder"
).split()


def read_config(path: Path) -> tuple[TrialConfig, dict[str, Any]]:
    """An SBV2 ``config.json`` (our config from it, and its raw document); refused unless it is JP-Extra."""
    cfg, _unknown = load_sbv2_config(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    version = str(raw.get("version", ""))
    if not version.endswith("JP-Extra"):
        raise Sbv2Error(
            f"{path}: version: {version or '(none)'!r} is not a JP-Extra model (its version must end with "
            "'JP-Extra'; other SBV2 models have Chinese/English BERT layers this architecture lacks)"
        )
    return cfg, raw


def check_architecture(sbv2: TrialConfig, cfg: TrialConfig, path: Path) -> None:
    """The trial's model must be the one the SBV2 config describes (field by field, named)."""
    diffs = [k for k in ARCH_KEYS if getattr(sbv2.model, k) != getattr(cfg.model, k)]
    if sbv2.data.hop_length != cfg.data.hop_length:
        diffs.append("hop_length")
    if diffs:
        shown = ", ".join(
            f"{'data' if k == 'hop_length' else 'model'}.{k}: "
            f"{getattr(sbv2.data if k == 'hop_length' else sbv2.model, k)!r} (file) vs "
            f"{getattr(cfg.data if k == 'hop_length' else cfg.model, k)!r} (trial)"
            for k in diffs[:6]
        )
        raise Sbv2Error(f"{path}: the Style-Bert-VITS2 config does not describe this trial's model ({shown})")


def load_into(state, cfg: TrialConfig, path: Path, speakers) -> ImportReport:
    """Load SBV2 weights named by ``path`` (see ``find_files``) into ``state`` (a ``model.step.TrainState``).

    ``speakers(old, new) -> tensor | None`` resizes ``emb_g`` as ``train.init_speakers`` says (None: keep
    the fresh one). Returns the report (also logged)."""
    files = find_files(path)
    sbv2_cfg, raw = read_config(files.config)
    check_architecture(sbv2_cfg, cfg, files.config)
    extra = (raw.get("vits_scaling") or {}).get("extra_symbol_rows")
    report = ImportReport(source=str(files.generator.resolve()))
    for name, net in state.nets().items():
        f = files.generator if name == "net_g" else files.others.get(name)
        if f is None:
            if name != "net_g":
                report.initialised.append(f"{name} (no {OTHER_PREFIX[name]}* file)")
            continue
        sd = read_state_dict(f)
        own = net.state_dict()
        if name == "net_g" and "emb_g.weight" in sd and "emb_g.weight" in own:
            rows = speakers(sd["emb_g.weight"], own["emb_g.weight"])
            sd["emb_g.weight"] = own["emb_g.weight"] if rows is None else rows
        mapped = import_state_dict(
            sd, own, f, report, label=name, extra_rows=extra, optional=("enc_q.",) if name == "net_g" else ()
        )
        net.load_state_dict(mapped, strict=True)
        report.loaded.append(f"{name} <- {f.name}")
    for name, f in files.others.items():
        if name not in state.nets():
            report.skipped.append(f"{f.name} (this trial has no {name})")
    for line in report.lines():
        log.info(line)
    return report


# ----------------------------------------------------------------------------------------------------
# export: SBV2's model_assets/<name>/


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing non-empty target unless ``force`` (nothing is overwritten without it)."""
    if out.exists() and not out.is_dir():
        raise Sbv2Error(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise Sbv2Error(f"{out}: exists and is not empty (pass --force to overwrite its files)")


def write_model_assets(
    net_g,
    cfg: TrialConfig,
    out: Path,
    name: str,
    style_names: list[str],
    style_vectors: np.ndarray,
    *,
    force: bool = False,
) -> dict[str, int]:
    """Write ``config.json``, ``<name>.safetensors`` and ``style_vectors.npy`` into ``out`` (SBV2's
    ``model_assets/<name>/``); returns file name -> bytes.

    ``style_vectors``: (n_styles, style_dim) float32, the neutral style first, as SBV2 reads them (row i is
    style ``style_names[i]``). The speaker map is ``data.spk2id`` (placeholder names ``spk<i>`` when the
    trial's config has none)."""
    from safetensors.torch import save_file

    check_out_dir(out, force)
    style_vectors = np.asarray(style_vectors, dtype=np.float32)
    if style_vectors.ndim != 2 or style_vectors.shape[0] != len(style_names) or not style_names:
        raise Sbv2Error(
            f"style table: {len(style_names)} names for vectors of shape {style_vectors.shape} "
            "(needs one row per style, the neutral style first)"
        )
    if cfg.model.style_dim and style_vectors.shape[1] != cfg.model.style_dim:
        raise Sbv2Error(
            f"style table: vectors of width {style_vectors.shape[1]}, model.style_dim {cfg.model.style_dim}"
        )
    out.mkdir(parents=True, exist_ok=True)
    c = TrialConfig.from_dict(cfg.to_dict())
    c.name = name
    if not c.data.spk2id:
        c.data.spk2id = {f"spk{i}": i for i in range(c.data.n_speakers)}
    c.data.style2id = {s: i for i, s in enumerate(style_names)}
    c.data.num_styles = len(style_names)
    extra = {"symbols": list(ours.SYMBOLS), "extra_symbol_rows": export_extra_rows()}
    save_sbv2_config(c, out / "config.json", extra={"vits_scaling": extra}, version=VERSION)
    sd = export_state_dict(net_g.state_dict())
    weights = out / f"{name}.safetensors"
    save_file(sd, str(weights), metadata={"format": "pt", "vits_scaling_symbols": ours.table_hash()})
    np.save(out / "style_vectors.npy", style_vectors)
    return {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
