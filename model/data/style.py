"""Style vectors: one embedding per utterance (the generator's ``style`` input), cached per (corpus, encoder).

Style-Bert-VITS2 (SBV2) feeds its text encoder a 256-d "style vector" per utterance: in training the
utterance's own embedding from a speaker-embedding model, in inference a per-style mean read from
``style_vectors.npy`` (row 0 the neutral style = the mean of every utterance, then one mean per style;
SBV2 interpolates ``mean + (style_mean - mean) * weight``). This module computes those embeddings.

``data.style_encoder`` names the encoder (a sweep field like every ``data.*`` field):

- ``zeros``: no encoder; every style vector is zero (the generator's ``style_proj`` learns only a bias).
  The tiny preset's default, so the CPU tests, the demo and the ladder keep their meaning and cost.
- ``resemblyzer``: Resemblyzer's ``VoiceEncoder`` (Apache-2.0; 3-layer LSTM on 40-band mels at 16 kHz,
  256-d, L2-normalised, non-negative output); its weights ``pretrained.pt`` ship inside the pip package, so
  it runs offline. The input is the encoder's own preprocessing (``preprocess_wav``: volume normalisation,
  long silences trimmed by WebRTC VAD).
- ``wespeaker`` or ``wespeaker:<hub id or local path>``: SBV2's own encoder, pyannote.audio's
  ``Model.from_pretrained`` (default ``pyannote/wespeaker-voxceleb-resnet34-LM``) with
  ``Inference(window="whole")``, 256-d. Needs ``pip install pyannote.audio`` and the weights on this
  machine (a local path, or the Hugging Face cache); it is not a dependency of this project. The
  ``default`` and ``seed_large`` presets use it, since a fine-tune from SBV2's public base model expects
  its embedding space; without it they stop before training with a message saying so.
- ``torchscript:<path>``: a user's encoder, saved with ``torch.jit.save``: ``forward(wav)`` takes a
  ``(1, T)`` float32 waveform in [-1, 1] and returns ``(1, D)`` or ``(D,)``; the module must carry an
  integer attribute ``sample_rate`` (the rate it expects; audio is resampled to it). TorchScript, not a
  Python ``module:function``, so that a config file cannot make a trial run arbitrary Python.

The cache (``StyleCache``): ``<data.cache_dir>/style-<digest>/embeddings.npz`` (``ids``, ``vectors``
(n, D) float32) with ``key.json`` beside it. Key: corpus fingerprint, ``STYLE_VERSION`` and the encoder's
identity (``encoder_key``: the id plus what changes its output without changing its name: resemblyzer's
package version and weights digest, the TorchScript file's sha256, the wespeaker model id). A different
encoder is a different directory, so vectors of two encoders are never mixed, and the key stored inside
the file is checked on every read. The audio and text caches (``cache.py``) do not depend on the encoder.
The embedding reads the source audio file (mono, its own rate, resampled to the encoder's), so it does
not depend on ``data.sampling_rate`` either. ``prepare`` holds the directory's ``flock`` while it
embeds what is missing and rewrites the file atomically (``files.py``): trials that start together
embed each utterance once, and every trial of a sweep (any size, budget or data-hours subset) shares
the file. An encoder is only loaded when something is missing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from model.config import ConfigError, parse_style_encoder
from model.data.files import atomic_write_bytes, atomic_write_text, file_lock, progress_bar
from model.data.manifest import ManifestItem

STYLE_VERSION = 1
WESPEAKER_MODEL = "pyannote/wespeaker-voxceleb-resnet34-LM"  # what SBV2's style_gen loads
KNOWN_DIMS = {"resemblyzer": 256, "wespeaker": 256}  # output width without loading the encoder
FIELD = "data.style_encoder"
NEUTRAL = "Neutral"  # SBV2's name of style 0


class StyleEncoderError(ConfigError):
    """An encoder that cannot be loaded or does not fit the model; the message names the config fields."""


@dataclass(frozen=True)
class EncoderSpec:
    kind: str  # one of model.config.STYLE_ENCODERS
    arg: str = ""  # wespeaker: hub id or path; torchscript: file path

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def parse_encoder(spec: str, where: str = FIELD) -> EncoderSpec:
    """``data.style_encoder`` -> ``EncoderSpec`` (the spelling rule is ``model.config.parse_style_encoder``;
    a bare ``wespeaker`` is SBV2's model id)."""
    kind, arg = parse_style_encoder(spec, where)
    if kind == "wespeaker" and not arg:
        arg = WESPEAKER_MODEL
    return EncoderSpec(kind, arg)


def _sha256_file(path: Path) -> str:
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """Digest of a weights file, once per (path, size, mtime) per process (every prepare asks for it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _resemblyzer_weights() -> Path | None:
    """``pretrained.pt`` inside the installed resemblyzer package, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pretrained.pt"


def encoder_key(spec: EncoderSpec | str) -> dict:
    """What identifies an encoder's output, without loading it (so a full cache needs no encoder)."""
    s = parse_encoder(spec) if isinstance(spec, str) else spec
    if s.kind == "resemblyzer":
        w = _resemblyzer_weights()
        if w is None or not w.is_file():
            raise StyleEncoderError(
                f"{FIELD}='resemblyzer': the resemblyzer package (and its pretrained.pt) is not installed; "
                "pip install resemblyzer"
            )
        return {
            "kind": "resemblyzer",
            "version": importlib.metadata.version("resemblyzer"),
            "weights": _sha256_file(w),
        }
    if s.kind == "torchscript":
        p = Path(s.arg)
        if not p.is_file():
            raise StyleEncoderError(f"{FIELD}={s.text!r}: {p}: no such file (a torch.jit.save'd module)")
        return {"kind": "torchscript", "file": p.name, "sha256": _sha256_file(p)}
    if s.kind == "wespeaker" and Path(s.arg).is_file():  # a local checkpoint: its content, not its name
        return {"kind": "wespeaker", "file": Path(s.arg).name, "sha256": _sha256_file(Path(s.arg))}
    return {"kind": s.kind, "model": s.arg} if s.arg else {"kind": s.kind}


# ----------------------------------------------------------------------------------------------------
# encoders


class StyleEncoder(Protocol):
    """``embed(waveforms, sample_rate) -> (n, dim) float32``: one vector per waveform (1-D float arrays
    in [-1, 1] at ``sample_rate``; each encoder resamples to its own rate)."""

    id: str
    dim: int | None  # None: known after the first embed (a user's TorchScript module)

    def embed(self, waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray: ...


def _resample(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if sr == target:
        return wav
    import torchaudio  # as cache.py: only on the resampling path

    return torchaudio.functional.resample(torch.from_numpy(wav), sr, target).numpy()


class ResemblyzerEncoder:
    sample_rate = 16000
    dim = 256

    def __init__(self, device: str | None = None) -> None:
        try:  # imported here: it pulls in librosa and webrtcvad, needed only when this encoder embeds
            import resemblyzer
        except ImportError as e:
            raise StyleEncoderError(
                f"{FIELD}='resemblyzer': cannot import resemblyzer ({e}); pip install resemblyzer"
            ) from None
        self._rz = resemblyzer
        self.id = "resemblyzer"
        self._enc = resemblyzer.VoiceEncoder(device or "cpu", verbose=False)

    def embed(self, waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        out = []
        for w in waveforms:
            x = _resample(w, sample_rate, self.sample_rate)
            pre = self._rz.preprocess_wav(x, source_sr=self.sample_rate)
            if len(pre) < self.sample_rate // 10:  # the VAD kept < 0.1 s: embed the audio as it is
                pre = x
            out.append(self._enc.embed_utterance(pre))
        return np.stack(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


class WespeakerEncoder:
    """pyannote.audio's wespeaker ResNet34 (SBV2's style encoder), whole-utterance window."""

    dim = 256

    def __init__(self, model: str = WESPEAKER_MODEL, device: str | None = None) -> None:
        self.id = f"wespeaker:{model}"
        need = (
            f"{FIELD}={self.id!r}: the style encoder {model!r} must be available on this machine: "
            "pip install pyannote.audio, and either a local checkpoint path (wespeaker:/path/to/model) or "
            "the model in the Hugging Face cache (downloaded beforehand; HF_HUB_OFFLINE=1 reads only the cache)"
        )
        try:  # imported here: pyannote.audio is optional (SBV2 users have it), not a project dependency
            from pyannote.audio import Inference, Model
        except ImportError as e:
            raise StyleEncoderError(
                f"{need}. Import failed: {e}. Offline: use {FIELD}: resemblyzer"
            ) from None
        try:
            net = Model.from_pretrained(model)
        except Exception as e:  # hub / network / file errors all mean the same thing here
            raise StyleEncoderError(f"{need}. Loading failed: {type(e).__name__}: {e}") from None
        if net is None:  # pyannote returns None for a gated model without a token
            raise StyleEncoderError(f"{need}. Loading returned nothing (a gated model without access?)")
        self._inf = Inference(net, window="whole")
        self._inf.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))

    def embed(self, waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        rows = []
        for w in waveforms:
            x = torch.from_numpy(np.asarray(w, dtype=np.float32)).unsqueeze(0)
            rows.append(np.asarray(self._inf({"waveform": x, "sample_rate": sample_rate})).reshape(-1))
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)


class TorchScriptEncoder:
    """A user's ``torch.jit.save``'d module (contract in the module docstring)."""

    dim = None

    def __init__(self, path: str, device: str | None = None) -> None:
        self.id = f"torchscript:{path}"
        self._device = torch.device(device or "cpu")
        try:
            self._mod = torch.jit.load(path, map_location=self._device).eval()
        except Exception as e:
            raise StyleEncoderError(
                f"{FIELD}={self.id!r}: {path}: not a loadable TorchScript module ({type(e).__name__}: {e})"
            ) from None
        sr = getattr(self._mod, "sample_rate", None)
        if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
            raise StyleEncoderError(
                f"{FIELD}={self.id!r}: {path}: the module needs an integer attribute sample_rate "
                f"(the rate its forward expects), got {sr!r}"
            )
        self.sample_rate = sr

    def embed(self, waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for w in waveforms:
                x = torch.from_numpy(_resample(w, sample_rate, self.sample_rate)).unsqueeze(0)
                y = self._mod(x.to(self._device))
                rows.append(y.detach().float().cpu().numpy().reshape(-1))
        if not rows:
            return np.zeros((0, 0), np.float32)
        if len({r.shape[0] for r in rows}) != 1:
            raise StyleEncoderError(
                f"{FIELD}={self.id!r}: outputs of different sizes {sorted({r.shape[0] for r in rows})}"
            )
        return np.stack(rows).astype(np.float32)


def load_encoder(spec: EncoderSpec | str, device: str | None = None) -> StyleEncoder:
    """The encoder ``spec`` names, loaded (``zeros`` has none: a ``StyleEncoderError``)."""
    s = parse_encoder(spec) if isinstance(spec, str) else spec
    if s.kind == "resemblyzer":
        return ResemblyzerEncoder(device)
    if s.kind == "wespeaker":
        return WespeakerEncoder(s.arg, device)
    if s.kind == "torchscript":
        return TorchScriptEncoder(s.arg, device)
    raise StyleEncoderError(f"{FIELD}='zeros' has no encoder to load")


def check_dims(spec: EncoderSpec, style_dim: int, got: int | None = None) -> None:
    """The encoder's width must be ``model.style_dim`` (``got``: a measured width; else the known one)."""
    dim = got if got is not None else KNOWN_DIMS.get(spec.kind)
    if style_dim == 0:
        raise StyleEncoderError(
            f"{FIELD}={spec.text!r} computes style vectors but model.style_dim=0 disables the style input; "
            f"set model.style_dim to the encoder's width or {FIELD}: zeros"
        )
    if dim is not None and dim != style_dim:
        raise StyleEncoderError(
            f"{FIELD}={spec.text!r} gives {dim}-d vectors but model.style_dim={style_dim}; "
            "make them equal (or use another encoder)"
        )


# ----------------------------------------------------------------------------------------------------
# the cache


@dataclass
class StyleStats:
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    path: str = ""
    encoder: str = "zeros"


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """A source file as mono float32 at its own rate (what every encoder is fed)."""
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


class StyleCache:
    """``<root>/style-<digest>/embeddings.npz``: one vector per utterance id for one (corpus, encoder)."""

    def __init__(self, root: str | Path, corpus_fp: str, spec: EncoderSpec | str) -> None:
        self.spec = parse_encoder(spec) if isinstance(spec, str) else spec
        self.key = {
            "kind": "style",
            "version": STYLE_VERSION,
            "corpus": corpus_fp,
            "encoder": encoder_key(self.spec),
        }
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"style-{digest}"
        self.path = self.dir / "embeddings.npz"

    def load(self) -> dict[str, np.ndarray]:
        """Every cached vector by utterance id ({} before the first ``prepare``); a file whose stored key
        is not this cache's (copied from another encoder or corpus) is refused, naming it."""
        if not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as z:
                stored, ids, vecs = json.loads(str(z["key"])), z["ids"].tolist(), z["vectors"]
        except Exception as e:
            raise StyleEncoderError(
                f"{self.path}: unreadable style cache ({type(e).__name__}: {e}); delete it"
            ) from None
        if stored != self.key:
            raise StyleEncoderError(
                f"{self.path}: made for {json.dumps(stored, sort_keys=True)}, not for "
                f"{json.dumps(self.key, sort_keys=True)} ({FIELD}={self.spec.text!r}); delete the file"
            )
        return {i: vecs[k] for k, i in enumerate(ids)}

    def _save(self, vectors: Mapping[str, np.ndarray]) -> None:
        ids = sorted(vectors)
        buf = io.BytesIO()
        np.savez(
            buf,
            key=np.array(json.dumps(self.key, sort_keys=True)),
            ids=np.array(ids, dtype=str),
            vectors=np.stack([vectors[i] for i in ids]).astype(np.float32),
        )
        atomic_write_bytes(self.path, buf.getvalue())

    def prepare(
        self,
        items: Sequence[ManifestItem],
        *,
        style_dim: int,
        device: str | None = None,
        progress: bool = False,
        chunk: int = 16,
    ) -> tuple[dict[str, np.ndarray], StyleStats]:
        """Vectors of ``items`` (by id), embedding only those not cached; the encoder is loaded only when
        something is missing. The width must equal ``model.style_dim`` (checked before anything is written)."""
        t0 = time.perf_counter()
        check_dims(self.spec, style_dim)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "key.json").is_file():
            atomic_write_text(self.dir / "key.json", json.dumps(self.key, indent=1, ensure_ascii=False))
        with file_lock(self.dir / ".lock"):
            have = self.load()
            for v in have.values():
                check_dims(self.spec, style_dim, got=int(v.shape[0]))
                break
            todo = [it for it in items if it.id not in have]
            st = StyleStats(reused=len(items) - len(todo), path=str(self.path), encoder=self.spec.text)
            if todo:
                enc = load_encoder(self.spec, device)
                bar = progress_bar(progress, len(todo), f"style vectors ({self.spec.kind})", unit="utt")
                new: dict[str, np.ndarray] = {}
                for s in range(0, len(todo), chunk):
                    part = todo[s : s + chunk]
                    audio = [read_audio(it.path) for it in part]
                    for sr in sorted({a[1] for a in audio}):  # one call per source rate
                        idx = [k for k, a in enumerate(audio) if a[1] == sr]
                        vecs = enc.embed([audio[k][0] for k in idx], sr)
                        check_dims(self.spec, style_dim, got=int(vecs.shape[1]))
                        if not np.isfinite(vecs).all():
                            bad = [part[idx[k]].id for k in range(len(idx)) if not np.isfinite(vecs[k]).all()]
                            raise StyleEncoderError(
                                f"{FIELD}={self.spec.text!r}: non-finite vectors for {bad[:5]}"
                            )
                        new.update({part[k].id: vecs[j] for j, k in enumerate(idx)})
                    bar.update(len(part))
                bar.close()
                have.update(new)
                self._save(have)
                st.computed = len(new)
        st.seconds = time.perf_counter() - t0
        return {it.id: have[it.id] for it in items}, st


def check_style(d, style_dim: int) -> EncoderSpec:
    """What can be checked of ``data.style_encoder`` without embedding: its spelling, its width against
    ``model.style_dim``, that its package / file is present (a ``StyleEncoderError`` names the fields).
    Whether wespeaker loads is known only when it is loaded: when something is missing from the cache
    (``prepare_data`` embeds before it computes audio and text features)."""
    spec = parse_encoder(d.style_encoder)
    if spec.kind == "zeros":
        return spec
    check_dims(spec, style_dim)
    encoder_key(spec)  # resemblyzer installed, the TorchScript file present
    return spec


def prepare_styles(
    d, corpus_fp: str, items: Sequence[ManifestItem], *, style_dim: int, device=None, progress=False
) -> tuple[dict[str, np.ndarray] | None, StyleStats]:
    """The style vectors of ``items`` for ``DataConfig`` ``d`` (None for ``zeros``), with their stats."""
    spec = parse_encoder(d.style_encoder)
    if spec.kind == "zeros":
        return None, StyleStats()
    return StyleCache(d.cache_dir, corpus_fp, spec).prepare(
        items, style_dim=style_dim, device=device, progress=progress
    )


# ----------------------------------------------------------------------------------------------------
# means: per speaker (evaluation's synthesis) and per style (SBV2's style_vectors.npy)


def speaker_means(vectors: Mapping[str, np.ndarray], items: Sequence[ManifestItem]) -> dict[str, np.ndarray]:
    """Mean vector per speaker over ``items`` (the training items: a held-out utterance's own vector never
    enters the vector its synthesis is conditioned on), plus ``""``: the mean over all of them."""
    by: dict[str, list[np.ndarray]] = {}
    for it in items:
        by.setdefault(it.speaker, []).append(vectors[it.id])
    out = {s: np.mean(v, axis=0).astype(np.float32) for s, v in by.items()}
    out[""] = np.mean([vectors[it.id] for it in items], axis=0).astype(np.float32)
    return out


def style_vectors_for_export(
    vectors: Mapping[str, np.ndarray],
    items: Sequence[ManifestItem],
    style2id: Mapping[str, int] | None = None,
    *,
    speaker: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """``(style_names, vectors [n_styles, dim])`` as SBV2's ``style_vectors.npy`` holds them: row 0
    ``Neutral``, the mean of every utterance's vector; then one row per style, the mean of the utterances
    labelled with it. Row i is style id i: write ``style2id = {name: i}`` and ``num_styles = len(names)``
    beside it.

    ``vectors``: utterance id -> vector (``PreparedData.styles``); ``items``: the utterances to average
    (the trial's training items); ``speaker``: only that speaker's (SBV2 models are mostly one speaker).
    A style label is ``item.extras["style"]`` (no corpus reader sets one today: then only ``Neutral``).
    ``style2id`` (``data.style2id``): when it names styles besides ``Neutral``, rows follow its ids, it
    must give ``Neutral`` id 0, and each style must have labelled utterances; otherwise the labels found,
    sorted. A ``ValueError`` names what is missing."""
    pool = [it for it in items if speaker is None or it.speaker == speaker]
    if not pool:
        raise ValueError(
            f"style_vectors_for_export: no utterances{f' of speaker {speaker!r}' if speaker else ''}"
        )
    missing = [it.id for it in pool if it.id not in vectors]
    if missing:
        raise ValueError(
            f"style_vectors_for_export: no style vector for {missing[:5]} ({len(missing)} in all)"
        )
    labels = {it.extras.get("style") for it in pool} - {None, NEUTRAL}
    named = sorted(((i, n) for n, i in (style2id or {}).items()), key=lambda x: x[0])
    if [n for _, n in named if n != NEUTRAL]:
        if named[0] != (0, NEUTRAL):
            raise ValueError(f"data.style2id: SBV2 needs {NEUTRAL!r} as style 0, got {dict(style2id)}")
        order = [n for _, n in named[1:]]
        extra = sorted(labels - set(order))
        if extra:
            raise ValueError(f"data.style2id: utterances are labelled {extra}, which style2id does not name")
    else:
        order = sorted(labels)
    rows = [np.mean([vectors[it.id] for it in pool], axis=0)]
    for name in order:
        mine = [vectors[it.id] for it in pool if it.extras.get("style") == name]
        if not mine:
            raise ValueError(f"data.style2id: style {name!r} has no labelled utterances")
        rows.append(np.mean(mine, axis=0))
    return [NEUTRAL, *order], np.stack(rows).astype(np.float32)
