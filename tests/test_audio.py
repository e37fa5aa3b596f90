"""Audio front end: decoding every common format in-process, the log-mel, and the length arithmetic."""

from __future__ import annotations

import io
import warnings

import av
import numpy as np
import pytest
import torch

from qwen_audio.audio import (
    N_FFT,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    TOKENS_PER_SECOND,
    AudioReader,
    ClipStore,
    SourceFormat,
    audio_length,
    load_audio,
    load_clip,
    log_mel_spectrogram,
    mel_filters,
    remember,
    source_key,
)
from qwen_audio.errors import (
    AudioDecodeError,
    AudioNotFoundError,
    AudioTooShortError,
    AudioTruncatedWarning,
    EmptyAudioError,
)

from .synthetic import tone

FORMATS = [  # (suffix, container, codec, sample format the encoder takes)
    ("wav", "wav", "pcm_s16le", "s16"),
    ("flac", "flac", "flac", "s16"),
    ("mp3", "mp3", "libmp3lame", "fltp"),
    ("ogg", "ogg", "libopus", "flt"),
    ("opus", "opus", "libopus", "flt"),
    ("webm", "webm", "libopus", "flt"),
    ("m4a", "mp4", "aac", "fltp"),
    ("mka", "matroska", "aac", "fltp"),
    ("aac", "adts", "aac", "fltp"),  # raw ADTS
    ("aiff", "aiff", "pcm_s16be", "s16"),
    ("caf", "caf", "pcm_s16le", "s16"),
    ("wv", "wv", "wavpack", "fltp"),
]


def encode(path, samples: np.ndarray, rate: int, container: str, codec: str, fmt: str) -> None:
    """Write `samples` (samples, channels) float32 with PyAV."""
    channels = samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame_size = stream.codec_context.frame_size or 1024
        for i in range(0, len(samples), frame_size):
            chunk = samples[i : i + frame_size]
            if len(chunk) < frame_size and codec in ("libopus", "aac", "libmp3lame"):
                chunk = np.pad(chunk, ((0, frame_size - len(chunk)), (0, 0)))
            if fmt == "s16":
                data = (chunk * 32767).astype(np.int16).reshape(1, -1)
            elif fmt == "flt":
                data = chunk.astype(np.float32).reshape(1, -1)
            else:
                data = np.ascontiguousarray(chunk.T.astype(np.float32))
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_length_arithmetic():
    assert audio_length(N_SAMPLES).span == 752  # at most 752 prompt positions for one clip
    assert audio_length(10 * N_SAMPLES) == audio_length(N_SAMPLES)
    n = audio_length(93680)  # the tutorial's 5.855 s flac
    assert (n.mel_frames, n.after_cnn, n.n_tokens, n.span) == (585, 293, 146, 148)
    assert audio_length(SAMPLE_RATE).n_tokens == TOKENS_PER_SECOND  # 25 positions per second
    assert audio_length(160).after_cnn == 1


@pytest.mark.parametrize("suffix,container,codec,fmt", FORMATS)
@pytest.mark.parametrize("channels,rate", [(1, 16000), (2, 44100)])
def test_decodes_common_formats(tmp_path, suffix, container, codec, fmt, channels, rate):
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        rate = 48000
    path = tmp_path / f"tone.{suffix}"
    encode(path, tone(1.0, 440, rate, channels).reshape(-1, channels), rate, container, codec, fmt)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert np.array_equal(load_audio(path.read_bytes()), x)  # the same demuxer reads bytes and paths
    assert abs(len(x) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # codecs add a little padding
    # The 440 Hz tone survives decoding, down-mixing and resampling.
    spectrum = np.abs(np.fft.rfft(x[: SAMPLE_RATE // 2]))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 4
    f = load_clip(path).source_format  # what lite answers "Is it mono or stereo?" with
    assert (f.sample_rate, f.channels) == (48000 if codec == "libopus" else rate, channels) and f.codec  # Opus: 48 kHz


def test_in_memory_sources_match_the_file(tmp_path):
    samples = tone(0.5, 300, 22050, 2)
    path = tmp_path / "a.wav"
    encode(path, samples, 22050, "wav", "pcm_s16le", "s16")
    from_file = load_audio(path)
    assert np.array_equal(load_audio(path.read_bytes()), from_file)
    assert np.array_equal(load_audio(io.BytesIO(path.read_bytes())), from_file)
    pcm16 = (samples * 32767).astype(np.int16)
    assert np.array_equal(load_audio((pcm16, 22050)), from_file)  # same libswresample path as files
    assert load_clip((pcm16, 22050)).source_format == SourceFormat(None, 22050, 2)


def test_16_bit_mono_arrays_at_16k_are_taken_as_they_are():
    pcm = (tone(0.5, 300, SAMPLE_RATE, 1) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm[None], format="s16p", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    through_av = np.concatenate([f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]])
    assert np.array_equal(load_audio((pcm, SAMPLE_RATE)) * 32768, through_av.astype(np.float32))


def test_float_array_at_16k_is_quantised_to_16_bit():
    x = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    y = load_audio(x)
    assert np.abs(y - x).max() <= 1 / 32768
    assert np.array_equal(y * 32768, np.round(y * 32768))


def test_remembered_audio_loads_by_name():
    name = remember((tone(0.2), SAMPLE_RATE))
    assert name.startswith("memory://")
    assert len(load_clip(name).samples) == int(0.2 * SAMPLE_RATE)
    with pytest.raises(AudioNotFoundError, match="memory://nothing"):
        load_clip("memory://nothing")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AudioNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")


def test_broken_file_is_named(tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioDecodeError, match="broken.mp3"):
        load_audio(bad)
    with pytest.raises(AudioDecodeError, match="folder"):
        load_audio(tmp_path)


def test_empty_audio(tmp_path):
    import wave

    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    with pytest.raises(EmptyAudioError, match="empty.wav"):
        load_audio(path)
    with pytest.raises(EmptyAudioError):
        load_audio(np.zeros(0, np.float32))
    with pytest.raises(AudioDecodeError, match="NaN"):
        load_audio(np.array([0.0, np.nan], np.float32))


def test_mel_filters_are_slaney():
    f = mel_filters()
    assert f.shape == (80, 201) and f.dtype == np.float32
    assert (f >= 0).all()
    # Slaney norm: each triangle has area 1 over its width in Hz (height 2 / width, base width), so
    # summing a row over the 40 Hz FFT bins gives 1 / 40 for every filter.
    bin_hz = SAMPLE_RATE / N_FFT
    assert np.allclose(f.sum(axis=1) * bin_hz, 1.0, atol=0.15)
    assert f[0].argmax() == 1 and f[-1].argmax() > 190


def test_log_mel_shape_and_range():
    mel = log_mel_spectrogram(torch.from_numpy(np.pad(tone(1.0), (0, N_SAMPLES - SAMPLE_RATE))))
    assert mel.shape == (80, N_FRAMES)
    assert float(mel.max() - mel.min()) <= 2.0 + 1e-6  # 8 decades below the peak, divided by 4


def test_long_clip_warns_how_much_is_dropped():
    store = ClipStore()
    with pytest.warns(AudioTruncatedWarning, match=r"31.5 s.*1.5 s dropped"):
        clip = store.clip((tone(31.5), SAMPLE_RATE))
    assert len(clip.samples) == N_SAMPLES and clip.truncated and clip.duration == pytest.approx(31.5)
    assert store.mel((tone(31.5), SAMPLE_RATE)).shape == (80, N_FRAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.clip((tone(3.0), SAMPLE_RATE))  # no warning under 30 s


def test_bounded_decoding_equals_the_start_of_a_full_decoding(tmp_path):
    """Reading only the first 30 s gives the same samples, bit for bit, as decoding the whole file
    (libswresample's output does not depend on what is read later), and reads no more."""
    samples = tone(75.0, 330, 44100, 2)
    path = tmp_path / "long.mp3"
    encode(path, samples, 44100, "mp3", "libmp3lame", "fltp")
    full = load_audio(path)
    clip = load_clip(path, max_samples=N_SAMPLES)
    assert np.array_equal(clip.samples, full[:N_SAMPLES])
    assert clip.truncated and clip.duration == pytest.approx(75.0, abs=0.2)
    reader = AudioReader(path)
    first = reader.read(12345)
    assert np.array_equal(first, full[:12345]) and np.array_equal(reader.read(), full[12345:])


def test_clip_shorter_than_30_ms_is_refused_by_name():
    with pytest.raises(AudioTooShortError, match="20 ms.*at least 30 ms"):
        ClipStore().clip((np.full(320, 0.1, np.float32), SAMPLE_RATE))
    assert ClipStore().clip((np.full(480, 0.1, np.float32), SAMPLE_RATE)).length.n_tokens == 1


def test_in_memory_clips_are_keyed_by_content_shape_dtype_and_rate():
    x = tone(0.5)
    keys = {source_key(x), source_key((x, 16000)), source_key((x, 8000)), source_key(x.astype(np.float64)),
            source_key(x.reshape(-1, 1)), source_key(x[::-1].copy())}
    assert len(keys) == 6 and source_key(x.copy()) == source_key(x)
    assert remember((x, 8000)) != remember((x, 16000)) and remember((x, 8000)) == remember((x.copy(), 8000))


def test_remembered_audio_is_bounded_in_bytes(monkeypatch):
    from qwen_audio import audio

    monkeypatch.setattr(audio, "MEMORY_BYTES", 3 * tone(1.0).nbytes)
    names = [remember((tone(1.0, 100 + i), SAMPLE_RATE)) for i in range(5)]
    load_clip(names[-1])
    with pytest.raises(AudioNotFoundError, match="forgotten"):
        load_clip(names[0])  # the oldest went when the budget was passed


def test_clip_store_is_bounded_in_bytes():
    store = ClipStore(max_bytes=3 * tone(1.0).nbytes)
    for i in range(6):
        store.clip((tone(1.0, 100 + i), SAMPLE_RATE))
    assert len(store._entries) == 3
