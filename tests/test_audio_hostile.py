"""Untrusted "audio" bytes: only FFmpeg's audio demuxers read them, nothing they name is opened, errors
tell nothing about the server's files, and decoding counts what it decodes against a limit."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from qwen_audio import audio
from qwen_audio.audio import (
    AUDIO_DEMUXERS,
    FORMATS_TOLD,
    SAMPLE_RATE,
    AudioReader,
    decoded_seconds,
    load_audio,
    load_clip,
    open_source,
)
from qwen_audio.errors import AudioDecodeError, AudioTooLongError, OptionError

from .hostile import FIFO, SCRIPTS, flac_bytes, hls, nothing_opens, wav_bytes, with_stated_samples
from .synthetic import tone


def refusals(name: str) -> set[str]:
    """The only messages a hostile script may get: a fixed phrase, nothing of FFmpeg's text."""
    return {f"{name}: not an audio format this reads ({FORMATS_TOLD})",
            f"{name}: cannot decode audio (Invalid data found when processing input)"}


@pytest.fixture
def fifo(tmp_path, monkeypatch) -> Path:
    """The server's file, as a FIFO in the reader's working directory."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / FIFO)
    return tmp_path / FIFO


@pytest.mark.parametrize("kind", ["bytes", "x.wav", "x.m3u8"])
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_playlists_and_images_are_refused_and_open_nothing(fifo, script, kind):
    data = SCRIPTS[script](fifo)
    data = data.encode() if isinstance(data, str) else data
    source = data
    if kind != "bytes":  # a script on disk, named like audio or like a playlist, decoded by path
        source = fifo.parent / kind
        source.write_bytes(data)
    name = f"<{len(data)} bytes>" if kind == "bytes" else str(source)
    with nothing_opens(fifo), pytest.raises(AudioDecodeError) as e:
        load_audio(source)
    assert str(e.value) in refusals(name)
    assert FIFO not in str(e.value)


def test_file_objects_are_read_by_the_audio_demuxers_only(fifo):
    playlist = fifo.parent / "x.m3u8"  # FFmpeg takes HLS only from a file named .m3u8: the name is given
    playlist.write_text(hls(FIFO))
    with nothing_opens(fifo), open(playlist, "rb") as f, pytest.raises(AudioDecodeError) as e:
        AudioReader(f)
    assert str(e.value) == f"<BufferedReader>: not an audio format this reads ({FORMATS_TOLD})"


def test_nested_opens_are_refused_even_past_the_allowlist(fifo, monkeypatch):
    """Defence in depth: were a script demuxer on the list, FFmpeg could still open nothing by name."""
    monkeypatch.setattr(audio, "AUDIO_DEMUXERS", audio.AUDIO_DEMUXERS + ("concat", "hls"))
    playlist = fifo.parent / "x.m3u8"
    playlist.write_text(hls(FIFO))
    for source in (f"ffconcat version 1.0\nfile {FIFO}\n".encode(), playlist):
        with nothing_opens(fifo), pytest.raises(AudioDecodeError):
            load_audio(source)


def test_paths_are_opened_here_not_by_ffmpeg(tmp_path, monkeypatch):
    """A file whose name is FFmpeg URL syntax is that file, not what FFmpeg's concat protocol would read."""
    monkeypatch.chdir(tmp_path)
    Path("a.wav").write_bytes(wav_bytes(tone(0.5, 440)))
    odd = Path("concat:a.wav|a.wav")
    odd.write_bytes(wav_bytes(tone(0.3, 300)))
    assert np.array_equal(load_audio(odd), load_audio(odd.read_bytes()))
    assert len(load_audio(str(odd))) == int(0.3 * SAMPLE_RATE)


def test_the_allowlist_names_audio_demuxers_only():
    demuxers = set()
    for name in av.formats_available:
        try:
            av.format.ContainerFormat(name, "r")
            demuxers.add(name)
        except ValueError:
            pass
    assert set(AUDIO_DEMUXERS) <= demuxers
    # FFmpeg matches each part of a comma-joined demuxer name against each name on the list.
    matched = {d for d in demuxers if set(d.split(",")) & set(AUDIO_DEMUXERS)}
    assert {"matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2"} <= matched
    scripts_and_devices = {"concat", "hls", "dash", "sbg", "image2", "image2pipe", "lavfi", "ffmetadata", "tee",
                           "webm_dash_manifest", "imf", "mpjpeg", "alsa", "oss", "fbdev", "kmsgrab", "x11grab",
                           "video4linux2,v4l2", "rtsp", "rtp", "sdp", "data", "tty", "bin"}
    assert not {d for d in matched if d in scripts_and_devices or d.endswith("_pipe")}


def test_ffmpeg_text_is_not_echoed(tmp_path):
    assert str(pytest.raises(AudioDecodeError, load_audio, b"noise" * 50).value) == \
        "<250 bytes>: cannot decode audio (Invalid data found when processing input)"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"noise" * 50)
    message = str(pytest.raises(AudioDecodeError, load_audio, bad).value)
    assert message == f"{bad}: cannot decode audio (Invalid data found when processing input)"


def test_absurd_sample_rates_are_refused():
    for rate in (1, 999, 5_000_000):
        header = bytearray(wav_bytes(tone(0.01)))
        header[24:28] = struct.pack("<I", rate)  # the fmt chunk's sample rate
        with pytest.raises(AudioDecodeError, match=f"sample rate of {rate} Hz"):
            AudioReader(bytes(header)).read()


# ---- counting what is decoded -------------------------------------------------------------------------------


def test_audio_past_max_seconds_is_refused_as_it_is_decoded(tmp_path):
    path = tmp_path / "twelve.wav"
    path.write_bytes(wav_bytes(tone(12.0)))
    with pytest.raises(AudioTooLongError) as e:
        load_clip(path, max_seconds=10)
    assert str(e.value) == f"{path}: longer than the limit of 10 s (counted as decoded; decoding stopped there)"
    assert np.array_equal(load_clip(path, max_seconds=15).samples, load_audio(path))
    reader = open_source(path.read_bytes(), "upload.wav", max_seconds=10)
    assert len(reader.read(9 * SAMPLE_RATE)) == 9 * SAMPLE_RATE  # within the limit: read as ever
    with pytest.raises(AudioTooLongError, match="upload.wav"):
        reader.read()
    with pytest.raises(AudioTooLongError):
        AudioReader((tone(12.0), SAMPLE_RATE), max_seconds=10)
    with pytest.raises(OptionError):
        AudioReader(path, max_seconds=0)


def test_the_header_plays_no_part_in_the_limit():
    pcm = (tone(12.0) * 32767).astype(np.int16)
    flac = flac_bytes(pcm)
    for stated, told in ((0, None), (SAMPLE_RATE, 1.0)):  # no length, and a lie: 1 s
        lying = with_stated_samples(flac, stated)
        assert AudioReader(lying).total_seconds == told
        with pytest.raises(AudioTooLongError):
            AudioReader(lying, max_seconds=10).read()
        with pytest.raises(AudioTooLongError):
            decoded_seconds(lying, 10)
        assert decoded_seconds(lying, 15) == 12.0


def test_decoded_seconds_counts_within_a_millisecond(tmp_path):
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes(tone(12.345)))
    assert abs(decoded_seconds(path.read_bytes(), 60) - 12.345) < 1e-3
    assert abs(decoded_seconds(path, 60, name="x") - 12.345) < 1e-3
    with pytest.raises(AudioTooLongError, match=r"^clip\.wav: longer than the limit of 12\.3 s"):
        decoded_seconds(path.read_bytes(), 12.3, name="clip.wav")
    assert decoded_seconds(wav_bytes(np.zeros(0)), 1) == 0.0


def test_a_long_file_is_refused_without_decoding_it_all(monkeypatch):
    """20 minutes of silence, refused at 60 s: libswresample is fed about the limit, not the file."""
    flac = flac_bytes(np.zeros(20 * 60 * SAMPLE_RATE, np.int16))
    fed = []
    real = av.AudioResampler

    class Counting:
        def __init__(self, *args, **kwargs):
            self.resampler = real(*args, **kwargs)

        def resample(self, frame):
            fed.append(0 if frame is None else frame.samples)
            return self.resampler.resample(frame)

    monkeypatch.setattr(av, "AudioResampler", Counting)
    with pytest.raises(AudioTooLongError, match="limit of 60 s"):
        decoded_seconds(flac, 60)
    assert 60 * SAMPLE_RATE < sum(fed) < 61 * SAMPLE_RATE
