"""Long-audio transcription: window seeking and stitching, output formats, and a run of the tiny model."""

import json

import numpy as np
import pytest

from qwen_audio.audio import N_SAMPLES, SAMPLE_RATE, load_clip, save_wav
from qwen_audio.backend import TranscriptStream
from qwen_audio.errors import AudioNotFoundError, AudioTooShortError, EmptyAudioError, QwenAudioError
from qwen_audio.transcribe import (
    MIN_WINDOW_SAMPLES,
    Segment,
    Transcript,
    WindowDecoder,
    Windows,
    parse_timestamped,
    stitch,
    task_prompt,
    to_json,
    to_srt,
    to_text,
    to_vtt,
    transcribe,
    windows,
)

from .conftest import AUDIO, TINY
from .conftest import SHARED as FIXTURES

# ---- a scripted model: known words at known times -----------------------------------------------------


class ScriptedSpeech:
    """A test double for the model: `words` are (start, end, word) in absolute seconds.

    For a window it answers as a timestamping ASR model does: every word wholly inside is a
    `<|a|> word<|b|>` segment (window-relative), a word cut by the window's end comes back
    without its closing timestamp, and nothing follows it. It records each window and fails the
    test if a window starts in the middle of a word (the word would be heard in halves).
    """

    def __init__(self, words, n_samples):
        self.words, self.n_samples, self.calls = words, n_samples, []

    def __call__(self, start, end):
        self.calls.append((start, end))
        ws, we = start / SAMPLE_RATE, end / SAMPLE_RATE
        out = ""
        for a, b, word in self.words:
            assert not (a < ws < b), f"a window starts at {ws} s, inside {word!r} ({a}-{b} s)"
            if b <= ws:
                continue
            if a >= we:
                break
            if b <= we:
                out += f"<|{a - ws:.2f}|> {word}<|{b - ws:.2f}|>"
            else:
                out += f"<|{a - ws:.2f}|> {word}"  # cut by the window's end: no end timestamp
                break
        return out


def stitched(n, decode, *, timestamps=False, language="en", progress=False) -> Transcript:
    """The transcript `stitch` makes of `n` samples (of silence: the decoders here are scripted)."""
    source = Windows.of(np.zeros(n, np.float32))
    segments = stitch(source, decode, timestamps=timestamps)
    return TranscriptStream(language, segments, lambda: source.n_read / SAMPLE_RATE, n / SAMPLE_RATE, progress).collect()


def speech(n_words, step=1.7, length=1.2):
    """Words w0, w1, ... every `step` seconds, each `length` long (many straddle window edges)."""
    return [(round(i * step, 2), round(i * step + length, 2), f"w{i}") for i in range(n_words)]


def test_edge_words_are_neither_lost_nor_doubled_and_times_are_absolute():
    words = speech(70)  # 0 .. 118.5 s: crosses several window edges
    n = int(120 * SAMPLE_RATE)
    fake = ScriptedSpeech(words, n)
    t = stitched(n, fake, timestamps=True, progress=False)
    assert [s.text for s in t.segments] == [w for _, _, w in words]
    assert [(s.start, s.end) for s in t.segments] == [(a, b) for a, b, _ in words]
    assert t.text == " ".join(w for _, _, w in words)
    assert t.duration == 120.0
    # Straddling words exist at 30 s (w17: 28.9-30.1) and each later window starts where one ended.
    assert any(a < 30 < b for a, b, _ in words)
    starts = [s / SAMPLE_RATE for s, _ in fake.calls]
    assert starts[0] == 0 and len(starts) >= 4
    assert all(any(abs(st - b) < 1e-9 for _, b, _ in words) for st in starts[1:])


def test_a_word_cut_at_the_end_of_a_window_is_heard_whole_in_the_next():
    words = [(1.0, 2.0, "one"), (29.5, 30.5, "edge"), (31.0, 32.0, "after")]
    n = 40 * SAMPLE_RATE
    fake = ScriptedSpeech(words, n)
    t = stitched(n, fake, timestamps=True, progress=False)
    assert t.segments == [Segment(1.0, 2.0, "one"), Segment(29.5, 30.5, "edge"), Segment(31.0, 32.0, "after")]
    # The second window starts where "one", the last word wholly in the first, ended.
    assert fake.calls == [(0, N_SAMPLES), (2 * SAMPLE_RATE, 32 * SAMPLE_RATE), (32 * SAMPLE_RATE, n)]


def test_the_last_window_keeps_an_unfinished_tail_up_to_the_end():
    def decode(start, end):
        return "<|0.00|> hello<|1.00|><|1.00|> and then" if start == 0 else "unexpected"

    t = stitched(5 * SAMPLE_RATE, decode, timestamps=True, progress=False)
    assert t.segments == [Segment(0.0, 1.0, "hello"), Segment(1.0, 5.0, "and then")]


def test_answers_without_timestamps_advance_a_whole_window_and_terminate():
    calls = []

    def decode(start, end):
        calls.append((start, end))
        return " gibberish <|en|>"

    n = 70 * SAMPLE_RATE
    t = stitched(n, decode, timestamps=True, progress=False)
    assert calls == windows(n)
    assert [(s.start, s.end) for s in t.segments] == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]


def test_a_complete_segment_too_early_to_seek_by_falls_back_to_a_whole_window():
    calls = []

    def decode(start, end):
        calls.append(start)
        return "<|0.00|> a<|0.40|> rest of a very long unfinished run"

    t = stitched(45 * SAMPLE_RATE, decode, timestamps=True, progress=False)
    assert calls == [0, N_SAMPLES]
    assert t.segments[:2] == [Segment(0.0, 0.4, "a"), Segment(0.4, 30.0, "rest of a very long unfinished run")]


def test_without_timestamps_windows_are_consecutive_30_s_pieces():
    n = 96 * SAMPLE_RATE + 100
    calls = []

    def decode(start, end):
        calls.append((start, end))
        return f" part {len(calls)} "

    t = stitched(n, decode, timestamps=False, progress=False, language="en")
    assert calls == [(0, N_SAMPLES), (N_SAMPLES, 2 * N_SAMPLES), (2 * N_SAMPLES, 3 * N_SAMPLES), (3 * N_SAMPLES, n)]
    assert t.text == "part 1 part 2 part 3 part 4"
    assert t.segments[-1] == Segment(90.0, 96.006, "part 4")


def test_windows_drop_a_remainder_too_short_to_hold_a_word():
    assert windows(N_SAMPLES) == [(0, N_SAMPLES)]
    assert windows(N_SAMPLES + MIN_WINDOW_SAMPLES - 1) == [(0, N_SAMPLES)]
    assert windows(N_SAMPLES + MIN_WINDOW_SAMPLES) == [(0, N_SAMPLES), (N_SAMPLES, N_SAMPLES + MIN_WINDOW_SAMPLES)]
    assert windows(100) == [(0, 100)]


def test_chinese_segments_join_without_spaces():
    t = stitched(SAMPLE_RATE, lambda s, e: "<|0.00|>你好<|0.50|><|0.50|>世界<|1.00|>", timestamps=True,
               language="zh", progress=False)
    assert t.text == "你好世界"


def test_parse_timestamped():
    segs, tail = parse_timestamped(" lead<|1.00|><|1.00|> a b<|2.50|> c<|3.00|><|3.00|><|4.00|> cut")
    assert segs == [Segment(0.0, 1.0, "lead"), Segment(1.0, 2.5, "a b"), Segment(2.5, 3.0, "c")]
    assert tail == Segment(4.0, 4.0, "cut")
    assert parse_timestamped("<|0.00|> x<|1.00|>") == ([Segment(0.0, 1.0, "x")], None)
    assert parse_timestamped("") == ([], None)


def test_task_prompts_follow_the_spec():
    assert task_prompt("en", timestamps=True) == (
        "<|startoftranscript|><|en|><|transcribe|><|en|><|timestamps|><|wo_itn|>")
    assert task_prompt("es", task="translate") == (
        "<|startoftranscript|><|es|><|translate|><|en|><|notimestamps|><|itn|>")
    with pytest.raises(QwenAudioError, match="klingon"):
        task_prompt("klingon")
    with pytest.raises(QwenAudioError, match="summarise"):
        task_prompt("en", task="summarise")


def test_progress_bar_goes_to_stderr(capsys):
    stitched(SAMPLE_RATE, lambda s, e: "x", progress=True)
    captured = capsys.readouterr()
    assert "transcribing" in captured.err and captured.out == ""


# ---- formats ------------------------------------------------------------------------------------------

T = Transcript("Hello there. General Kenobi.",
               [Segment(0.0, 2.33, "Hello there."), Segment(2.33, 3725.5, "General Kenobi.")], "en", 3726.0)


def test_srt():
    assert to_srt(T) == (
        "1\n00:00:00,000 --> 00:00:02,330\nHello there.\n\n"
        "2\n00:00:02,330 --> 01:02:05,500\nGeneral Kenobi.\n"
    )


def test_vtt():
    assert to_vtt(T) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.330\nHello there.\n\n"
        "00:00:02.330 --> 01:02:05.500\nGeneral Kenobi.\n"
    )


def test_text_and_json():
    assert to_text(T) == "Hello there. General Kenobi.\n"
    d = json.loads(to_json(T))
    assert d == {"text": T.text, "language": "en", "duration": 3726.0,
                 "segments": [{"start": 0.0, "end": 2.33, "text": "Hello there."},
                              {"start": 2.33, "end": 3725.5, "text": "General Kenobi."}]}


def test_empty_transcript_formats():
    empty = Transcript("", [], "en", 1.0)
    assert to_srt(empty) == "" and to_vtt(empty) == "WEBVTT\n"


# ---- the hook for backends with their own transcribe ---------------------------------------------------------


def test_windows_hold_about_one_window_of_a_long_recording():
    n = 10 * 60 * SAMPLE_RATE
    pos, held = 0, []

    def read(k):  # ten minutes of silence, produced as asked
        nonlocal pos
        k = min(k, n - pos)
        pos += k
        return np.zeros(k, np.float32)

    source = Windows(read)
    list(stitch(source, lambda s, e: held.append(len(source._buffer)) or "x", timestamps=False))
    assert source.n_read == n and max(held) <= N_SAMPLES + 1


def test_the_transcribe_function_hands_the_call_to_the_backend():
    class Backend:
        def transcribe(self, tokenizer, source, **kw):
            self.got = (tokenizer, source, kw)
            return Transcript("ok", [], "en", 1.0)

    backend = Backend()
    assert transcribe(backend, "tok", "a.wav", timestamps=True, progress=False, max_new_tokens=3).text == "ok"
    assert backend.got == ("tok", "a.wav", {"language": None, "timestamps": True, "progress": False,
                                            "task": "transcribe", "target": None, "max_new_tokens": 3})


# ---- the tiny checkpoint ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    if not (TINY / "config.json").is_file() or not (AUDIO / "music.wav").is_file():
        pytest.skip(f"tiny fixture or tutorial audio not found under {FIXTURES} (set QWEN_AUDIO_FIXTURES)")
    import qwen_audio

    return qwen_audio.load(TINY, dtype="float32", device="cpu")


def test_tiny_model_transcribes_96_s_of_music_in_windows(tiny, monkeypatch):
    model, tokenizer = tiny
    calls = []
    real = WindowDecoder.__call__

    def counting(self, start, end):
        calls.append((start, end))
        return real(self, start, end)

    monkeypatch.setattr(WindowDecoder, "__call__", counting)
    t = transcribe(model, tokenizer, AUDIO / "music.wav", progress=False, max_new_tokens=4)
    assert t.duration == pytest.approx(96.6, abs=0.1)
    assert calls == windows(len(load_clip(AUDIO / "music.wav").samples)) and len(calls) >= 4
    assert all(0 <= s.start < s.end <= t.duration for s in t.segments)
    # Greedy decoding is deterministic.
    assert transcribe(model, tokenizer, AUDIO / "music.wav", progress=False, max_new_tokens=4) == t


def test_tiny_model_with_timestamps_covers_the_whole_recording(tiny):
    model, tokenizer = tiny
    t = transcribe(model, tokenizer, str(AUDIO / "music.wav"), timestamps=True, progress=False, max_new_tokens=6)
    assert t.duration == pytest.approx(96.6, abs=0.1)
    assert all(0 <= s.start <= s.end <= t.duration for s in t.segments)
    assert [s.start for s in t.segments] == sorted(s.start for s in t.segments)


def test_window_prompt_ids_hold_the_clip_span_and_the_task_tags(tiny):
    model, tokenizer = tiny
    decoder = WindowDecoder(model.engine, tokenizer, None, task_prompt("en", timestamps=True), model.generation_config)
    ids = decoder.prompt_ids(752)
    assert ids[0] == tokenizer.audio_start_id and ids[751] == tokenizer.audio_end_id
    assert tokenizer.decode(ids[752:]) == task_prompt("en", timestamps=True)


def test_missing_file_is_an_audio_not_found_error(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(AudioNotFoundError, match="nothing.wav"):
        transcribe(model, tokenizer, tmp_path / "nothing.wav", progress=False)


def test_empty_and_too_short_audio_fail_before_any_segment(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(EmptyAudioError, match="empty.wav"):
        model.transcribe_stream(tokenizer, save_wav(tmp_path / "empty.wav", np.zeros(0)))
    with pytest.raises(AudioTooShortError, match="short.wav"):
        model.transcribe_stream(tokenizer, save_wav(tmp_path / "short.wav", np.full(200, 0.1)))


def test_segments_stream_as_windows_are_transcribed(tiny):
    model, tokenizer = tiny
    stream = model.transcribe_stream(tokenizer, AUDIO / "music.wav", max_new_tokens=4)
    assert stream.language == "en"
    first = next(iter(stream))
    assert first.end <= 30.0 and stream.transcript is None  # one window done, the rest not yet read
    stream.close()


@pytest.mark.parametrize("total", [None, 0.0, 12.0])
def test_progress_shows_with_or_without_a_known_length(capsys, total):
    segments = iter([Segment(0.0, 2.5, "a"), Segment(2.5, 5.0, "b")])
    t = TranscriptStream("en", segments, lambda: 5.0, total, progress=True).collect()
    assert t.text == "a b" and "transcribing" in capsys.readouterr().err
