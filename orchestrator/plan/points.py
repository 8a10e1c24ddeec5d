"""Axes -> points -> configs: the base config of a sweep, each axis value checked and normalised, the points
of the grid (``axes`` x ``points`` / ``isoflop`` sizes), and one point applied to the base config.

What the model axes move (``build_point``):

* ``width``: ``model.hidden_channels`` = ``model.inter_channels`` (or a ``{hidden, inter, filter}`` mapping),
  ``model.filter_channels`` = round(hidden x filter ratio) unless given. The decoder and discriminators stay.
* ``n_layers`` / ``n_heads``: the text encoder's depth and heads.
* ``size``: a multiplier ``s`` of the *base* config's widths, the whole model together: hidden = inter =
  ``s`` x base hidden rounded to a multiple of ``n_heads`` (at least ``n_heads``), filter = round(hidden x
  filter ratio), ``model.upsample_initial_channel`` = round(``s`` x base; each upsampling stage halves it,
  so it must stay >= 2^stages) and ``model.disc_width`` = ``s`` x base. Whatever follows the hidden width in
  the model (the duration predictors where the config says so) follows it. Not combinable with an axis that
  sets one of those widths itself.
* ``lr``: ``train.learning_rate`` (> 0).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Any

from model.config import (
    SECTIONS,
    ConfigError,
    TrialConfig,
    flatten,
    load_config,
    merge,
    preset_config,
)
from orchestrator.plan.schema import KNOWN_AXES, OTHER_AXES, BaseSettings, SpecError, SweepSpec


def check_inside(path: Path, root: Path, extra_roots: tuple[Path, ...], what: str) -> None:
    """Refuse ``path`` unless it (symlinks followed) lies in ``root``'s tree or one of ``extra_roots``.

    A sweep file may come from someone else: what it names is read, and an error about it may be shown
    (CI logs), so it may only point into its own directory tree; a tree outside it is the user's to allow
    on the command line (``sweep submit --base-root DIR``). Nothing is read before this check."""
    real = path.resolve()
    roots = (root.resolve(), *extra_roots)
    if not any(real.is_relative_to(r) for r in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise SpecError(
            f"{what} resolves to {real}, outside the sweep's directory tree ({allowed}); a sweep reads base "
            "files only from there: to allow another tree pass --base-root DIR to `vits-scaling sweep submit` "
            "(nothing was read)"
        )


# ", got 'value'" / ", got 12" / ", got [..]" in a message: a value quoted from a file (a type name stays)
QUOTED_VALUE = re.compile(r"(, got |: got )(['\"\[{(\-0-9].*?|True|False|None)(?=$| \(|;)", re.M)


def hide_values(msg: str) -> str:
    """A config error about a base file without the values it quotes: the file, line, field and what is
    allowed stay, the file's content is not shown (an error may end up in a CI log)."""
    return QUOTED_VALUE.sub(r"\1a value not shown (base file content is not echoed)", msg)


def base_config(spec: SweepSpec) -> TrialConfig:
    """The base TrialConfig: a base file (path relative to the sweep file, inside the sweep file's directory
    tree or a ``--base-root``: ``check_inside``), or ``{preset, file, data, model, train, eval}`` applied in
    that order (the file's values on top of the preset, the sections on top of both)."""
    where = spec.where()
    root = spec.source.parent if spec.source else Path.cwd()
    b = spec.base
    if isinstance(b, str):
        b = BaseSettings(file=b)
    try:
        if b.file:
            p = Path(b.file).expanduser()
            p = p if p.is_absolute() else root / p
            check_inside(p, root, spec.base_roots, f"{where}: base.file: {b.file!r}")
            if not p.exists():
                raise SpecError(
                    f"{where}: base.file: base file not found: {p} (paths are relative to the sweep file)"
                )
            try:
                cfg = load_config(p, preset=b.preset if "preset" in b.model_fields_set else None)
            except ConfigError as e:
                raise ConfigError(hide_values(str(e))) from None
        else:
            cfg = preset_config(b.preset, where="base.preset")
        overrides = {
            k: v for k, v in (("data", b.data), ("model", b.model), ("train", b.train), ("eval", b.eval)) if v
        }
        if overrides:
            cfg = TrialConfig.from_dict(merge(cfg.to_dict(), overrides), strict=True, where="base")
    except ConfigError as e:
        raise SpecError(f"{where}: {e}") from None
    return cfg


def axis_kind(name: str) -> str:
    """``known`` (a named axis), ``extra`` (``extra.<name>``) or ``config`` (``section.field``); else SpecError."""
    if name in KNOWN_AXES:
        return "known"
    if name.startswith("extra.") and len(name) > 6:
        return "extra"
    parts = name.split(".")
    if len(parts) == 2 and parts[0] in SECTIONS:
        known = SECTIONS[parts[0]].__dataclass_fields__
        if parts[1] in known:
            return "config"
        raise SpecError(
            f"unknown field {parts[1]!r} in section {parts[0]!r} (allowed: {', '.join(sorted(known))})"
        )
    raise SpecError(f"unknown axis (allowed: {', '.join(KNOWN_AXES)}; or {OTHER_AXES})")


def _number(v: Any, *, integer: bool, minimum: float, path: str, allow_none: bool = False) -> Any:
    if v is None and allow_none:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer:
        ok = float(v).is_integer()
    if not ok or v < minimum:
        kind = "an integer" if integer else "a number"
        extra = " or null" if allow_none else ""
        raise SpecError(f"{path}: expected {kind} >= {minimum:g}{extra}, got {v!r}")
    return int(v) if integer else float(v)


def _positive(v: Any, path: str) -> float:
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
        raise SpecError(f"{path}: expected a number > 0, got {v!r}")
    return float(v)


# axes that set widths themselves: a ``size`` axis scales them all and cannot be combined with them
SIZE_MOVES = (
    "width",
    "filter_ratio",
    "filter_channels",
    "model.hidden_channels",
    "model.inter_channels",
    "model.filter_channels",
    "model.upsample_initial_channel",
    "model.disc_width",
)
# two names for one config field: an axis may use only one of them
SAME_FIELD = {"lr": "train.learning_rate"}


def check_axis_names(names: set[str], where: str) -> None:
    """Refuse axes that set the same field twice (``lr`` and ``train.learning_rate``, ``size`` and ``width``)."""
    for short, full in SAME_FIELD.items():
        if {short, full} <= names:
            raise SpecError(f"{where}: axes.{full}: the same field as the {short!r} axis; give one of them")
    if "size" in names:
        clash = [n for n in SIZE_MOVES if n in names]
        if clash:
            raise SpecError(
                f"{where}: axes.size: scales every width from the base, so it cannot be combined with "
                f"{clash[0]!r} (set that width in base, or sweep width instead of size)"
            )


def scale_widths(m: dict[str, Any], base: dict[str, Any], size: float, ratio: float, path: str) -> None:
    """Apply a ``size`` multiplier to the model section ``m`` from the base model section ``base``."""
    heads = int(m["n_heads"])
    hidden = max(heads, heads * round(base["hidden_channels"] * size / heads))
    m["hidden_channels"] = m["inter_channels"] = hidden
    m["filter_channels"] = max(1, round(hidden * ratio))
    n_up = len(m["upsample_rates"])
    up = round(base["upsample_initial_channel"] * size)
    if up // 2**n_up < 1:
        raise SpecError(
            f"{path}: size {size:g} makes model.upsample_initial_channel {up}, but the decoder halves it at "
            f"each of its {n_up} upsampling stages (needs >= {2**n_up}); use a larger size"
        )
    m["upsample_initial_channel"] = up
    m["disc_width"] = float(base["disc_width"]) * size


def check_value(name: str, v: Any, path: str) -> Any:
    """Validate and normalise one axis value (config fields are type-checked when the point is built)."""
    if name in ("lr", "size", "train.learning_rate"):
        return _positive(v, path)
    if name == "width":
        if isinstance(v, dict):
            unknown = set(v) - {"hidden", "inter", "filter"}
            if unknown or "hidden" not in v:
                raise SpecError(
                    f"{path}: a width mapping needs 'hidden' and may have 'inter', 'filter'; got {v!r}"
                )
            return {k: _number(x, integer=True, minimum=1, path=f"{path}.{k}") for k, x in v.items()}
        return _number(v, integer=True, minimum=1, path=path)
    if name in ("n_layers", "n_heads", "filter_channels", "steps"):
        return _number(v, integer=True, minimum=1, path=path)
    if name == "filter_ratio":
        return _number(v, integer=False, minimum=1e-9, path=path)
    if name == "data_hours":
        return _number(v, integer=False, minimum=1e-9, path=path, allow_none=True)
    if name == "compute_budget":
        return _number(v, integer=False, minimum=1.0, path=path)
    return v


def sweep_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """All sweep points (axis name -> normalised value) before seeds and constraints."""
    where = spec.where()
    explicit: list[tuple[str, dict]] = [(f"points[{i}]", p) for i, p in enumerate(spec.points)]
    for i, lvl in enumerate(spec.isoflop):
        for j, size in enumerate(lvl.sizes):
            if "compute_budget" in size or "steps" in size:
                raise SpecError(
                    f"{where}: isoflop[{i}].sizes[{j}]: the budget comes from isoflop[{i}].budget; "
                    "remove compute_budget/steps"
                )
            explicit.append((f"isoflop[{i}].sizes[{j}]", {**size, "compute_budget": lvl.budget}))
    base_points: list[dict[str, Any]] = []
    for path, p in explicit:
        norm = {}
        for k, v in p.items():
            try:
                axis_kind(k)
            except SpecError as e:
                raise SpecError(f"{where}: {path}.{k}: {e}") from None
            norm[k] = check_value(k, v, f"{where}: {path}.{k}")
        overlap = set(norm) & set(spec.axes)
        if overlap:
            raise SpecError(
                f"{where}: axes.{sorted(overlap)[0]}: also set by {path}; give each axis in one place"
            )
        base_points.append(norm)
    check_axis_names(set(spec.axes) | {k for _, p in explicit for k in p}, where)
    axes: dict[str, list[Any]] = {}
    for k, values in spec.axes.items():
        try:
            axis_kind(k)
        except SpecError as e:
            raise SpecError(f"{where}: axes.{k}: {e}") from None
        if not values:
            raise SpecError(f"{where}: axes.{k}: empty list (give at least one value)")
        axes[k] = [check_value(k, v, f"{where}: axes.{k}[{i}]") for i, v in enumerate(values)]
    grid = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    return [{**p, **g} for p in (base_points or [{}]) for g in grid]


def build_point(spec: SweepSpec, base: TrialConfig, point: dict[str, Any], seed: int, *, check: bool = False):
    """Apply one point to the base config; returns (TrialConfig, axes)."""
    d = base.to_dict()
    m, t = d["model"], d["train"]
    ratio = spec.filter_ratio or (m["filter_channels"] / m["hidden_channels"])
    ratio = point.get("filter_ratio", ratio)
    for name, v in point.items():
        if name in ("n_layers", "n_heads", "filter_channels"):
            m[name] = v
        elif name == "data_hours":
            d["data"]["data_hours"] = v
        elif name == "compute_budget":
            t["compute_budget"], t["steps"] = v, None
        elif name == "steps":
            t["steps"], t["compute_budget"] = v, None
        elif name == "lr":
            t["learning_rate"] = v
        elif axis_kind(name) == "config":
            section, key = name.split(".")
            d[section][key] = copy.deepcopy(v)
    if "width" in point:
        w = point["width"]
        hidden = w["hidden"] if isinstance(w, dict) else w
        m["hidden_channels"] = hidden
        m["inter_channels"] = w.get("inter", hidden) if isinstance(w, dict) else hidden
        if isinstance(w, dict) and "filter" in w:
            m["filter_channels"] = w["filter"]
        elif "filter_channels" not in point:
            m["filter_channels"] = max(1, round(hidden * ratio))
    elif "filter_ratio" in point and "filter_channels" not in point:
        m["filter_channels"] = max(1, round(m["hidden_channels"] * ratio))
    if "size" in point:
        scale_widths(m, base.to_dict()["model"], point["size"], ratio, f"{spec.where()}: axes.size")
    t["seed"] = seed
    try:
        cfg = TrialConfig.from_dict(d, strict=True, where="axes")
    except ConfigError as e:
        raise SpecError(f"{spec.where()}: {e} (from the point {point})") from None
    return cfg, dict(point)


def constraint_env(cfg: TrialConfig, point: dict[str, Any], seed: int) -> dict[str, Any]:
    """Names a constraint can use: axes, short model/data/train names, and every config field as section.field."""
    env = {k: v for k, v in flatten(cfg.to_dict()).items() if "." in k}
    m = cfg.model
    env.update(
        width=m.hidden_channels,
        hidden_channels=m.hidden_channels,
        inter_channels=m.inter_channels,
        filter_channels=m.filter_channels,
        n_heads=m.n_heads,
        n_layers=m.n_layers,
        data_hours=cfg.data.data_hours,
        compute_budget=cfg.train.compute_budget,
        steps=cfg.train.steps,
        lr=cfg.train.learning_rate,
        seed=seed,
    )
    env.update({k: v for k, v in point.items() if not isinstance(v, dict)})
    return env
