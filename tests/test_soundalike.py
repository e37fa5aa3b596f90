"""lite finds a word Whisper misheard: by its sound in the transcript, checked against the audio.

The clip is the tutorial's LibriSpeech 1272-128104-0000 with its published forced-alignment times (MFA), and
transcripts with mishearings put in by hand, so the audio is the ground truth and no Whisper run decides the
result; the end-to-end test asks through `chat`.
"""

from __future__ import annotations

import pytest

from .conftest import AUDIO
from .test_lite import MFA
from .test_lite_events import ask, clip, lite, spans  # noqa: F401  (lite: the shared module fixture)

pytest.importorskip("pocketsphinx", reason="the English aligner is not installed: pip install pocketsphinx")


@pytest.fixture(scope="module")
def aligner():
    from qwen_audio.lite.align import PhoneticAligner

    return PhoneticAligner.create()


@pytest.fixture(scope="module")
def samples():
    from qwen_audio.audio import load_audio

    if not AUDIO.is_dir():
        pytest.skip(f"tutorial clips not found at {AUDIO} (set QWEN_AUDIO_FIXTURES)")
    return load_audio(str(AUDIO / "1272-128104-0000.flac"))


def heard(*misheard: tuple[str, str]):
    """MFA's words of the clip with some replaced by what a recogniser might have written instead."""
    from qwen_audio.lite.asr import Word

    swap = dict(misheard)
    return [Word(swap.get(w, w), s, e, 1.0) for w, s, e in MFA]


def test_phone_similarity_ranks_near_sounds_first(aligner):
    from qwen_audio.lite.soundalike import phone_similarity, phones

    amazon = phones(aligner, ["amazon"])
    assert phone_similarity(amazon, amazon) == 1.0
    assert phone_similarity(amazon, phones(aligner, ["m", "and", "m"])) > 0.45
    assert phone_similarity(amazon, phones(aligner, ["rainforest"])) < 0.3
    assert phone_similarity(phones(aligner, ["classes"]), phones(aligner, ["glasses"])) > 0.9  # K/G: voicing only
    assert phone_similarity(amazon, []) == 0.0


@pytest.mark.parametrize("wrong, asked, index", [
    ("kilda", "Quilter", 1),  # the word the user knows, written by the recogniser as something else
    ("possum", "apostle", 4),
    ("cause-bell", "gospel", 16),
])
def test_a_misheard_word_is_found_where_it_was_said(aligner, samples, wrong, asked, index):
    from qwen_audio.lite.soundalike import find_by_sound

    words = heard((MFA[index][0], wrong))
    match = find_by_sound(samples, words, asked, aligner)
    assert match is not None
    _, start, end = MFA[index]
    assert abs(match.start - start) <= 0.12 and abs(match.end - end) <= 0.12, match
    assert match.heard == wrong and match.fit > 0  # the asked word fits the sound better than the mishearing


@pytest.mark.parametrize("asked", ["elephant", "amazon", "bicycle", "sunshine", "Paris"])
def test_a_word_not_said_is_not_found(aligner, samples, asked):
    from qwen_audio.lite.soundalike import find_by_sound

    # "middle" written as "M&M": a transcript that fits its audio badly must not let any word through
    assert find_by_sound(samples, heard(("middle", "M&M")), asked, aligner) is None


def test_grounding_a_misheard_word_names_the_span_and_what_was_heard(lite):  # noqa: F811
    r, _ = ask(lite, [{"audio": clip("1272-128104-0000.flac")},
                      {"text": 'Find the start time and end time of the word "castles"'}])
    [(a, b)] = spans(r)
    assert abs(a - 2.62) <= 0.15 and abs(b - 3.27) <= 0.15, r  # MFA: classes 2.62-3.27
    assert r.startswith('The word "castles" starts at') and '"classes"' in r, r

    r, _ = ask(lite, [{"audio": clip("1272-128104-0000.flac")}, {"text": '找出"castles"的开始时间和结束时间'}])
    assert spans(r) and "classes" in r and "转写" in r, r

    r, _ = ask(lite, [{"audio": clip("1272-128104-0000.flac")},
                      {"text": 'Find the start time and end time of the word "cosmos"'}])
    assert not spans(r) and r.startswith('I can\'t find the word "cosmos"'), r


def test_a_word_spelled_as_heard_has_no_note(lite):  # noqa: F811
    r, _ = ask(lite, [{"audio": clip("1272-128104-0000.flac")},
                      {"text": 'Find the start time and end time of the word "gospel"'}])
    assert len(spans(r)) == 1 and "transcript" not in r, r


def test_a_chinese_homophone_is_found_by_its_pinyin():
    pytest.importorskip("pypinyin", reason="pypinyin is not installed: pip install pypinyin")
    from qwen_audio.lite.asr import Word
    from qwen_audio.lite.soundalike import find_by_pinyin

    heard = [Word("你们", 0.1, 0.4, 1.0), Word("是吧", 0.4, 0.9, 1.0)]  # how an AMD EPYC heard 你没事吧
    match = find_by_pinyin(heard, "没事")  # mei shi against men shi: one syllable the same, one its initial
    assert match is not None and match.heard == "们是" and (match.start, match.end) == (0.25, 0.65)
    assert find_by_pinyin(heard, "你没事吧").heard == "你们是吧"
    assert find_by_pinyin(heard, "自行车") is None and find_by_pinyin(heard, "hello") is None


def test_grounding_a_chinese_homophone_in_real_speech(lite):  # noqa: F811
    pytest.importorskip("pypinyin", reason="pypinyin is not installed: pip install pypinyin")
    r, _ = ask(lite, [{"audio": clip("你没事吧-轻松.wav")}, {"text": '找出"梅石"的开始时间和结束时间'}])
    [(a, b)] = spans(r)  # 梅石 (mei shi) sounds as 没事: the clip says 哈哈你没事吧
    assert 0.0 <= a < b <= 3.0 and "转写" in r, r
    r, _ = ask(lite, [{"audio": clip("你没事吧-轻松.wav")}, {"text": '找出"自行车"的开始时间和结束时间'}])
    assert not spans(r), r
