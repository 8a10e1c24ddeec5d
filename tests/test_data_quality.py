"""Degraded built-in corpus and per-utterance quality scores: known damage is found, the cache is reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_data import builtin_corpus, data_cfg  # noqa: F401 - fixture
from fixtures_quality import (  # noqa: F401 - fixtures
    DEGRADE,
    DEGRADED_HOURS,
    degraded_corpus,
    degraded_scores,
    quality_cache,
)
from typer.testing import CliRunner

from model.data.builtin import build_builtin_corpus
from model.data.builtin.degrade import KINDS
from model.data.quality import DEFAULT_MIN_QUALITY, score_corpus
from model.data.quality_report import read_degradations
from model.data.select import filter_passing
from orchestrator.cli import app


def _lines(c) -> list[str]:
    return c.esd_list.read_text(encoding="utf-8").splitlines()


def test_degraded_corpus_layout(degraded_corpus, builtin_corpus):  # noqa: F811
    c = degraded_corpus
    deg = read_degradations(c.dir)
    assert (c.dir / "degradations.tsv").read_text().startswith("id\tkind\tparameter\n")
    # a stated fraction, every kind about equally often
    assert abs(len(deg) / c.n_items - DEGRADE) < 0.1
    kinds = [k for k, _ in deg.values()]
    assert {kinds.count(k) for k in KINDS} <= {len(deg) // 4, len(deg) // 4 + 1}
    # the clean audio is the clean corpus of the same seed, byte for byte; undegraded lines are identical
    clean = {p.name: p.read_bytes() for p in (builtin_corpus.dir / "wavs").glob("*.wav")}
    for name, data in clean.items():
        assert (c.dir / "wavs" / name).read_bytes() == data
    clean_lines = _lines(builtin_corpus)
    for ref, line in zip(clean_lines, _lines(c), strict=False):
        uid = line.split("|")[0].rsplit("/", 1)[-1][:-4]
        if uid in deg:
            kind, param = deg[uid]
            assert line != ref
            if kind == "wrong_transcript":
                assert line.startswith(f"wavs/{uid}.wav|") and line.split("|")[3] != ref.split("|")[3]
                assert "phone_ratio=" in param
            else:
                assert line.startswith(f"degraded/{uid}.wav|") and line.split("|")[1:] == ref.split("|")[1:]
                x, _ = sf.read(c.dir / "degraded" / f"{uid}.wav", dtype="int16")
                y, _ = sf.read(c.dir / "wavs" / f"{uid}.wav", dtype="int16")
                assert len(x) == len(y) and not np.array_equal(x, y)
        else:
            assert line == ref
    # utterances.tsv keeps what was spoken
    side = (c.dir / "utterances.tsv").read_text(encoding="utf-8").splitlines()
    assert len(side) == c.n_items + 1


def test_degradation_is_deterministic_and_reversible(degraded_corpus, tmp_path):  # noqa: F811
    c = degraded_corpus
    # the same arguments elsewhere (clean wavs copied, so nothing is synthesised): byte-identical
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copytree(c.dir / "wavs", other / "wavs")
    shutil.copy(c.dir / "params.json", other / "params.json")
    b = build_builtin_corpus(
        other, DEGRADED_HOURS, 0, 16000, 2, workers=1, progress=False, degrade=DEGRADE, degrade_seed=0
    )
    assert b.synthesized == 0
    for name in ("esd.list", "degradations.tsv", "utterances.tsv"):
        assert (other / name).read_bytes() == (c.dir / name).read_bytes(), name
    for p in (c.dir / "degraded").glob("*.wav"):
        assert (other / "degraded" / p.name).read_bytes() == p.read_bytes()
    # reuse: same arguments again do nothing
    again = build_builtin_corpus(other, DEGRADED_HOURS, 0, 16000, 2, progress=False, degrade=DEGRADE)
    assert again.synthesized == 0 and again.n_items == c.n_items
    # another degradation seed picks other utterances; degrade 0 gives back the clean corpus
    s1 = build_builtin_corpus(
        other, DEGRADED_HOURS, 0, 16000, 2, progress=False, degrade=DEGRADE, degrade_seed=1
    )
    assert s1.synthesized == 0 and read_degradations(other) != read_degradations(c.dir)
    clean = build_builtin_corpus(other, DEGRADED_HOURS, 0, 16000, 2, progress=False)
    assert not (other / "degradations.tsv").exists() and not any((other / "degraded").glob("*"))
    assert all(line.startswith("wavs/") for line in _lines(clean))
    with pytest.raises(ValueError, match="degrade fraction"):
        build_builtin_corpus(other, DEGRADED_HOURS, 0, 16000, 2, progress=False, degrade=1.5)


def test_scores_rank_degraded_utterances_low(degraded_scores):  # noqa: F811
    items, table, deg = degraded_scores
    ids = [i.id for i in items]
    passing = filter_passing(items, DEFAULT_MIN_QUALITY, table)
    bad = [u for u in ids if u in deg]
    good = [u for u in ids if u not in deg]
    caught = sum(u not in passing for u in bad) / len(bad)
    false_alarm = sum(u not in passing for u in good) / len(good)
    assert caught >= 0.8, f"only {caught:.0%} of the degraded utterances fail {DEFAULT_MIN_QUALITY!r}"
    assert false_alarm <= 0.1, f"{false_alarm:.0%} of the clean utterances fail the default filter"

    s = table.scores
    by_kind = {k: [u for u in bad if deg[u][0] == k] for k in KINDS}
    assert all(by_kind.values())
    clean_snr = np.array([s[u]["snr_db"] for u in good])
    assert np.mean(clean_snr >= 30) >= 0.9
    for u in by_kind["noise"]:  # the SNR estimate finds the stated SNR (a few dB high: P90 vs active level)
        stated = float(deg[u][1].split("=")[1])
        assert stated - 1 <= s[u]["snr_db"] <= stated + 6, (u, stated, s[u]["snr_db"])
        assert s[u]["dnsmos_bak"] < min(s[g]["dnsmos_bak"] for g in good)
    for u in by_kind["reverb"]:  # reverberation fills the pauses
        assert s[u]["snr_db"] < 30
    assert np.mean([s[u]["dnsmos_ovrl"] for u in by_kind["noise"] + by_kind["reverb"]]) < np.mean(
        [s[u]["dnsmos_ovrl"] for u in good]
    )
    assert max(s[u]["clip_ratio"] for u in good) < 1e-3 < min(s[u]["clip_ratio"] for u in by_kind["clip"])
    # a wrong transcript stands out of the speaking-rate distribution; clean ones do not
    assert min(s[u]["transcript_absz"] for u in by_kind["wrong_transcript"]) > 3
    assert np.mean([s[u]["transcript_absz"] <= 3 for u in good]) >= 0.95
    assert all(10 < s[u]["speaking_rate"] < 20 for u in good)  # phones per second of HTS speech


def test_quality_cache_is_reused(degraded_scores, quality_cache):  # noqa: F811
    items, table, _ = degraded_scores
    for g in ("signal", "dnsmos"):  # the mixture tests may have scored the signal group already
        assert table.stats.computed[g] + table.stats.reused[g] == len(items)
    again = score_corpus(items, quality_cache, groups=("dnsmos", "signal"), workers=2)
    assert again.stats.computed == {"signal": 0, "dnsmos": 0}
    assert again.stats.reused == {"signal": len(items), "dnsmos": len(items)}
    for u in table.scores:
        assert again.scores[u] == pytest.approx(table.scores[u], nan_ok=True)
    for d in map(Path, again.stats.dirs.values()):
        key = json.loads((d / "key.json").read_text())
        assert key["corpus"] == table.corpus_fp and list(d.glob("part-*.tsv"))
    # another corpus (here: a part of it) has another fingerprint, so its own entry
    part = score_corpus(items[:3], quality_cache, groups=("signal",))
    assert part.stats.computed == {"signal": 3}


def test_quality_command(degraded_corpus, degraded_scores, quality_cache, tmp_path):  # noqa: F811
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data:\n  sampling_rate: 16000\n  cache_dir: {quality_cache}\n  val_utterances: 3\n"
        f"  prepare_workers: 1\n  corpora:\n    deg: {degraded_corpus.dir}\n"
    )
    out = tmp_path / "q.csv"
    r = CliRunner().invoke(app, ["data", "quality", "deg", "--config", str(cfg), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["computed"] == {"signal": 0, "dnsmos": 0}  # cached by the fixture
    assert res["by_kind"]["clean"]["pass_fraction"] >= 0.9
    for k in KINDS:
        assert res["by_kind"][k]["pass_fraction"] <= 0.25
    assert set(res["scores"]) >= {"dnsmos_ovrl", "snr_db", "clip_ratio", "speaking_rate", "transcript_absz"}
    rows = out.read_text().splitlines()
    assert rows[0].startswith("id,speaker,duration,degradation,parameter,dnsmos_sig")
    assert len(rows) == degraded_corpus.n_items + 1
    # synth --degrade on the built corpus: reused, reports the degradations
    r = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            "--hours",
            str(DEGRADED_HOURS),
            "--out",
            str(degraded_corpus.dir),
            "--sample-rate",
            "16000",
            "--speakers",
            "2",
            "--degrade",
            str(DEGRADE),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["reused"] and res["degraded"] == len(read_degradations(degraded_corpus.dir))
    # a bad filter is a clean error
    r = CliRunner().invoke(app, ["data", "quality", "deg", "--config", str(cfg), "--min-quality", "mos > 3"])
    assert r.exit_code == 2 and "unknown score 'mos'" in r.output


def test_degraded_builtin_corpus_gets_its_own_directory():
    from model.config import DataConfig
    from model.data.sources import builtin_dir

    d = DataConfig()
    clean = builtin_dir(d)
    d.builtin_degrade = 0.3
    assert builtin_dir(d) != clean and "degrade0.3-dseed0" in builtin_dir(d).name
    d.builtin_degrade_seed = 1
    assert builtin_dir(d).name.endswith("degrade0.3-dseed1")


def test_concurrent_scorers_compute_once(degraded_scores, tmp_path):  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    items = degraded_scores[0][:6]
    with ThreadPoolExecutor(3) as ex:
        tables = list(ex.map(lambda _: score_corpus(items, tmp_path, groups=("signal",)), range(3)))
    assert sum(t.stats.computed["signal"] for t in tables) == len(items)  # the others waited and reused
    assert all(t.scores == tables[0].scores for t in tables)
    assert not list(tmp_path.rglob("*.tmp"))
