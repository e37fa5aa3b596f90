"""Grounding: parsing timestamp answers, rendering them, and cutting the clips they point at."""

import wave

import numpy as np
import pytest

from qwen_audio.errors import AudioNotFoundError, QwenAudioError
from qwen_audio.grounding import GroundingError, GroundingResult, Span, cut, offset, parse_spans, render_seconds

from .conftest import AUDIO

SR = 16000
MIDDLE = 'The word "middle classes" starts at <|2.33|> seconds and ends at <|3.26|> seconds.'
SHELLEY = (
    'The person name "shelley\'s" is mentioned. "shelley\'s" starts at <|3.79|> seconds '
    "and ends at <|4.33|> seconds."
)
AUDIO_DIR = AUDIO


# ---- parse_spans ----------------------------------------------------------------------------------


def test_tutorial_word_answer():
    result = parse_spans(MIDDLE)
    assert isinstance(result, GroundingResult)
    assert result.problems == []
    assert result.spans == [Span(2.33, 3.26, "middle classes", None, MIDDLE)]


def test_tutorial_person_name_answer_takes_words_from_the_same_sentence():
    (span,) = parse_spans(SHELLEY).spans
    assert (span.start, span.end, span.words, span.clip) == (3.79, 4.33, "shelley's", None)
    assert span.text == "\"shelley's\" starts at <|3.79|> seconds and ends at <|4.33|> seconds."
    assert span.duration == pytest.approx(0.54)


def test_several_spans_in_order_with_their_own_words():
    answer = (
        'The word "music" starts at <|0.52|> seconds and ends at <|0.90|> seconds. '
        'The word "moon" starts at <|5.10|> seconds and ends at <|5.40|> seconds.\n'
        "It is also at <|8.00|>-<|8.25|>."
    )
    result = parse_spans(answer)
    assert result.problems == []
    assert [(s.start, s.end, s.words) for s in result.spans] == [
        (0.52, 0.90, "music"),
        (5.10, 5.40, "moon"),
        (8.00, 8.25, None),  # no quote in its sentence: words are not borrowed from the one before
    ]


def test_span_without_words_and_boundaries():
    result = parse_spans("Speech runs from <|0.00|> to <|30.00|>.")
    assert result.problems == []
    assert (result.spans[0].start, result.spans[0].end, result.spans[0].words) == (0.0, 30.0, None)


def test_clip_indices_from_ordinals_and_labels():
    answer = (
        'In the first audio, "cat" starts at <|1.00|> seconds and ends at <|1.50|> seconds. '
        'The word "dog" starts at <|2.00|> seconds and ends at <|2.40|> seconds in the second audio.\n'
        'Audio 3:\n"bird" starts at <|0.10|> and ends at <|0.20|>.'
    )
    spans = parse_spans(answer).spans
    assert [(s.words, s.clip) for s in spans] == [("cat", 0), ("dog", 1), ("bird", 2)]


def test_clip_index_in_chinese():
    (span,) = parse_spans("第二段音频中，“你好”从<|1.20|>秒开始，到<|1.80|>秒结束。").spans
    assert (span.start, span.end, span.words, span.clip) == (1.2, 1.8, "你好", 1)


@pytest.mark.parametrize(
    "name, index",
    [("the 3rd clip", 2), ("The Fourth recording", 3), ("Audio 0", None), ("第十段音频", 9), ("音频 2", 1)],
)
def test_clip_index_forms(name, index):
    assert parse_spans(f"{name}: <|1.00|> to <|2.00|>").spans[0].clip == index


def test_quoted_period_does_not_split_the_sentence():
    (span,) = parse_spans('The name "Mr. Smith" starts at <|1.00|> seconds and ends at <|1.60|> seconds.').spans
    assert span.words == "Mr. Smith"


def test_unpaired_start_is_reported_not_raised():
    result = parse_spans('The word "pale" starts at <|7.50|> seconds.')
    assert result.spans == []
    assert len(result.problems) == 1 and "unpaired" in result.problems[0] and "<|7.50|>" in result.problems[0]


@pytest.mark.parametrize(
    "bad, why",
    [("<|31.00|>", "out of range"), ("<|-1.00|>", "negative"), ("<|3.2.1|>", "malformed"), ("<|.|>", "malformed")],
)
def test_bad_timestamps_are_reported_and_their_pair_dropped(bad, why):
    result = parse_spans(f"It starts at {bad} and ends at <|4.00|>. Then <|5.00|> to <|6.00|>.")
    # Pairing stays aligned: the bad pair is dropped, the next pair survives.
    assert [(s.start, s.end) for s in result.spans] == [(5.0, 6.0)]
    assert len(result.problems) == 1 and bad in result.problems[0] and why in result.problems[0]


def test_reversed_span_is_reported():
    result = parse_spans("from <|4.00|> to <|3.00|>")
    assert result.spans == [] and "ends before it starts" in result.problems[0]


def test_no_timestamps_and_other_tokens_are_ignored():
    assert parse_spans("I cannot find that word.<|endoftext|>") == GroundingResult([], [])
    assert parse_spans("<|en|> <|2.00|> <|transcribe|> <|3.00|>").spans[0].end == 3.0


# ---- render_seconds and offset ----------------------------------------------------------------------


def test_render_seconds():
    assert render_seconds(MIDDLE) == 'The word "middle classes" starts at 2.33 seconds and ends at 3.26 seconds.'
    assert render_seconds("<|en|> at <|3.2.1|> <|endoftext|>") == "<|en|> at <|3.2.1|> <|endoftext|>"
    assert render_seconds("<|2.30|> <|0.00|>", fmt="{:.1f} s") == "2.3 s 0.0 s"


def test_offset_shifts_spans_for_later_windows():
    spans = parse_spans(MIDDLE).spans
    (shifted,) = offset(spans, 30.0)
    assert (shifted.start, shifted.end, shifted.words) == (pytest.approx(32.33), pytest.approx(33.26), "middle classes")
    assert spans[0].start == 2.33  # frozen: the originals are unchanged


# ---- cut ------------------------------------------------------------------------------------------


@pytest.fixture
def ramp():
    """2 s of distinct 16-bit values at 16 kHz, so any sample offset error shows."""
    return (np.arange(2 * SR) % 30000 - 15000).astype(np.int16)


def test_cut_exact_samples(ramp):
    piece = cut((ramp, SR), 0.5, 1.25)
    assert piece.dtype == np.float32 and piece.shape == (12000,)
    np.testing.assert_array_equal(piece, ramp[8000:20000] / 32768.0)


def test_cut_span_pad_and_clamping(ramp):
    span = Span(0.1, 1.9, "x")
    assert cut((ramp, SR), span).shape == (28800,)
    padded = cut((ramp, SR), span, pad=0.5)  # 0.1 - 0.5 and 1.9 + 0.5 clamp to the clip
    np.testing.assert_array_equal(padded, ramp / 32768.0)
    assert cut((ramp, SR), 1.5, 5.0).shape == (8000,)


def test_cut_writes_a_16_bit_16k_mono_wav(tmp_path, ramp):
    out = tmp_path / "word.wav"
    piece = cut((ramp, SR), Span(0.25, 0.75), out_path=out)
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, SR, 8000)
        back = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    np.testing.assert_array_equal(back, ramp[4000:12000])
    np.testing.assert_array_equal(cut(out, 0.0, 1.0), piece)  # the file reads back to the same samples


def test_cut_from_a_wav_file(tmp_path, ramp):
    path = tmp_path / "in.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR)
        w.writeframes(ramp.tobytes())
    np.testing.assert_array_equal(cut(path, 1.0, 1.001), ramp[16000:16016] / 32768.0)


@pytest.mark.parametrize("start, end", [(2.5, 3.0), (-1.0, 0.0), (2.0, 2.5)])
def test_span_outside_the_clip_raises_naming_it(ramp, start, end):
    with pytest.raises(GroundingError, match=rf"{start:.2f}-{end:.2f} s.*outside.*2\.00 s") as info:
        cut((ramp, SR), Span(start, end))
    assert isinstance(info.value, QwenAudioError) and isinstance(info.value, ValueError)


def test_empty_or_reversed_span_raises(ramp):
    with pytest.raises(GroundingError, match="1.00-0.50 s"):
        cut((ramp, SR), 1.0, 0.5)
    with pytest.raises(GroundingError):
        cut((ramp, SR), 1.0, 1.0)


def test_cut_argument_errors(ramp):
    with pytest.raises(TypeError):
        cut((ramp, SR), 1.0)
    with pytest.raises(TypeError):
        cut((ramp, SR), Span(0.0, 1.0), 2.0)


def test_missing_file_raises_audio_not_found(tmp_path):
    with pytest.raises(AudioNotFoundError, match="nowhere.flac"):
        cut(tmp_path / "nowhere.flac", 0.0, 1.0)


# ---- the tutorial's own cuts (made with ffmpeg -ss/-to) --------------------------------------------


@pytest.mark.skipif(not AUDIO_DIR.is_dir(), reason=f"tutorial audio not found at {AUDIO_DIR} (set QWEN_AUDIO_FIXTURES)")
@pytest.mark.parametrize(
    "source, answer, reference",
    [
        ("1272-128104-0000.flac", MIDDLE, "1272-128104-0000-middle_classes.wav"),
        (
            "1089_134686_000007_000004.wav",
            'The word "companionless" starts at <|6.28|> seconds and ends at <|7.15|> seconds.',
            "1089_134686_000007_000004_companionless.wav",
        ),
    ],
)
def test_matches_the_tutorial_ffmpeg_cuts(tmp_path, source, answer, reference):
    from qwen_audio.audio import load_audio

    (span,) = parse_spans(answer).spans
    piece = cut(AUDIO_DIR / source, span, out_path=tmp_path / "cut.wav")
    expected = load_audio(AUDIO_DIR / reference)
    assert abs(len(piece) - len(expected)) / SR <= 0.010
    n = min(len(piece), len(expected))
    # Same samples, up to resampling noise (the second clip is 24 kHz, resampled by both sides).
    assert np.abs(piece[:n] - expected[:n]).max() < 0.01
    np.testing.assert_array_equal(load_audio(tmp_path / "cut.wav"), piece)
