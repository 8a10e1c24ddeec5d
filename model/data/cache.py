"""The shared feature cache: computed once per (corpus, feature settings), reused by every trial.

Two directories under ``data.cache_dir``, each named by a digest of its key (the key is also written as
``key.json`` inside, for people):

- ``audio-<digest>/``: per utterance the waveform at ``sampling_rate`` (int16, trimmed to a whole number of
  hops) and its linear magnitude spectrogram (float16, from ``model.audio.spectrogram``: the one
  implementation), plus the log-mel when ``data.cache_mel``. Key: corpus fingerprint, sampling_rate,
  filter_length (n_fft), hop_length, win_length, and n_mels/fmin/fmax when the mel is stored.
- ``text-<digest>/``: per utterance the normalised text, phones, tones, word2ph and, with text features on
  (model/text/features.py), the per-character feature rows (float16, ``len(text) + 2`` rows; expanded to
  phones at load time) and/or the sentence vector, and the FLOPs they cost; ``features.json`` has the
  text model's parameter count and width. Key: corpus fingerprint, frontend version, symbol-table digest,
  text-feature model id (or ``"none"``) and layers, plus kind / level / pooling / projection for anything
  but the default BERT path (whose key is unchanged). A directory whose ``key.json`` disagrees with the
  key asked for (copied by hand) is refused, naming the field.

A change to any key field gives a new directory (a rebuild); old ones stay until deleted. Every file is
written to a temporary name and renamed, so a reader never sees half a file, and ``prepare`` holds an
exclusive ``flock`` on the directory while it fills it, so trials starting together compute each item
once: the first computes, the others wait and then find everything present. ``prepare`` returns how many
items it computed and reused (the second run computes nothing).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from model.data.files import atomic_write_bytes, atomic_write_text, file_lock, progress_bar
from model.data.manifest import ManifestItem

AUDIO_VERSION = 1


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def item_filename(item_id: str) -> str:
    """``<2-hex shard>/<safe id>.pt``; ids with unsafe characters get a digest suffix (no collisions)."""
    h = hashlib.sha1(item_id.encode()).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id)
    if safe != item_id:
        safe = f"{safe}-{h[:8]}"
    return f"{h[:2]}/{safe}.pt"


@dataclass
class PrepareStats:
    audio_computed: int = 0
    audio_reused: int = 0
    text_computed: int = 0
    text_reused: int = 0
    text_flops: int = 0  # text-model forward FLOPs of these items' features (computed now or cached)
    seconds: float = 0.0
    audio_dir: str = ""
    text_dir: str = ""

    @property
    def computed(self) -> int:
        """Items of work done (audio + text); 0 when everything was already cached."""
        return self.audio_computed + self.text_computed


def audio_key(corpus_fp: str, d) -> dict:
    key = {
        "kind": "audio",
        "version": AUDIO_VERSION,
        "corpus": corpus_fp,
        "sampling_rate": d.sampling_rate,
        "n_fft": d.filter_length,
        "hop": d.hop_length,
        "win": d.win_length,
    }
    if d.cache_mel:
        key["mel"] = {"n_mels": d.n_mel_channels, "fmin": d.mel_fmin, "fmax": d.mel_fmax}
    return key


def text_key(corpus_fp: str, d) -> dict:
    from model.text.features import cache_key
    from model.text.g2p import FRONTEND_VERSION
    from model.text.symbols import table_hash

    return {
        "kind": "text",
        "corpus": corpus_fp,
        "frontend": FRONTEND_VERSION,
        "symbols": table_hash(),
        **cache_key(d),
    }


def compute_audio(path: str, sr: int, n_fft: int, hop: int, win: int, mel: dict | None) -> dict:
    """Read, mix to mono, resample to ``sr``, quantise to int16, trim to whole hops, spectrogram."""
    import soundfile as sf
    import torchaudio

    from model.audio import spec_to_mel, spectrogram

    x, src_sr = sf.read(path, dtype="float32", always_2d=True)
    wav = torch.from_numpy(x.mean(axis=1))
    if src_sr != sr:
        wav = torchaudio.functional.resample(wav, src_sr, sr)
    pcm = torch.clamp(torch.round(wav * 32767.0), -32768, 32767).to(torch.int16)
    frames = pcm.numel() // hop
    if frames < 1:
        raise ValueError(f"{path}: shorter than one hop ({hop} samples at {sr} Hz)")
    pcm = pcm[: frames * hop]
    spec = spectrogram(pcm.float().unsqueeze(0) / 32768.0, n_fft, hop, win)[0]
    out = {"wav": pcm, "spec": spec.to(torch.float16), "frames": frames}
    if mel is not None:
        m = spec_to_mel(spec.unsqueeze(0), sr, n_fft, mel["n_mels"], mel["fmin"], mel["fmax"])[0]
        out["mel"] = m.to(torch.float16)
    return out


def _save(obj: dict, path: Path) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return buf.tell()


def _audio_job(args) -> int:
    path, out, sr, n_fft, hop, win, mel = args
    torch.set_num_threads(1)
    return _save(compute_audio(path, sr, n_fft, hop, win, mel), Path(out))


class FeatureCache:
    def __init__(self, root: str | Path, corpus_fp: str, data_cfg) -> None:
        self.cfg = data_cfg
        self.root = Path(root)
        self.audio_key = audio_key(corpus_fp, data_cfg)
        self.text_key = text_key(corpus_fp, data_cfg)
        self.audio_dir = self.root / f"audio-{_digest(self.audio_key)}"
        self.text_dir = self.root / f"text-{_digest(self.text_key)}"

    def audio_path(self, item_id: str) -> Path:
        return self.audio_dir / item_filename(item_id)

    def text_path(self, item_id: str) -> Path:
        return self.text_dir / item_filename(item_id)

    def _init_dir(self, d: Path, key: dict) -> None:
        d.mkdir(parents=True, exist_ok=True)
        f = d / "key.json"
        if not f.is_file():
            atomic_write_text(f, json.dumps(key, indent=1, ensure_ascii=False))
            return
        have = json.loads(f.read_text(encoding="utf-8"))
        if have != key:  # a directory copied or renamed by hand: its features are another model's
            diff = sorted(k for k in set(have) | set(key) if have.get(k) != key.get(k))
            field = "data.text_features" if {"bert", "bert_layer", "text_features"} & set(diff) else "data"
            raise ValueError(
                f"{field}: feature cache {d} was made with other settings ({', '.join(diff)}: "
                f"{', '.join(f'{have.get(k)!r} there, {key.get(k)!r} asked' for k in diff)}); "
                "delete that directory or point data.cache_dir elsewhere"
            )

    def text_info(self) -> dict:
        """``features.json`` of the text directory: the text model's ``params``, feature ``dim`` and ``level``
        (written when the features were computed; empty for ``none``)."""
        f = self.text_dir / "features.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}

    # -- filling -----------------------------------------------------------------------------------
    def prepare(
        self,
        items: list[ManifestItem],
        *,
        workers: int = 1,
        progress: bool = False,
        bert_device: str | None = None,
    ) -> PrepareStats:
        t0 = time.perf_counter()
        st = PrepareStats(audio_dir=str(self.audio_dir), text_dir=str(self.text_dir))
        d = self.cfg
        if d.text_features != "none" and any(not self.text_path(it.id).is_file() for it in items):
            from model.text.features import check_available

            check_available(d)  # a text model that is not on this machine: refused before the audio work
        self._init_dir(self.audio_dir, self.audio_key)
        with file_lock(self.audio_dir / ".lock"):
            todo = [it for it in items if not self.audio_path(it.id).is_file()]
            st.audio_reused = len(items) - len(todo)
            mel = self.audio_key.get("mel")
            jobs = [
                (
                    it.path,
                    str(self.audio_path(it.id)),
                    d.sampling_rate,
                    d.filter_length,
                    d.hop_length,
                    d.win_length,
                    mel,
                )
                for it in todo
            ]
            bar = progress_bar(progress, len(jobs), "audio features", unit="utt")
            if workers > 1 and len(jobs) >= 32:
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
                    for _ in ex.map(_audio_job, jobs, chunksize=8):
                        st.audio_computed += 1
                        bar.update(1)
            else:
                for j in jobs:
                    _audio_job(j)
                    st.audio_computed += 1
                    bar.update(1)
            bar.close()

        self._init_dir(self.text_dir, self.text_key)
        with file_lock(self.text_dir / ".lock"):
            todo = [it for it in items if not self.text_path(it.id).is_file()]
            st.text_reused = len(items) - len(todo)
            if todo:
                st.text_computed = self._prepare_text(todo, progress, bert_device)
        if items:
            st.text_flops = sum(self._text_flops(it.id) for it in items)
        st.seconds = time.perf_counter() - t0
        return st

    def _prepare_text(self, todo: list[ManifestItem], progress: bool, bert_device: str | None) -> int:
        """g2p, and the text features ``data.text_features`` asks for (model/text/features.py), in batches of
        32 utterances, on ``bert_device`` (default: CUDA when present). Token rows are stored as ``bert``
        (float16, ``len(text) + 2`` rows), a sentence vector as ``sentence``, the forward FLOPs as
        ``text_flops`` (and in a ``.flops`` sidecar); ``features.json`` records the model's parameter count and the width."""
        from model.text.features import featurizer
        from model.text.g2p import g2p

        d = self.cfg
        feat = featurizer(d, device=bert_device)
        if feat is not None:
            info = {"model": feat.name, "params": feat.params, "dim": feat.dim, "level": feat.spec.level}
            atomic_write_text(self.text_dir / "features.json", json.dumps(info, indent=1))
        what = "text features" + (f" + {d.text_features} ({feat.name})" if feat else "")
        bar = progress_bar(progress, len(todo), what, unit="utt")
        n = 0
        chunk = 32
        for s in range(0, len(todo), chunk):
            part = todo[s : s + chunk]
            results = [g2p(it.text) for it in part]
            feats = feat([r.text for r in results]) if feat is not None else [None] * len(part)
            for it, r, f in zip(part, results, feats, strict=True):
                obj = {"text": r.text, "phones": r.phones, "tones": r.tones, "word2ph": r.word2ph}
                if f is not None:
                    if "bert" in f:
                        obj["bert"] = f["bert"].to(torch.float16)
                    if "sentence" in f:
                        obj["sentence"] = f["sentence"].to(torch.float16)
                    # a sidecar too, so a trial sums its FLOPs without reading every feature file
                    path = self.text_path(it.id)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(path.with_suffix(".flops"), str(int(f["flops"])))
                    obj["text_flops"] = f["flops"]
                _save(obj, self.text_path(it.id))
                n += 1
            bar.update(len(part))
        bar.close()
        return n

    def _text_flops(self, item_id: str) -> int:
        if self.text_key["bert"] == "none":
            return 0
        side = self.text_path(item_id).with_suffix(".flops")
        if side.is_file():
            return int(side.read_text())
        return int(
            torch.load(self.text_path(item_id), weights_only=True).get("text_flops", 0)
        )  # older caches

    # -- reading -----------------------------------------------------------------------------------
    def load(self, item_id: str) -> tuple[dict, dict]:
        """(audio entry, text entry) of one utterance."""
        a = torch.load(self.audio_path(item_id), weights_only=True)
        t = torch.load(self.text_path(item_id), weights_only=True)
        return a, t

    def size_bytes(self) -> dict[str, int]:
        out = {}
        for name, d in (("audio", self.audio_dir), ("text", self.text_dir)):
            out[name] = sum(f.stat().st_size for f in d.rglob("*.pt")) if d.is_dir() else 0
        return out
