"""Audio front end: decode anything to 16 kHz mono, the log-mel of the spec, and the length arithmetic.

Every number of audio positions in the project comes from `audio_length`: the tokenizer sizes the
prompt span with it, the encoder cuts its output with it, and the tests check it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

import numpy as np
import torch

from .errors import AudioDecodeError, AudioNotFoundError, AudioTruncatedWarning, EmptyAudioError

SAMPLE_RATE = 16000  # Hz
N_FFT = 400  # 25 ms analysis window
HOP_LENGTH = 160  # 10 ms between mel frames
N_MELS = 80
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000: the encoder hears at most 30 s
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in 30 s
TOKENS_PER_SECOND = 25  # LLM positions per second of audio (10 ms frames, conv stride 2, pool 2)

# What `load_audio` accepts: a path, encoded bytes, a file object, a 16 kHz mono float array,
# or (array, sample_rate) with array shaped (samples,) or (samples, channels).
AudioSource = Union[str, os.PathLike, bytes, io.IOBase, np.ndarray, tuple]


@dataclass(frozen=True)
class AudioLength:
    """How many positions a clip of `n_samples` takes at each stage (at most 30 s are used)."""

    n_samples: int  # samples the encoder hears: min(len(clip), N_SAMPLES)
    mel_frames: int  # n_samples // HOP_LENGTH
    after_cnn: int  # encoder positions after conv2 (stride 2, padding 1)
    n_tokens: int  # pooled frames given to the LLM (avg-pool 2)

    @property
    def span(self) -> int:
        """Positions of the clip in the prompt: `<audio>`, the frames, `</audio>`."""
        return self.n_tokens + 2


def audio_length(n_samples: int) -> AudioLength:
    """The one place that turns a clip's sample count into encoder and prompt positions."""
    used = min(int(n_samples), N_SAMPLES)
    mel_frames = used // HOP_LENGTH
    after_cnn = (mel_frames - 1) // 2 + 1
    n_tokens = (after_cnn - 2) // 2 + 1
    return AudioLength(used, mel_frames, after_cnn, n_tokens)


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape}>"
    return f"<{type(source).__name__}>"


def _resampler():
    import av  # lazily: only decoding needs it

    return av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)


def _decode_container(file, name: str) -> np.ndarray:
    """Decode the first audio stream of a container to int16 mono 16 kHz with libswresample."""
    import av

    try:
        with av.open(file, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{name}: no audio stream in this file")
            stream = container.streams.audio[0]
            resampler = _resampler()
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    except AudioDecodeError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as e:
        raise AudioDecodeError(f"{name}: cannot decode audio ({e})") from e
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([c.reshape(-1) for c in chunks])


def _convert_array(array: np.ndarray, sample_rate: int, name: str) -> np.ndarray:
    """Down-mix and resample an in-memory array with the same libswresample path as files."""
    import av

    array = np.asarray(array)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise AudioDecodeError(f"{name}: expected (samples,) or (samples, channels), got {array.shape}")
    n, channels = array.shape
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    if array.dtype == np.int16:
        fmt, planar = "s16p", np.ascontiguousarray(array.T)
    else:
        if array.dtype.kind in "iu":
            array = array.astype(np.float64) / float(np.iinfo(array.dtype).max + 1)
        fmt, planar = "fltp", np.ascontiguousarray(array.T, dtype=np.float32)
    if not np.all(np.isfinite(planar)):
        raise AudioDecodeError(f"{name}: audio contains NaN or infinite samples")
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    try:
        frame = av.AudioFrame.from_ndarray(planar, format=fmt, layout=layout)
    except (ValueError, av.FFmpegError) as e:
        raise AudioDecodeError(f"{name}: cannot use a {channels}-channel array ({e})") from e
    frame.sample_rate = int(sample_rate)
    frame.pts = None
    resampler = _resampler()
    chunks = [f.to_ndarray() for f in resampler.resample(frame)]
    chunks += [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate([c.reshape(-1) for c in chunks]) if chunks else np.zeros(0, np.int16)


def load_audio(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """Decode `source` to float32 mono samples at 16 kHz, quantised to 16-bit like the published code.

    Returns an array of shape (n_samples,) with values in [-1, 1). Raises AudioNotFoundError,
    AudioDecodeError or EmptyAudioError naming the source.
    """
    name = _describe(source)
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioDecodeError(f"{name}: pass in-memory audio as (array, sample_rate)")
        source, sample_rate = source
    if isinstance(source, np.ndarray):
        pcm = _convert_array(source, sample_rate or SAMPLE_RATE, name)
    elif isinstance(source, (bytes, bytearray)):
        pcm = _decode_container(io.BytesIO(bytes(source)), name)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise AudioNotFoundError(f"audio file not found: {path}")
        if os.path.isdir(path):
            raise AudioDecodeError(f"{path}: is a folder, not an audio file")
        pcm = _decode_container(path, name)
    elif hasattr(source, "read"):
        pcm = _decode_container(source, name)
    else:
        raise AudioDecodeError(f"{name}: not an audio source (give a path, bytes, or an array)")
    if pcm.size == 0:
        raise EmptyAudioError(f"{name}: the audio is empty (no samples)")
    return pcm.astype(np.float32) / 32768.0


def save_wav(path: str | os.PathLike, samples: np.ndarray) -> str:
    """Write float samples [n] in [-1, 1) as a 16-bit mono 16 kHz WAV; `load_audio` reads back the same values."""
    import wave

    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return os.fspath(path)


def pad_or_trim(samples: torch.Tensor, length: int = N_SAMPLES) -> torch.Tensor:
    """Zero-pad or cut the last axis to exactly `length` samples."""
    n = samples.shape[-1]
    if n > length:
        return samples[..., :length]
    if n < length:
        return torch.nn.functional.pad(samples, (0, length - n))
    return samples


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=None)
def mel_filters(n_mels: int = N_MELS) -> np.ndarray:
    """The [n_mels, N_FFT // 2 + 1] slaney-normalised mel filter bank (librosa's `filters.mel`)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel_spectrogram(samples: torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """Whisper's log-mel of 30 s windows: [N_SAMPLES] -> [n_mels, N_FRAMES] (or batched [B, ...])."""
    samples = samples.to(torch.float32)
    window = torch.hann_window(N_FFT, device=samples.device)
    stft = torch.stft(samples, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = torch.from_numpy(mel_filters(n_mels)).to(samples.device)
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    # Dynamic range of 8 (80 dB) below each clip's own peak.
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


@dataclass(frozen=True, eq=False)
class Clip:
    """One decoded clip: the whole signal, of which the encoder hears the first 30 s."""

    name: str  # the path or label it came from
    samples: np.ndarray  # float32 [n_samples] at SAMPLE_RATE, the whole clip (may exceed 30 s)

    @property
    def duration(self) -> float:
        """Seconds of audio in the whole clip."""
        return len(self.samples) / SAMPLE_RATE

    @property
    def length(self) -> AudioLength:
        return audio_length(len(self.samples))

    def mel(self) -> torch.Tensor:
        """[N_MELS, N_FRAMES] log-mel of the first 30 s, warning when the rest is dropped."""
        dropped = len(self.samples) - N_SAMPLES
        if dropped > 0:
            warnings.warn(
                f"{self.name}: {self.duration:.1f} s of audio; only the first {CHUNK_SECONDS} s are used "
                f"({dropped / SAMPLE_RATE:.1f} s dropped). Use `qwen-audio transcribe` for long audio.",
                AudioTruncatedWarning,
                stacklevel=3,
            )
        return log_mel_spectrogram(pad_or_trim(torch.from_numpy(self.samples)))


MEMORY_PREFIX = "memory://"  # names of in-memory audio given to from_list_format
MEMORY_CLIPS = 256  # in-memory clips kept by name; the least recently used are forgotten
_memory: "OrderedDict[str, AudioSource]" = OrderedDict()


def remember(source: AudioSource) -> str:
    """Keep in-memory audio (bytes, an array, or (array, rate)) under a content-derived name that can
    stand inside `<audio>...</audio>` tags; `load_clip(name)` finds it again."""
    import hashlib

    h = hashlib.sha1()
    if isinstance(source, tuple):
        h.update(np.ascontiguousarray(source[0]).tobytes() + str(source[1]).encode())
    elif isinstance(source, np.ndarray):
        h.update(np.ascontiguousarray(source).tobytes())
    elif isinstance(source, (bytes, bytearray)):
        h.update(bytes(source))
    else:
        raise AudioDecodeError(f"{_describe(source)}: give a path, bytes, an array, or (array, sample_rate)")
    name = f"{MEMORY_PREFIX}{h.hexdigest()[:16]}"
    _memory[name] = source
    _memory.move_to_end(name)
    while len(_memory) > MEMORY_CLIPS:
        _memory.popitem(last=False)
    return name


def load_clip(source: AudioSource, name: str | None = None) -> Clip:
    """Decode `source` into a Clip (see `load_audio`; also names made by `remember` and http(s) URLs)."""
    if isinstance(source, str) and source.startswith(MEMORY_PREFIX):
        if source not in _memory:
            raise AudioNotFoundError(f"{source}: no in-memory audio of that name in this process (or long forgotten)")
        _memory.move_to_end(source)
        return Clip(source, load_audio(_memory[source]))
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(source, timeout=30) as r:
                return Clip(source, load_audio(r.read()))
        except OSError as e:
            raise AudioNotFoundError(f"{source}: cannot fetch ({e})") from e
    return Clip(name or _describe(source), load_audio(source))
