"""Audio front end: decode anything to 16 kHz mono, the log-mel of the spec, and the length arithmetic.

Every number of audio positions in the project comes from `audio_length`: the tokenizer sizes the
prompt span with it, the encoder cuts its output with it, and the tests check it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import sys
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Union

import numpy as np
import torch

from .errors import (
    AudioDecodeError,
    AudioError,
    AudioNotFoundError,
    AudioTooLongError,
    AudioTooShortError,
    AudioTruncatedWarning,
    EmptyAudioError,
    OptionError,
)

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
    """How a source is named in messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape}>"
    return f"<{type(source).__name__}>"


MIN_SAMPLES = 3 * HOP_LENGTH  # 30 ms: the shortest clip that gives the model one audio position
MIN_RATE, MAX_RATE = 1000, 768000  # Hz: the sample rates taken, of arrays and of decoded streams

# ---- what untrusted bytes may reach -------------------------------------------------------------------------

# The only FFmpeg demuxers that read a source. Left to itself FFmpeg hands bytes to whichever of its ~370
# demuxers claims them, and some of those open other files by name: an ffconcat or HLS script sent as "audio"
# would make a server decode its own files, sbg synthesises hours of sound from one line, image2 reads image
# sequences. FFmpeg still probes with every demuxer, then refuses (EINVAL) one not named here. A name matches
# any part of FFmpeg's comma-joined names ("mov" matches "mov,mp4,m4a,3gp,3g2,mj2"), so none here is part
# of a script, playlist, image or device demuxer's name (tests/test_audio_hostile.py checks).
AUDIO_DEMUXERS = (
    "wav",  # RIFF WAVE, RF64, BW64
    "w64",  # Sony Wave64: WAV past 4 GB
    "flac",  # native FLAC
    "mp3",  # MPEG audio layers 1-3: mp3, mp2
    "ogg",  # Ogg: opus, vorbis, flac, speex
    "matroska",  # "matroska,webm": webm, mka
    "mov",  # "mov,mp4,m4a,3gp,3g2,mj2": m4a and mp4 (aac, alac), 3gp, mov
    "aac",  # raw ADTS AAC
    "loas",  # LATM/LOAS AAC, as broadcast captures carry it
    "aiff",  # AIFF and AIFF-C
    "caf",  # Apple Core Audio Format
    "amr",  # AMR-NB/WB with the "#!AMR" header: phone recordings
    "au",  # Sun/NeXT .au, .snd
    "wv",  # WavPack
    "asf",  # ASF: wma
    "ac3",  # raw Dolby Digital
    "eac3",  # raw Dolby Digital Plus
    "dts",  # raw DTS
    "ape",  # Monkey's Audio
    "tta",  # True Audio
    "tak",  # TAK
    "mpc",  # Musepack SV7
    "mpc8",  # Musepack SV8
    "shn",  # Shorten, as older speech corpora are kept
    "nistsphere",  # NIST SPHERE .sph: TIMIT, Switchboard
    "voc",  # Creative Voice
)
FORMATS_TOLD = "wav, flac, mp3, ogg/opus, webm/mka, mp4/m4a, aac, aiff, caf, amr, au, wavpack, wma, ac3, ..."
# FFmpeg's protocol_whitelist for every source: a name that is no protocol, so nothing a demuxer reads can
# make it open a file or URL (file:, subfile:, concat:, tee:, http:...). Sources need no protocol: a path is
# opened here and handed to FFmpeg as a file object.
NO_PROTOCOL = "none"


def _reason(e: BaseException) -> str:
    """Why decoding failed, in FFmpeg's fixed phrase for the error code (its strerror). Never str(e): PyAV
    adds the name it gave FFmpeg and FFmpeg's last log line, which can carry a path or a probe detail."""
    return getattr(e, "strerror", None) or "unreadable data"


def _check_rate(rate, name: str) -> None:
    """Refuse a stream's sample rate outside MIN_RATE..MAX_RATE: at 1 Hz one frame would resample to 16000
    times as many samples."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioDecodeError(f"{name}: a sample rate of {rate} Hz is not audio this reads ({MIN_RATE}-{MAX_RATE} Hz)")


def _check_limit(max_seconds) -> float | None:
    """`max_seconds` as a float (None: no limit); OptionError unless a positive finite number."""
    if max_seconds is None:
        return None
    number = isinstance(max_seconds, (int, float, np.integer, np.floating)) and not isinstance(max_seconds, bool)
    if not number or not 0 < max_seconds < math.inf:
        raise OptionError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    return float(max_seconds)


def _open_path(path: str):
    """`path` opened here for reading: FFmpeg gets a file object, and never opens anything by name."""
    if not os.path.exists(path):
        raise AudioNotFoundError(f"audio file not found: {path}")
    if os.path.isdir(path):
        raise AudioDecodeError(f"{path}: is a folder, not an audio file")
    try:
        return open(path, "rb")
    except OSError as e:
        raise AudioDecodeError(f"{path}: cannot read ({_reason(e)})") from e


def _open_container(file, name: str):
    """An av InputContainer reading the file object `file` with AUDIO_DEMUXERS only, nested opens refused."""
    import av  # lazily: only decoding needs it

    options = {"format_whitelist": ",".join(AUDIO_DEMUXERS), "protocol_whitelist": NO_PROTOCOL}
    try:
        return av.open(file, container_options=options, metadata_errors="ignore")
    except av.FFmpegError as e:
        if e.errno == errno.EINVAL:  # what FFmpeg returns when the demuxer it chose is not on the list
            raise AudioDecodeError(f"{name}: not an audio format this reads ({FORMATS_TOLD})") from e
        raise AudioDecodeError(f"{name}: cannot decode audio ({_reason(e)})") from e
    except (UnicodeDecodeError, ValueError, OSError) as e:
        raise AudioDecodeError(f"{name}: cannot decode audio ({_reason(e)})") from e


class AudioReader:
    """Decode a source to float32 mono 16 kHz samples a piece at a time (see `load_audio` for sources).

    Memory holds only what has been decoded and not yet taken, so a 10-hour file can be read in
    windows. `total_seconds` is the container's stated length (None when it states none). Samples
    are the same, bit for bit, as decoding the whole file at once: libswresample's output for the
    start of a file does not depend on how much of the rest is read.

    Encoded sources are read only by AUDIO_DEMUXERS, through a file object (paths are opened here),
    and FFmpeg may open nothing by name. With `max_seconds`, decoding stops with AudioTooLongError
    as soon as its 16 kHz output passes that many seconds: the count is of decoded samples, never of
    what the header states, so a file that lies about its length costs no more than the limit.
    """

    def __init__(self, source: AudioSource, sample_rate: int | None = None, name: str | None = None,
                 max_seconds: float | None = None):
        self.name = name or _describe(source[0] if isinstance(source, tuple) and len(source) == 2 else source)
        self.total_seconds: float | None = None
        self.source_format: SourceFormat | None = None
        self.max_seconds = _check_limit(max_seconds)
        self._decoded = 0  # 16 kHz samples produced so far, counted against max_seconds
        self._heard = 0.0  # seconds of decoded frames handed to libswresample so far
        self._buffer = np.zeros(0, dtype=np.int16)
        if isinstance(source, tuple):
            if len(source) != 2:
                raise AudioDecodeError(f"{self.name}: pass in-memory audio as (array, sample_rate)")
            source, sample_rate = source
        if isinstance(source, np.ndarray):
            self._buffer = self._counted(_convert_array(source, sample_rate or SAMPLE_RATE, self.name))
            self.source_format = SourceFormat(None, int(sample_rate or SAMPLE_RATE), 1 if source.ndim == 1 else source.shape[1])
            self._chunks = iter(())
            self.total_seconds = len(self._buffer) / SAMPLE_RATE
            return
        if isinstance(source, (bytes, bytearray)):
            file = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            file = _open_path(os.fspath(source))  # its .name, the path, stays what FFmpeg probes by
        elif hasattr(source, "read"):
            file = source
        else:
            raise AudioDecodeError(f"{self.name}: not an audio source (give a path, bytes, or an array)")
        self._chunks = self._decode(file, owned=file is not source)
        next(self._chunks)  # open the container now: a broken file fails here, naming itself

    def _decode(self, file, owned: bool) -> Iterator[np.ndarray]:
        """Open `file` (yielding nothing once it is open), then yield int16 chunks to the end, flushed.
        `owned`: the file was opened here, and is closed with the container."""
        import av  # lazily: only decoding needs it

        try:
            container = _open_container(file, self.name)
        except BaseException:
            file.close() if owned else None
            raise
        try:
            stream = self._audio_stream(container)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            yield np.zeros(0, dtype=np.int16)
            for frame in container.decode(stream):
                self._check_frame(frame)
                for f in resampler.resample(frame):
                    yield self._counted(f.to_ndarray().reshape(-1))
            for f in resampler.resample(None):
                yield self._counted(f.to_ndarray().reshape(-1))
        except AudioError:
            raise
        except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as e:
            raise AudioDecodeError(f"{self.name}: cannot decode audio ({_reason(e)})") from e
        finally:
            container.close()
            file.close() if owned else None

    def _audio_stream(self, container):
        """The first audio stream, its declared rate checked; sets `total_seconds` from what the container states."""
        if not container.streams.audio:
            raise AudioDecodeError(f"{self.name}: no audio stream in this file")
        stream = container.streams.audio[0]
        if stream.sample_rate:  # 0: not stated before decoding; each frame's rate is checked anyway
            _check_rate(stream.sample_rate, self.name)
        codec = stream.codec_context.codec
        self.source_format = SourceFormat(codec.long_name or codec.name, int(stream.sample_rate or 0),
                                          int(stream.channels or 0), container.bit_rate or None)
        if stream.duration is not None and stream.time_base is not None:
            self.total_seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            self.total_seconds = container.duration / 1_000_000  # av.time_base: microseconds
        return stream

    def _check_frame(self, frame) -> None:
        """Check a decoded frame before libswresample multiplies it: its rate, and (with a limit) that it
        does not by itself carry the output a second past `max_seconds`, so that one huge frame is refused
        before it is resampled. The 16 kHz output tracks the seconds heard within milliseconds, so this
        refuses only what the count of output samples would refuse a moment later."""
        _check_rate(frame.sample_rate, self.name)
        self._heard += frame.samples / frame.sample_rate
        if self.max_seconds is not None and self._heard > self.max_seconds + 1:
            raise self._too_long()

    def _counted(self, pcm: np.ndarray) -> np.ndarray:
        """`pcm` [n] int16, once counted: AudioTooLongError when the output so far passes `max_seconds`."""
        self._decoded += len(pcm)
        if self.max_seconds is not None and self._decoded > self.max_seconds * SAMPLE_RATE:
            raise self._too_long()
        return pcm

    def _too_long(self) -> AudioTooLongError:
        return AudioTooLongError(f"{self.name}: longer than the limit of {self.max_seconds:g} s "
                                 f"(counted as decoded; decoding stopped there)")

    def read_pcm(self, n: int | None = None) -> np.ndarray:
        """Up to `n` more int16 samples (all that are left when n is None); fewer only at the end."""
        parts, have = [self._buffer], len(self._buffer)
        while n is None or have < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        pcm = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if n is None or len(pcm) <= n:
            self._buffer = pcm[:0]
            return pcm
        self._buffer = pcm[n:]
        return pcm[:n]

    def read(self, n: int | None = None) -> np.ndarray:
        """Up to `n` more samples as float32 in [-1, 1) (see `read_pcm`)."""
        return self.read_pcm(n).astype(np.float32) / 32768.0

    def close(self) -> None:
        self._chunks.close() if hasattr(self._chunks, "close") else None
        self._buffer = self._buffer[:0]

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _convert_array(array: np.ndarray, sample_rate: int, name: str) -> np.ndarray:
    """Down-mix and resample an in-memory array with the same libswresample path as files."""
    array = np.asarray(array)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise AudioDecodeError(f"{name}: expected (samples,) or (samples, channels), got {array.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise AudioDecodeError(f"{name}: sample rate must be an integer number of Hz ({MIN_RATE}-{MAX_RATE}), "
                               f"got {sample_rate!r}")
    n, channels = array.shape
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    if array.dtype == np.int16 and channels == 1 and sample_rate == SAMPLE_RATE:
        return array[:, 0].copy()  # already what the model hears: libswresample would copy it unchanged
    import av  # lazily: only converting needs it
    if array.dtype == np.int16:
        fmt, planar = "s16p", np.ascontiguousarray(array.T)
    elif array.dtype.kind in "iuf":
        if array.dtype.kind in "iu":
            array = array.astype(np.float64) / float(np.iinfo(array.dtype).max + 1)
        fmt, planar = "fltp", np.ascontiguousarray(array.T, dtype=np.float32)
    else:
        raise AudioDecodeError(f"{name}: audio arrays hold numbers, not {array.dtype}")
    if not np.all(np.isfinite(planar)):
        raise AudioDecodeError(f"{name}: audio contains NaN or infinite samples")
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    try:
        frame = av.AudioFrame.from_ndarray(planar, format=fmt, layout=layout)
    except (ValueError, av.FFmpegError) as e:
        raise AudioDecodeError(f"{name}: cannot use a {channels}-channel array ({e})") from e
    frame.sample_rate = int(sample_rate)
    frame.pts = None
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks = [f.to_ndarray() for f in resampler.resample(frame)]
    chunks += [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate([c.reshape(-1) for c in chunks]) if chunks else np.zeros(0, np.int16)


def load_audio(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """Decode all of `source` to float32 mono samples at 16 kHz, quantised to 16-bit like the published code.

    `source`: a path, encoded bytes, a file object, a 16 kHz mono float array, or (array, sample_rate)
    with array shaped (samples,) or (samples, channels). Returns an array of shape (n_samples,) with
    values in [-1, 1). Raises AudioNotFoundError, AudioDecodeError or EmptyAudioError naming the source.
    """
    with AudioReader(source, sample_rate) as reader:
        samples = reader.read()
    if samples.size == 0:
        raise EmptyAudioError(f"{reader.name}: the audio is empty (no samples)")
    return samples


def decoded_seconds(source: AudioSource, max_seconds: float, name: str | None = None) -> float:
    """Seconds of 16 kHz audio in `source` (sources as `load_audio`; a server passes the uploaded bytes),
    counted by decoding all of it and keeping none of it: memory holds a few seconds of samples whatever
    the length. Raises AudioTooLongError as soon as the count passes `max_seconds` (decoding stops
    there; what the header states plays no part), and the decode errors of `load_audio`. Empty audio is 0.0."""
    n = 0
    with AudioReader(source, name=name, max_seconds=max_seconds) as reader:
        while len(pcm := reader.read_pcm(5 * SAMPLE_RATE)):
            n += len(pcm)
    return n / SAMPLE_RATE


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


@dataclass(frozen=True)
class SourceFormat:
    """What a clip was decoded from, as its container states it (`Clip.source_format`)."""

    codec: str | None  # FFmpeg's long codec name ("MP3 (MPEG audio layer 3)"); None: an in-memory array
    sample_rate: int  # Hz (0: not stated)
    channels: int  # (0: not stated)
    bit_rate: int | None = None  # bits per second, as the container states it


@dataclass(frozen=True, eq=False)
class Clip:
    """One decoded clip: its samples (all of it, or its start when read with `max_samples`)."""

    name: str  # the path or label it came from
    samples: np.ndarray  # float32 [n_samples] at SAMPLE_RATE
    truncated: bool = False  # True when the recording goes on past `samples`
    total_seconds: float | None = None  # the whole recording's length as its container states it, if it does
    source_format: SourceFormat | None = None  # the codec, rate and channels it was decoded from

    @property
    def duration(self) -> float:
        """Seconds of audio in the whole recording (as far as is known when it was truncated)."""
        heard = len(self.samples) / SAMPLE_RATE
        return max(heard, self.total_seconds or 0.0) if self.truncated else heard

    @property
    def length(self) -> AudioLength:
        return audio_length(len(self.samples))

    def mel(self) -> torch.Tensor:
        """[N_MELS, N_FRAMES] log-mel of the first 30 s."""
        return log_mel_spectrogram(pad_or_trim(torch.from_numpy(self.samples)))

    def warn_if_truncated(self) -> None:
        """Say how much of the recording the model does not hear (AudioTruncatedWarning)."""
        if not self.truncated and len(self.samples) <= N_SAMPLES:
            return
        if self.total_seconds and self.total_seconds > CHUNK_SECONDS:
            told = (f"{self.duration:.1f} s of audio; only the first {CHUNK_SECONDS} s are used "
                    f"({self.duration - CHUNK_SECONDS:.1f} s dropped)")
        else:
            told = f"longer than {CHUNK_SECONDS} s; only the first {CHUNK_SECONDS} s are used"
        warnings.warn(f"{self.name}: {told}. Use `qwen-audio transcribe` for long audio.",
                      AudioTruncatedWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The `stacklevel` that points a warning at the first frame outside this package (the user's line)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


# ---- clips by identity ------------------------------------------------------------------------------------

MEMORY_PREFIX = "memory://"  # names of in-memory audio given to from_list_format
MEMORY_BYTES = 512 << 20  # in-memory audio kept by name; the least recently used is forgotten past this
MAX_URL_BYTES = 200 << 20  # an http(s) clip named in a tutorial-style tag is refused past this size
_memory: "OrderedDict[str, tuple[AudioSource, int]]" = OrderedDict()
_memory_lock = threading.Lock()


def _digest(data) -> str:
    return hashlib.blake2b(memoryview(data).cast("B"), digest_size=16).hexdigest()


def source_key(source: AudioSource) -> tuple:
    """What identifies a clip: a file by path, size and modification time; in-memory audio by content,
    shape, dtype and sample rate; a `memory://` name or URL by itself."""
    if isinstance(source, str) and (source.startswith(MEMORY_PREFIX) or source.startswith(("http://", "https://"))):
        return ("name", source)
    if isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(source))
        try:
            st = os.stat(path)
        except OSError:
            return ("file", path)
        return ("file", path, st.st_size, st.st_mtime_ns)
    if isinstance(source, (bytes, bytearray)):
        return ("bytes", _digest(bytes(source)), len(source))
    rate = None
    if isinstance(source, tuple) and len(source) == 2:
        source, rate = source
        rate = int(rate) if isinstance(rate, (int, np.integer)) else repr(rate)
    if isinstance(source, np.ndarray):
        array = np.ascontiguousarray(source)
        return ("array", _digest(array), array.shape, array.dtype.str, rate)
    raise AudioDecodeError(f"{_describe(source)}: give a path, bytes, an array, or (array, sample_rate)")


def _nbytes(source) -> int:
    if isinstance(source, tuple):
        source = source[0]
    return source.nbytes if isinstance(source, np.ndarray) else len(source)


def remember(source: AudioSource) -> str:
    """Keep in-memory audio (bytes, an array, or (array, rate)) under a name made from its content, shape,
    dtype and rate, that can stand inside `<audio>...</audio>` tags; `load_clip(name)` finds it again.
    At most MEMORY_BYTES are kept: the least recently used audio is forgotten first."""
    if isinstance(source, (str, os.PathLike)):
        raise AudioDecodeError(f"{_describe(source)}: a path needs no remembering; give bytes or an array")
    key = source_key(source)
    name = f"{MEMORY_PREFIX}{_digest(repr(key).encode())}"
    with _memory_lock:
        _memory[name] = (source, _nbytes(source))
        _memory.move_to_end(name)
        total = sum(n for _, n in _memory.values())
        while total > MEMORY_BYTES and len(_memory) > 1:
            total -= _memory.popitem(last=False)[1][1]
    return name


def _recall(name: str) -> AudioSource:
    with _memory_lock:
        if name not in _memory:
            raise AudioNotFoundError(f"{name}: no in-memory audio of that name in this process (or long forgotten)")
        _memory.move_to_end(name)
        return _memory[name][0]


def _fetch(url: str) -> bytes:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            data = r.read(MAX_URL_BYTES + 1)
    except (OSError, ValueError) as e:
        raise AudioNotFoundError(f"{url}: cannot fetch ({e})") from e
    if len(data) > MAX_URL_BYTES:
        raise AudioDecodeError(f"{url}: larger than {MAX_URL_BYTES >> 20} MB")
    return data


def open_source(source: AudioSource, name: str | None = None, max_seconds: float | None = None) -> AudioReader:
    """An AudioReader for `source`, which may also be a `memory://` name or (tutorial tags) an http(s) URL.
    With `max_seconds`, reading past that much decoded audio raises AudioTooLongError (see AudioReader)."""
    label = name or (source if isinstance(source, str) else None)
    if isinstance(source, str) and source.startswith(MEMORY_PREFIX):
        source = _recall(source)
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        source = _fetch(source)
    return AudioReader(source, name=label, max_seconds=max_seconds)


def load_clip(source: AudioSource | Clip, name: str | None = None, max_samples: int | None = None,
              max_seconds: float | None = None) -> Clip:
    """Decode `source` into a Clip: all of it, or only its first `max_samples` (the rest is not decoded;
    `truncated` says whether there was more). Sources as `open_source`; AudioTooLongError when what is
    decoded passes `max_seconds`."""
    if isinstance(source, Clip):
        return source
    with open_source(source, name, max_seconds) as reader:
        samples = reader.read(None if max_samples is None else max_samples + 1)
        truncated = max_samples is not None and len(samples) > max_samples
        clip = Clip(reader.name, samples[:max_samples] if truncated else samples, truncated, reader.total_seconds,
                    reader.source_format)
    if len(clip.samples) == 0:
        raise EmptyAudioError(f"{clip.name}: the audio is empty (no samples)")
    return clip


class ClipStore:
    """What the model hears of each clip (its first 30 s, decoded once) and its log-mel, by identity
    (`source_key`). The least recently used are dropped once they hold more than `max_bytes`."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, list] = OrderedDict()  # key -> [clip, mel or None]
        self._lock = threading.Lock()

    def clip(self, source: AudioSource, name: str | None = None) -> Clip:
        """The clip as the model hears it. Raises the audio errors, and AudioTooShortError under 30 ms."""
        return self._entry(source, name)[0]

    def mel(self, source: AudioSource, name: str | None = None) -> torch.Tensor:
        """[N_MELS, N_FRAMES] log-mel of the clip."""
        entry = self._entry(source, name)
        mel = entry[1]
        if mel is None:
            mel = entry[1] = entry[0].mel()
            self._evict()
        return mel

    def _entry(self, source, name) -> list:
        key = source_key(source)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
        clip = load_clip(source, name, max_samples=N_SAMPLES)
        if len(clip.samples) < MIN_SAMPLES:
            raise AudioTooShortError(f"{clip.name}: {1000 * clip.duration:.0f} ms of audio is too short; "
                                     f"the model needs at least {1000 * MIN_SAMPLES // SAMPLE_RATE} ms")
        clip.warn_if_truncated()
        with self._lock:
            entry = self._entries.setdefault(key, [clip, None])
            self._entries.move_to_end(key)
        self._evict()
        return entry

    def _evict(self) -> None:
        with self._lock:
            size = lambda e: e[0].samples.nbytes + (e[1].nbytes if e[1] is not None else 0)  # noqa: E731
            total = sum(size(e) for e in self._entries.values())
            while total > self.max_bytes and self._entries:
                total -= size(self._entries.popitem(last=False)[1])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
