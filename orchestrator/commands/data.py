"""CLI: data commands (``vits-scaling data synth|prepare|info|quality|g2p``)."""

from __future__ import annotations

from pathlib import Path

import typer

from model.config import DEFAULT_MIN_QUALITY, ConfigError
from orchestrator.commands._common import clean_errors, console, print_json
from orchestrator.commands.model import load_any_config

data_app = typer.Typer(
    help="Corpora and features: build the offline corpus, validate a corpus, fill the shared feature cache.",
    no_args_is_help=True,
)

_CONFIG = typer.Option(None, "--config", "-c", help="trial YAML/JSON or SBV2 config.json (default: defaults)")
_JSON = typer.Option(False, "--json", help="print one JSON object")


def _config(path: Path | None, corpus: str | None):
    cfg, _unknown = load_any_config(path)
    if corpus is not None:
        cfg.data.corpus = corpus
        if corpus != "builtin" and cfg.data.corpus_format == "builtin":
            cfg.data.corpus_format = "auto"
    return cfg


def _errors():
    from model.data.corpus import CorpusError  # model.data loads torch: only for the data commands
    from model.data.subsets import NotEnoughDataError
    from model.data.validate import DataValidationError

    return clean_errors(
        ConfigError, CorpusError, DataValidationError, NotEnoughDataError, ValueError, FileNotFoundError
    )


@data_app.command("synth")
def synth(
    hours: float = typer.Option(..., "--hours", "-H", help="hours of audio to synthesise"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (esd.list + wavs/)"),
    seed: int = typer.Option(
        0, "--seed", help="sentence generator seed (same seed: same corpus, byte for byte)"
    ),
    sample_rate: int = typer.Option(22050, "--sample-rate", help="output sample rate (Hz)"),
    speakers: int = typer.Option(
        4, "--speakers", help="synthetic speakers (pitch/speed variants of one voice)"
    ),
    workers: int = typer.Option(0, "--workers", help="processes (0: all cores, at most 8)"),
    degrade: float = typer.Option(
        0.0, "--degrade", help="fraction of utterances to degrade (noise, reverb, clipping, wrong text)"
    ),
    degrade_seed: int = typer.Option(0, "--degrade-seed", help="seed of the degradations"),
    as_json: bool = _JSON,
) -> None:
    """Build the built-in offline corpus: generated sentences spoken by Open JTalk's HTS voice."""
    from model.data.builtin import build_builtin_corpus  # torch, as in _errors

    with _errors():
        c = build_builtin_corpus(
            out,
            hours,
            seed,
            sample_rate,
            speakers,
            workers or None,
            progress=not as_json,
            degrade=degrade,
            degrade_seed=degrade_seed,
        )
    res = {
        "esd_list": str(c.esd_list),
        "utterances": c.n_items,
        "hours": round(c.hours, 4),
        "synthesized": c.synthesized,
        "synthesized_beyond_target": c.beyond,
        "reused": c.synthesized == 0,
        "synth_seconds": round(c.synth_seconds, 2),
    }
    if degrade:
        from model.data.quality_report import read_degradations  # torch, as in _errors

        deg = read_degradations(c.dir)
        res["degraded"] = len(deg)
        res["degradations"] = str(c.dir / "degradations.tsv")
    if as_json:
        print_json(res)
        return
    what = "reused (already built)" if res["reused"] else f"synthesised {c.synthesized} utterances"
    if c.beyond:
        what += f" ({c.beyond} past the target, kept on disk for a larger build; not in esd.list)"
    console.print(f"{c.esd_list}: {c.n_items} utterances, {c.hours:.3f} h, {what}")
    if degrade:
        console.print(f"degraded {res['degraded']} utterances (list: {res['degradations']})")


@data_app.command("prepare")
def prepare(
    corpus: str = typer.Argument(
        ..., help="'builtin', a corpus directory (JSUT, JVS, esd.list dir) or esd.list"
    ),
    config: Path | None = _CONFIG,
    hours: float | None = typer.Option(None, "--hours", help="only this training subset (data.data_hours)"),
    workers: int = typer.Option(0, "--workers", help="processes (0: data.prepare_workers or auto)"),
    as_json: bool = _JSON,
) -> None:
    """Validate a corpus and fill the shared feature cache; a second run does no work."""
    from model.data import prepare_data  # torch, as in _errors

    with _errors():
        cfg = _config(config, corpus)
        if hours is not None:
            cfg.data.data_hours = hours
        p = prepare_data(cfg, progress=not as_json, workers=workers or None)
    s = p.summary()
    if as_json:
        print_json(s)
        return
    from rich.table import Table

    t = Table(title=f"prepared {s['corpus']}")
    t.add_column("")
    t.add_column("computed", justify="right")
    t.add_column("reused", justify="right")
    t.add_row("audio features", str(s["audio_computed"]), str(s["audio_reused"]))
    t.add_row("text features", str(s["text_computed"]), str(s["text_reused"]))
    console.print(t)
    console.print(
        f"{s['utterances']} utterances ({s['dropped']} dropped), {s['speakers']} speakers; training subset "
        f"{s['data_hours']:.3f} h of {s['available_hours']:.3f} h available, {s['val_utterances']} held out"
    )
    console.print(f"cache: {s['audio_cache']}  {s['text_cache']}")
    if s["dropped"]:
        console.print(f"dropped items: {Path(s['manifest_dir']) / 'dropped.tsv'}")


@data_app.command("info")
def info(
    corpus: str = typer.Argument(..., help="'builtin', a corpus directory or esd.list"),
    config: Path | None = _CONFIG,
    as_json: bool = _JSON,
) -> None:
    """Validate a corpus (cached) and print its size, speakers, available hours and dropped items."""
    from collections import Counter

    from model.data import load_validated_manifest  # torch, as in _errors
    from model.data.subsets import split

    with _errors():
        cfg = _config(config, corpus)
        d = cfg.data
        info_, items, report, mdir = load_validated_manifest(d, progress=not as_json)
        sp = split(items, d.val_utterances, d.subset_seed)
    spk = Counter(i.speaker for i in items)
    res = {
        "corpus": str(info_.path),
        "format": info_.format,
        "utterances": len(items),
        "hours": round(sum(i.duration for i in items) / 3600, 4),
        "available_hours": round(sp.available_hours, 4),
        "val_utterances": len(sp.heldout),
        "speakers": dict(sorted(spk.items())),
        "dropped": report.counts(),
        "dropped_list": str(mdir / "dropped.tsv"),
    }
    if as_json:
        print_json(res)
        return
    console.print(
        f"{res['corpus']} ({res['format']}): {res['utterances']} utterances, {res['hours']:.3f} h, "
        f"{len(spk)} speakers; {res['available_hours']:.3f} h available for training after holding out "
        f"{res['val_utterances']}"
    )
    if report.dropped:
        console.print(f"dropped {len(report.dropped)}: {res['dropped']} (list: {res['dropped_list']})")


@data_app.command("quality")
def quality(
    corpus: str = typer.Argument(
        ..., help="'builtin', a corpus directory or esd.list, or a name from data.corpora"
    ),
    config: Path | None = _CONFIG,
    out: Path | None = typer.Option(None, "--out", "-o", help="write the per-utterance table (.tsv/.csv)"),
    min_quality: str = typer.Option(
        "default",
        "--min-quality",
        help=f"filter whose pass rate is shown; 'default' is: {DEFAULT_MIN_QUALITY}",
    ),
    dnsmos: bool = typer.Option(True, "--dnsmos/--no-dnsmos", help="also DNSMOS (~0.35 s/utterance/core)"),
    workers: int = typer.Option(0, "--workers", help="processes (0: data.prepare_workers or auto)"),
    as_json: bool = _JSON,
) -> None:
    """Per-utterance quality scores (cached per corpus): distributions, per degradation kind, and a table."""
    from model.data import load_validated_manifest  # torch, as in _errors
    from model.data.quality import score_corpus
    from model.data.quality_report import read_degradations, summarize, table_rows, write_table
    from model.data.select import parse_quality
    from model.data.sources import default_workers

    with _errors():
        cfg = _config(config, corpus)
        d = cfg.data
        if corpus in (d.corpora or {}):
            d.corpus = d.corpora[corpus]
            if d.corpus != "builtin" and d.corpus_format == "builtin":
                d.corpus_format = "auto"
        parse_quality(min_quality, "--min-quality")
        info_, items, _report, _ = load_validated_manifest(d, progress=not as_json)
        groups = ("signal", "dnsmos") if dnsmos else ("signal",)
        table = score_corpus(
            items, d.cache_dir, groups=groups, workers=workers or default_workers(d), progress=not as_json
        )
        deg = read_degradations(info_.path)
        summary = summarize(items, table, deg, min_quality)
        if out is not None:
            write_table(out, table_rows(items, table, deg))
    summary.update(
        corpus=str(info_.path),
        computed=table.stats.computed,
        reused=table.stats.reused,
        seconds=round(table.stats.seconds, 2),
        table=str(out) if out else None,
    )
    if as_json:
        print_json(summary)
        return
    from rich.table import Table

    t = Table(title=f"quality scores of {summary['corpus']} ({summary['utterances']} utterances)")
    t.add_column("score")
    for c in ("mean", "p5", "p25", "p50", "p75", "p95", "nan"):
        t.add_column(c, justify="right")
    for name, st in summary["scores"].items():
        t.add_row(name, *(_fmt(st[c]) for c in ("mean", "p5", "p25", "p50", "p75", "p95")), str(st["nan"]))
    console.print(t)
    if "by_kind" in summary:
        names = table.names
        k = Table(title="mean score per degradation kind")
        k.add_column("kind")
        k.add_column("n", justify="right")
        for n in names:
            k.add_column(n, justify="right")
        k.add_column("pass", justify="right")
        for kind, row in summary["by_kind"].items():
            k.add_row(kind, str(row["n"]), *(_fmt(row[n]) for n in names), _fmt(row.get("pass_fraction")))
        console.print(k)
    if "pass_fraction" in summary:
        console.print(f"passing {min_quality!r}: {summary['pass_fraction']:.1%}")
    else:
        console.print(f"[yellow]{summary.get('pass_error')}[/]")
    done = ", ".join(
        f"{g} {n} computed, {table.stats.reused[g]} reused" for g, n in table.stats.computed.items()
    )
    console.print(f"scores: {done} (cache: {', '.join(table.stats.dirs.values())})")
    if out is not None:
        console.print(f"table: {out}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 0.01 and v != 0:
        return f"{v:.2e}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


@data_app.command("g2p")
def g2p_cmd(text: str = typer.Argument(..., help="Japanese text"), as_json: bool = _JSON) -> None:
    """Show the normalised text, phones with tones, and word2ph of a sentence."""
    from model.text.g2p import g2p  # pyopenjtalk (native): only for `data g2p`

    r = g2p(text)
    if as_json:
        print_json({"text": r.text, "phones": r.phones, "tones": r.tones, "word2ph": r.word2ph})
        return
    console.print(f"text:    {r.text}")
    console.print(
        "phones:  " + " ".join(f"{p}{'↑' if t else ''}" for p, t in zip(r.phones, r.tones, strict=True))
    )
    console.print(f"word2ph: {r.word2ph}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(data_app, name="data")
