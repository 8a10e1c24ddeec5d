"""The built-in offline corpus: deterministic byte for byte, reused when built, extended when grown."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from fixtures_data import CORPUS_HOURS, builtin_corpus  # noqa: F401 - fixture

from model.data.builtin import build_builtin_corpus
from model.data.corpus import read_esd_list
from model.text import symbols
from model.text.g2p import g2p


def test_corpus_layout_and_content(builtin_corpus):  # noqa: F811
    c = builtin_corpus
    assert c.hours >= CORPUS_HOURS and c.n_items >= 12
    items, problems = read_esd_list(c.esd_list)
    assert len(items) == c.n_items and not problems
    assert {i.speaker for i in items} == {"mei_a", "mei_b"}
    seen = set()
    total = 0.0
    for it in items:
        x, sr = sf.read(it.path, dtype="float32")
        assert sr == 16000 and x.ndim == 1
        assert 0.5 < np.abs(x).max() <= 0.91  # peak-normalised, not clipped
        total += len(x) / sr
        seen.update(g2p(it.text).phones)
    assert abs(total - c.seconds) < 0.01
    missing = [p for p in symbols.JA_PHONES if p not in seen]
    assert not missing, f"built-in corpus misses phones {missing}"
    side = (c.dir / "utterances.tsv").read_text(encoding="utf-8").splitlines()
    assert side[0].startswith("id\tspeaker\thalf_tone\tspeed") and len(side) == c.n_items + 1


def test_same_seed_same_bytes_and_reuse(builtin_corpus, tmp_path):  # noqa: F811
    # a smaller corpus with the same seed is a byte-identical prefix of the fixture's
    small = build_builtin_corpus(
        tmp_path / "a", 0.002, seed=0, sample_rate=16000, speakers=2, workers=1, progress=False
    )
    assert small.synthesized >= small.n_items >= 1
    ref = {p.name: p.read_bytes() for p in (builtin_corpus.dir / "wavs").glob("*.wav")}
    for p in (small.dir / "wavs").glob("*.wav"):
        assert p.read_bytes() == ref[p.name]
    ref_lines = builtin_corpus.esd_list.read_text(encoding="utf-8").splitlines()
    assert small.esd_list.read_text(encoding="utf-8").splitlines() == ref_lines[: small.n_items]
    # built again with the same arguments: nothing synthesised, files untouched
    stamp = (small.dir / "esd.list").stat().st_mtime_ns
    again = build_builtin_corpus(tmp_path / "a", 0.002, seed=0, sample_rate=16000, speakers=2, progress=False)
    assert again.synthesized == 0 and again.n_items == small.n_items
    assert (small.dir / "esd.list").stat().st_mtime_ns == stamp
    # grown: the existing wavs are kept, only new ones are made
    grown = build_builtin_corpus(
        tmp_path / "a", 0.004, seed=0, sample_rate=16000, speakers=2, workers=1, progress=False
    )
    assert grown.n_items > small.n_items
    assert grown.synthesized < grown.n_items


def test_other_seed_other_sentences(tmp_path):
    a = build_builtin_corpus(
        tmp_path / "s1", 0.001, seed=1, sample_rate=8000, speakers=1, workers=1, progress=False
    )
    lines = a.esd_list.read_text(encoding="utf-8").splitlines()
    assert lines and all("|mei_a|JP|" in line for line in lines)
    x, sr = sf.read(a.dir / "wavs" / "utt000000.wav")
    assert sr == 8000


@pytest.mark.slow
def test_parallel_build_is_byte_identical(builtin_corpus, tmp_path):  # noqa: F811
    par = build_builtin_corpus(
        tmp_path / "p", CORPUS_HOURS, seed=0, sample_rate=16000, speakers=2, workers=2, progress=False
    )
    assert par.esd_list.read_bytes() == builtin_corpus.esd_list.read_bytes()
    for p in (builtin_corpus.dir / "wavs").glob("*.wav"):
        assert (par.dir / "wavs" / p.name).read_bytes() == p.read_bytes()
