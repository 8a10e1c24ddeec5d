"""Corpus readers (esd.list, JSUT, JVS) on small fixtures in each layout, and every validation case."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
from fixtures_data import data_cfg, tone_wav

from model.data.corpus import CorpusError, detect_format, read_corpus
from model.data.sources import load_validated_manifest
from model.data.validate import DataValidationError, validate


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def make_jsut(root):
    sub = root / "jsut_ver1.1" / "basic5000"
    tone_wav(sub / "wav" / "BASIC5000_0001.wav", 1.0, 48000)
    tone_wav(sub / "wav" / "BASIC5000_0002.wav", 1.2, 48000)
    (sub / "transcript_utf8.txt").write_text(
        "BASIC5000_0001:水をマレーシアから買わなくてはならないのです。\nBASIC5000_0002:木曜日、停電になります。\n",
        encoding="utf-8",
    )
    return root / "jsut_ver1.1"


def make_jvs(root):
    base = root / "jvs_ver1"
    for spk in ("jvs001", "jvs002"):
        for sub, ids in (("parallel100", ["VOICEACTRESS100_001"]), ("nonpara30", ["BASIC5000_0025"])):
            d = base / spk / sub
            for i in ids:
                tone_wav(d / "wav24kHz16bit" / f"{i}.wav", 0.8, 24000)
            (d / "transcripts_utf8.txt").write_text(
                "\n".join(f"{i}:今日は良い天気です。" for i in ids) + "\n"
            )
    return base


def make_esd(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "esd.list").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "esd.list"


def test_read_jsut(tmp_path):
    root = make_jsut(tmp_path)
    assert detect_format(root) == "jsut"
    items, problems = read_corpus(root)
    assert [i.id for i in items] == ["BASIC5000_0001", "BASIC5000_0002"]
    assert {i.speaker for i in items} == {"jsut"} and not problems
    assert items[1].text == "木曜日、停電になります。"
    assert items[1].source.endswith("transcript_utf8.txt:2")
    manifest, report = validate(items, expected_sample_rate=48000)
    assert [m.sample_rate for m in manifest] == [48000, 48000]
    assert abs(manifest[1].duration - 1.2) < 1e-6 and report.kept == 2


def test_read_jvs(tmp_path):
    root = make_jvs(tmp_path)
    assert detect_format(root) == "jvs"
    items, _ = read_corpus(root)
    assert len(items) == 4
    assert {i.speaker for i in items} == {"jvs001", "jvs002"}
    assert "jvs002_BASIC5000_0025" in {i.id for i in items}
    manifest, report = validate(items)
    assert len(manifest) == 4 and report.expected_sample_rate == 24000


def test_read_esd_list_paths_and_bad_lines(tmp_path):
    tone_wav(tmp_path / "c" / "wavs" / "a.wav")
    tone_wav(tmp_path / "c" / "b.wav")
    lst = make_esd(
        tmp_path / "c",
        ["a.wav|spk1|JP|こんにちは。", "b.wav|spk2|JA|さようなら。", "broken line", "c.wav|spk1|EN|hello"],
    )
    assert detect_format(lst.parent) == "esd"
    items, problems = read_corpus(lst)
    assert [(i.id, i.speaker) for i in items] == [("a", "spk1"), ("b", "spk2")]
    assert items[0].path == str((tmp_path / "c" / "wavs" / "a.wav").resolve())
    assert [p[0].rsplit(":", 1)[1] for p in problems] == ["3", "4"]
    with pytest.raises(CorpusError, match=r"esd\.list:3"):
        read_corpus(lst, strict=True)


def test_unknown_layout(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CorpusError, match="layout"):
        detect_format(tmp_path / "x")


@pytest.fixture
def bad_corpus(tmp_path):
    c = tmp_path / "bad"
    tone_wav(c / "ok.wav", 1.0)
    tone_wav(c / "ok2.wav", 1.5)
    tone_wav(c / "short.wav", 0.1)
    tone_wav(c / "long.wav", 4.0)
    tone_wav(c / "silent.wav", 1.0, amp=0.0)
    tone_wav(c / "rate.wav", 1.0, sr=22050)
    tone_wav(c / "blank.wav", 1.0)
    tone_wav(c / "emoji.wav", 1.0)
    t = np.arange(16000) / 16000
    sf.write(c / "clipped.wav", np.clip(2.0 * np.sin(2 * np.pi * 200 * t), -1, 1).astype(np.float32), 16000)
    (c / "garbage.wav").write_bytes(b"RIFF not really a wav file")
    rows = [
        "ok.wav|s|JP|今日は良い天気です。",
        "ok2.wav|s|JP|明日は雨でしょう。",
        "missing.wav|s|JP|ファイルがありません。",
        "garbage.wav|s|JP|壊れています。",
        "blank.wav|s|JP|   ",
        "short.wav|s|JP|短い。",
        "long.wav|s|JP|長い。",
        "silent.wav|s|JP|静か。",
        "clipped.wav|s|JP|割れています。",
        "rate.wav|s|JP|違うレート。",
        "emoji.wav|t|JP|😀🎉",  # nothing speakable
        "ok.wav|s|JP|同じファイルです。",
        "only punctuation",
    ]
    return make_esd(c, rows)


def test_validation_cases_lenient(bad_corpus, tmp_path):
    before = _tree_digest(bad_corpus.parent)
    cfg = data_cfg(bad_corpus, tmp_path / "cache", min_duration_s=0.3, max_duration_s=3.0)
    info, items, report, mdir = load_validated_manifest(cfg)
    assert [i.id for i in items] == ["ok", "ok2"]
    reasons = {d.source.rsplit(":", 1)[1]: d.code for d in report.dropped}
    assert reasons == {
        "13": "bad_line",
        "3": "missing_audio",
        "4": "unreadable_audio",
        "5": "empty_text",
        "6": "too_short",
        "7": "too_long",
        "8": "silent",
        "9": "clipped",
        "10": "sample_rate_mismatch",
        "11": "empty_text",
        "12": "duplicate_id",
    }
    assert report.total == 13 and report.kept == 2
    dropped = (mdir / "dropped.tsv").read_text(encoding="utf-8").splitlines()
    assert len(dropped) == 1 + 11 and dropped[0].startswith("source\tid")
    assert any("missing.wav" in line and "missing_audio" in line for line in dropped)
    assert _tree_digest(bad_corpus.parent) == before  # the source is never modified


def test_text_checks():
    from model.data.validate import check_text

    assert check_text("   ").startswith("empty_text")
    assert check_text("😀🎉").startswith("empty_text")
    assert check_text("、。！").startswith("unparseable_text")
    assert check_text("こんにちは") is None


def test_validation_strict_names_file_and_line(bad_corpus, tmp_path):
    cfg = data_cfg(bad_corpus, tmp_path / "cache", strict=True, max_duration_s=3.0)
    with pytest.raises((DataValidationError, CorpusError), match=r"esd\.list:13"):
        load_validated_manifest(cfg)  # the malformed line is reported by the strict reader
    # without the malformed line the first bad item is the missing file on line 3
    lines = bad_corpus.read_text(encoding="utf-8").splitlines()[:-1]
    bad_corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"esd\.list:3: missing: missing_audio.*and 9 more"):
        load_validated_manifest(cfg)


def test_validated_manifest_is_cached(bad_corpus, tmp_path, monkeypatch):
    cfg = data_cfg(bad_corpus, tmp_path / "cache", max_duration_s=3.0)
    _, items, _, mdir = load_validated_manifest(cfg)
    import model.data.sources as prep

    def boom(*a, **k):
        raise AssertionError("validated again")

    monkeypatch.setattr(prep, "validate", boom)
    _, items2, report2, mdir2 = load_validated_manifest(cfg)
    assert mdir2 == mdir and [i.id for i in items2] == [i.id for i in items] and len(report2.dropped) == 11


def test_prepare_resamples_jvs_to_the_configured_rate(tmp_path):
    from model.data import prepare_data

    root = make_jvs(tmp_path)
    cfg = data_cfg(root, tmp_path / "cache", val_utterances=1)
    p = prepare_data(cfg)
    assert p.corpus.format == "jvs" and p.spk2id == {"jvs001": 0, "jvs002": 1}
    a, t = p.cache.load(p.train_items[0].id)
    assert a["wav"].numel() == (int(0.8 * 16000) // 128) * 128  # 24 kHz source -> 16 kHz, whole hops
    assert t["text"] == "今日は良い天気です."
