"""lite's per-clip report from given tagger scores: the label hierarchy, the time course, and Whisper's
words where the tagger hears no speech (numbers made here; the recorded figures are in benchmarks/lite_events.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="the lite extra is not installed: pip install 'qwen-audio[lite]'")

from qwen_audio.lite.asr import Hearing, Word  # noqa: E402
from qwen_audio.lite.events import Tags  # noqa: E402
from qwen_audio.lite.report import make_report  # noqa: E402

ANIMAL, DOG_BARK, HORSE, ROAR, SPEECH = 67, 69, 82, 104, 0
HOP = 0.24


def tags(n: int, scores: dict[int, list[float]]) -> Tags:
    """n patches, every class 0.01 except `scores` (class -> one score per patch)."""
    probs = np.full((n, 521), 0.01, np.float32)
    for c, per_patch in scores.items():
        probs[:, c] = per_patch
    return Tags(probs, np.arange(n) * HOP, tuple(f"class {i}" for i in range(521)), n * HOP + 0.72)


def report(t: Tags, hearing: Hearing | None = None):
    silence = Hearing("transcribe", "", None, 0.0, duration=t.duration)
    samples = (np.random.default_rng(0).standard_normal(int(t.duration * 16000)) * 0.1).astype(np.float32)
    return make_report(samples, hearing or silence, t)


def test_a_specific_animal_is_named_instead_of_animal():
    r = report(tags(8, {ANIMAL: [0.9] * 8, DOG_BARK: [0.7] * 8}))  # "Animal" scores higher, as YAMNet's does
    assert [s.name for s in r.sounds] == ["a dog barking"]
    alone = report(tags(8, {ANIMAL: [0.9] * 8}))  # with no specific animal, the parent is all there is
    assert [s.name for s in alone.sounds] == ["an animal"]


def test_sounds_are_ranked_by_their_time_course_not_one_patch():
    # A horse heard for six patches outranks a roar that peaks higher in one.
    r = report(tags(8, {HORSE: [0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.01, 0.01], ROAR: [0.01] * 6 + [0.9, 0.01]}))
    assert [s.name for s in r.sounds] == ["a horse", "a lion's roar"]
    assert r.sounds[1].score > r.sounds[0].score  # the peak is still reported as the score


def test_a_few_words_where_the_tagger_hears_no_speech_are_not_speech():
    words = (Word("Thank", 0.1, 0.3, 0.01), Word("you.", 0.3, 0.6, 0.95))
    heard = Hearing("transcribe", "Thank you.", "en", 0.9, words, ((0.0, 0.8),), 2.4)
    grunt = report(tags(8, {SPEECH: [0.01] * 8}), heard)
    assert not grunt.has_speech and grunt.hearing.words == ()
    talk = report(tags(8, {SPEECH: [0.9] * 8}), heard)  # the same words where the tagger hears speech stay
    assert talk.has_speech and talk.hearing.text == "Thank you."
    long = (*words, Word("very", 0.6, 0.8, 0.9), Word("much.", 0.8, 1.0, 0.9))
    many = report(tags(8, {SPEECH: [0.01] * 8}), Hearing("transcribe", "Thank you very much.", "en", 0.9, long))
    assert many.has_speech  # more than a few words Whisper is sure of are not taken for a hallucination
    unsure = tuple(Word(w.text, w.start, w.end, 0.2) for w in long)
    doubt = report(tags(8, {SPEECH: [0.01] * 8}), Hearing("transcribe", "Thank you very much.", "en", 0.9, unsure))
    assert not doubt.has_speech


def test_the_lead_of_an_open_answer_names_every_confident_layer():
    """Speech over a barking dog is both (the lead said only the speech); a sound the tagger is unsure of is not."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.phrases import ZH

    words = (Word("Sit", 0.2, 0.5, 0.9), Word("down.", 0.5, 0.9, 0.9))
    heard = Hearing("transcribe", "Sit down.", "en", 0.9, words, ((0.0, 1.0),), 1.9)
    both = report(tags(8, {SPEECH: [0.9] * 8, DOG_BARK: [0.8] * 8}), heard)
    assert A.what_phrase(both) == 'a person speaking, in a English, saying, "Sit down.", with a dog barking heard too'
    assert A.what_phrase(both, ZH) == '一个人在用英语说话，内容是"Sit down."，同时还能听到狗叫'
    unsure = report(tags(8, {SPEECH: [0.9] * 8, DOG_BARK: [0.3] * 8}), heard)
    assert "heard too" not in A.what_phrase(unsure) and A.loud_sounds(unsure) == []


def test_a_bell_outside_music_is_a_bell_ringing_and_inside_music_the_instrument():
    """YAMNet's Ding (477), Cowbell (87, filed under Cattle in AudioSet) and Bicycle bell (198) on recorded bells
    had been "beeps", "cattle" and nothing (bells were an instrument only, named only while music plays)."""
    ding, cowbell, beep, bicycle_bell, music = 477, 87, 475, 198, 132
    r = report(tags(6, {ding: [0.9, 0.6, 0.01, 0.01, 0.01, 0.01], cowbell: [0.7, 0.01, 0.01, 0.01, 0.01, 0.01]}))
    assert [s.name for s in r.sounds] == ["a bell ringing"]
    assert [s.name for s in report(tags(6, {bicycle_bell: [0.7] * 6})).sounds] == ["a bell ringing"]
    assert [s.name for s in report(tags(6, {beep: [0.9] * 6})).sounds] == ["beeps"]
    song = report(tags(6, {bicycle_bell: [0.7] * 6, music: [0.9] * 6}))
    assert [i.name for i in song.instruments] == ["bells"] and song.sounds == ()


def test_how_loud_is_answered_with_the_measured_level_and_what_a_level_cannot_tell():
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import LOUDNESS, route
    from qwen_audio.lite.phrases import ZH

    t = tags(8, {})
    loud = make_report(np.full(16000, 0.5, np.float32), Hearing("transcribe", "", None, 0.0, duration=1.0), t)
    soft = make_report(np.full(16000, 0.01, np.float32), Hearing("transcribe", "", None, 0.0, duration=1.0), t)
    assert (loud.loudness_dbfs, loud.peak_dbfs, soft.loudness_dbfs) == (-6.0, -6.0, -40.0)
    clips = [A.Heard(i, 2, lambda task: None, lambda r=r: r) for i, r in enumerate((loud, soft))]
    text = A.loudness(clips)
    assert text.startswith("The first audio is loud: its level is -6 dBFS on average, peaking at -6 dBFS. "
                           "The second audio is quiet: its level is -40 dBFS")
    assert "cannot be told" in text
    assert "The first audio is the loudest on average." in A.loudness(clips, question="Which one is louder?")
    assert "The second audio is the quietest on average." in A.loudness(clips, question="Which clip is the quietest?")
    assert "第二段音频平均最轻。" in A.loudness(clips, ZH, "哪一段更轻？")
    assert A.loudness(clips[:1], ZH).startswith("第一段音频很响：平均电平-6 dBFS，峰值-6 dBFS。")
    assert [route(q).kind for q in ("How loud is it?", "这个声音有多大？", "他多大了？")] == [LOUDNESS, LOUDNESS, "speaker"]


def test_how_long_is_answered_with_the_whole_recording_and_what_is_heard_of_it():
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import DURATION, route
    from qwen_audio.lite.phrases import ZH

    r = report(tags(8, {}))  # 8 patches: 2.64 s heard
    long = A.Heard(0, 2, lambda task: None, lambda: r, seconds=96.6)
    short = A.Heard(1, 2, lambda task: None, lambda: r)
    assert A.duration([long, short]) == ("The first audio is 96.6 seconds long. Questions about it hear its first 3 "
                                         "seconds. The second audio is 2.6 seconds long.")
    assert A.duration([short], ZH) == "第二段音频长2.6秒。"
    assert [route(q).kind for q in ("How long is the second audio?", "这段音频有多长？", "How long does the glass break?")] \
        == [DURATION, DURATION, "when"]


def test_a_yes_no_question_about_a_named_sound_is_answered_from_the_report():
    """'Is she singing?' had gone to the LLM (no cue); now the report answers whether it heard singing."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import SOUND, mentioned_sounds, route

    assert [route(q).kind for q in ("Is she singing?", "Does a bell ring?", "Is it good?")] == [SOUND, SOUND, "open"]
    assert mentioned_sounds("Is the phone ringing?") == ["a telephone ringing"]
    assert mentioned_sounds("Does a bell ring?") == ["a bell ringing"]
    bark = report(tags(6, {DOG_BARK: [0.8] * 6}))
    clip = [A.Heard(0, 1, lambda task: None, lambda: bark)]
    assert A.what_is(clip, "Is she singing?").startswith("No, I don't hear singing")
    assert A.what_is(clip, "Does a dog bark?").startswith("Yes")


def test_how_many_people_speak_says_lite_cannot_tell_voices_apart():
    """'How many people are speaking?' had gone to the LLM, which said "one person" from a transcript it was given."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import SPEAKER, asks_speaker_count, route
    from qwen_audio.lite.phrases import ZH

    questions = ("How many people are speaking?", "这段音频里有几个人说话？", "What is the number of speakers?")
    assert [route(q).kind for q in questions] == [SPEAKER] * 3 and all(map(asks_speaker_count, questions))
    assert not asks_speaker_count("Is the speaker a man or a woman?")
    words = (Word("Sit", 0.2, 0.5, 0.9), Word("down.", 0.5, 0.9, 0.9))
    heard = Hearing("transcribe", "Sit down.", "en", 0.9, words, ((0.0, 1.0),), 1.9)
    talk = report(tags(8, {SPEECH: [0.9] * 8}), heard)  # speech, no pitch in the noise it is made of
    clip = [A.Heard(0, 1, lambda task: heard, lambda: talk)]
    assert A.compose(route(questions[0]), questions[0], clip) == (
        "The lite model does not tell voices apart, so it cannot say how many people speak. The audio has no voice I "
        "can measure; it is a person speaking, in a English, saying, \"Sit down.\".")  # no pitch: no guess from it
    assert A.compose(route(questions[1]), questions[1], clip).startswith("lite模型不能区分不同的说话人")
    assert "cannot say how many" not in A.compose(route("Is it a man?"), "Is it a man?", clip)
    silent = [A.Heard(0, 1, lambda task: None, lambda: report(tags(8, {})))]
    assert A.compose(route(questions[0]), questions[0], silent).startswith("No one speaks in this audio; it is ")
    assert A.speaker(silent, ZH, count=True).startswith("这段音频里没有人说话")


def test_the_mood_of_music_is_the_taggers_mood_tags_or_says_there_are_none():
    """'Is the music happy or sad?' had gone to the voice cues (which found no voice); a voice's mood stays there."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import EMOTION, MUSIC, route

    music, piano, happy = 132, 153, 271
    assert [route(q).kind for q in ("Is the music happy or sad?", "这首歌听起来开心还是难过？", "Does she sound happy?",
                                    "Does the speaker sound tired?")] == [MUSIC, MUSIC, EMOTION, EMOTION]
    plain = report(tags(8, {music: [0.9] * 8, piano: [0.5] * 8}))
    merry = report(tags(8, {music: [0.9] * 8, piano: [0.5] * 8, happy: [0.4] * 8}))
    ask = "Is the music happy or sad?"
    assert "no mood tag" in A.music([A.Heard(0, 1, lambda task: None, lambda: plain)], question=ask)
    said = A.music([A.Heard(0, 1, lambda task: None, lambda: merry)], question=ask)
    assert "mood tags: class 271 (0.40)" in said and "no mood tag" not in said
    assert "mood" not in A.music([A.Heard(0, 1, lambda task: None, lambda: plain)], question="What kind of music is this?")


def test_what_no_sound_can_tell_accents_and_chinese_yes_no_questions_are_answered_from_the_report():
    """Composers, song titles, a speaker's name or home had gone to the LLM (which invents them) or to the pitch
    answer; an accent to the pitch answer; 她在笑吗 to the LLM."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import DESCRIBE, LANGUAGE, SOUND, route, yes_no

    for q in ("Who composed this?", "这首曲子是谁写的？", "What's the speaker's name?", "这个人是哪里人？",
              "What's the name of this song?", "这是哪首歌？", "Where is she from?"):
        assert A.unknowable(q), q
    assert not A.unknowable("What is the name of the person mentioned?")  # a name said in the speech: found there
    assert route("What is the name of the person mentioned?").kind == "person"
    assert [route(q).kind for q in ("What are the lyrics?", "请把这段话写下来", "写一个故事")] == [DESCRIBE, DESCRIBE, "open"]
    words = (Word("Sit", 0.2, 0.5, 0.9), Word("down.", 0.5, 0.9, 0.9))
    heard = Hearing("transcribe", "Sit down.", "en", 0.9, words, ((0.0, 1.0),), 1.9)
    r = report(tags(8, {SPEECH: [0.9] * 8}), heard)
    clip = [A.Heard(0, 1, lambda task: heard, lambda: r)]
    q = "What is the speaker's accent?"
    assert route(q).kind == LANGUAGE
    assert A.compose(route(q), q, clip) == ("The speech is in English. Whisper names the language only: the lite model "
                                            "does not tell accents or dialects apart, nor judge pronunciation or fluency.")
    assert "accent" not in A.compose(route("What language is it?"), "What language is it?", clip)
    assert yes_no("她在笑吗？") and route("她在笑吗？").kind == SOUND and not yes_no("这是什么声音？")
    assert A.compose(route("她在笑吗？"), "她在笑吗？", clip).startswith("没有，听不到笑声")


def test_elliptical_follow_ups_ask_the_last_question_again_and_cjk_quotes_close_anywhere():
    """'这段呢？' ('and this one?') had gone to the LLM; “没事” followed by 在 was no quote, so the word was not found."""
    from qwen_audio.lite.intent import GROUND, route, standing_question

    earlier = ["她说了什么？", "What does it say?"]
    for q in ("这段呢？", "And this one?", "What about the second clip?", "那第二段呢？", "How about audio 2?"):
        assert standing_question(q, earlier) == "What does it say?", q
    assert standing_question("这段呢？", ["她说了什么？", "And this one?"]) == "她说了什么？"  # one ellipsis after another
    for q in ("What is this?", "And the glass?", "这个怎么样？"):
        assert standing_question(q, earlier) == q
    assert standing_question("And this one?", []) == "And this one?"
    assert route("第二段里“没事”在什么时候说的？") == route("When is “没事” said?") == route('When is "没事" said?')
    assert route("第二段里“没事”在什么时候说的？").kind == GROUND and route("第二段里“没事”在什么时候说的？").phrase == "没事"
    assert route("When don't they talk?").kind != GROUND  # an apostrophe opens no quote


def test_when_the_music_plays_and_what_genre_it_has_are_said_when_asked():
    """'When does the music start?' had been "no sound event I can name"; a genre question with no genre tag had
    been answered with the instrument only."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.phrases import ZH

    music, piano = 132, 153
    r = report(tags(8, {music: [0.01, 0.01, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], piano: [0.5] * 8}))
    assert r.music_spans == ((0.84, 2.64),)  # from patch 2 (0.48 s): its centre less half a hop
    clip = [A.Heard(0, 1, lambda task: None, lambda: r)]
    assert A.when(clip, "When does the music start?") == "The music plays from <|0.84|> to <|2.64|> seconds."
    assert A.when(clip, "音乐什么时候开始？", ZH) == "音乐从<|0.84|>秒播放到<|2.64|>秒。"
    assert "no genre tag" in A.music(clip, question="What genre is it?")
    assert "genre" not in A.music(clip, question="Is there music?")
    assert report(tags(8, {piano: [0.5] * 8})).music_spans == ()  # no music, no span


def test_which_clip_questions_are_answered_per_clip():
    """'Which clip has the glass?', 'Which one is longest?', 'Which clip is the quietest?' had gone to the LLM."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import DURATION, LOUDNESS, SOUND, route

    glass = 435
    assert [route(q).kind for q in ("Which clip has the glass?", "哪一段有玻璃破碎的声音？", "Which one is longest?",
                                    "Which clip is the quietest?", "What is in the third audio?")] == \
        [SOUND, SOUND, DURATION, LOUDNESS, SOUND]
    broken, quiet = report(tags(6, {glass: [0.9] * 6})), report(tags(6, {}))
    clips = [A.Heard(i, 2, lambda task: None, lambda r=r: r) for i, r in enumerate((broken, quiet))]
    said = A.compose(route("Which clip has the glass?"), "Which clip has the glass?", clips)
    assert said.startswith("Yes: breaking glass is heard in the first audio") and "No, I don't hear breaking glass in " \
        "the second audio" in said, said


def test_quality_questions_are_answered_from_measured_levels():
    """'Is there any background noise?' had been answered with the transcript only, 背景里有噪音吗 by the LLM with "背景里有
    噪音" for a clean reading: now the recording's level, peak, how far its quiet moments lie under its loud ones, and
    what else is heard beside the speech."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import QUALITY, route
    from qwen_audio.lite.phrases import ZH
    from qwen_audio.lite.report import frame_levels

    rng = np.random.default_rng(0)
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    hiss = lambda n, level: (rng.standard_normal(n) * level).astype(np.float32)  # noqa: E731
    quiet_bg = np.concatenate([tone + hiss(16000, 1e-3), hiss(16000, 1e-3)])  # tone, then a pause with faint hiss
    noisy_bg = np.concatenate([tone + hiss(16000, 0.05), hiss(16000, 0.05)])
    q, loud = frame_levels(quiet_bg)
    assert -62 < q < -58 and -14 < loud < -12  # the hiss's -60 dBFS and the tone's -13.5 dBFS
    assert frame_levels(np.zeros(100, np.float32)) == (-180.0, -180.0) and frame_levels(np.zeros(0, np.float32))[0] == -180.0

    def clip_of(samples, hearing=None):
        t = tags(8, {SPEECH: [0.9] * 8} if hearing else {})
        r = make_report(samples, hearing or Hearing("transcribe", "", None, 0.0, duration=2.0), t)
        return [A.Heard(0, 1, lambda task: None, lambda: r)]

    for question in ("Is there any background noise?", "背景里有噪音吗？", "What's the audio quality like?", "音质怎么样？"):
        assert route(question).kind == QUALITY, question
    said = A.quality(clip_of(quiet_bg))
    assert "-60 dBFS, 47 dB under its loudest: a quiet background" in said and "may be clipped" not in said, said
    assert "-26 dBFS, only 13 dB under its loudest: sound throughout" in A.quality(clip_of(noisy_bg))  # the hiss: -26
    clipped = np.concatenate([np.ones(800, np.float32), np.zeros(16000, np.float32)])
    assert "full scale: it may be clipped" in A.quality(clip_of(clipped))
    assert "digital silence" in A.quality(clip_of(clipped)) and "数字静音" in A.quality(clip_of(clipped), ZH)
    words = (Word("Sit", 0.2, 0.5, 0.9), Word("down.", 0.5, 0.9, 0.9))
    heard = Hearing("transcribe", "Sit down.", "en", 0.9, words, ((0.0, 1.0),), 2.0)
    assert "Besides the speech, no other sound stands out." in A.quality(clip_of(quiet_bg, heard))
    assert "除了说话声，没有其他突出的声音。" in A.quality(clip_of(quiet_bg, heard), ZH)


def test_keys_ages_and_how_a_clip_was_made_are_said_to_be_unknown():
    """The LLM had named a key ("C major"), called the glass "most likely outdoors" and the Quilter reading "a real
    recording"; 'How long is this?' had given the music's span, 'How old is the speaker?' the pitch only."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import DURATION, MUSIC, PERSON, route
    from qwen_audio.lite.phrases import ZH

    music, piano = 132, 153
    r = report(tags(8, {music: [0.9] * 8, piano: [0.5] * 8}))
    clip = [A.Heard(0, 1, lambda task: None, lambda: r)]
    for q in ("What key is this piece in?", "这首曲子是什么调？", "Is this piece fast or slow?"):
        assert route(q).kind == MUSIC, q
    assert A.music(clip, question="What key is this piece in?").endswith("cannot say which key the music is in or which "
                                                                         "notes play.")
    assert A.music(clip, ZH, "这首曲子是什么调？").endswith("无法判断音乐是什么调、弹了哪些音。")
    assert "key" not in A.music(clip, question="Is there music?")
    assert route("How long is this?").kind == DURATION and route("Does he mention a name?").kind == PERSON
    for q in ("Is this indoors or outdoors?", "这段录音是在室内还是室外？", "Is it a live recording?",
              "Is this a real recording or a synthetic voice?", "是真人在说话吗？"):
        assert A.unknowable(q) == "unknowable_setting", q
    for q in ("Write a story set outdoors.", "Imagine this happened indoors. What should I do?", "What is it?"):
        assert A.unknowable(q) == "", q
    assert A.unknowable("Who composed this?") == "unknowable"
    words = (Word("Sit", 0.2, 0.5, 0.9), Word("down.", 0.5, 0.9, 0.9))
    heard = Hearing("transcribe", "Sit down.", "en", 0.9, words, ((0.0, 1.0),), 1.9)
    talk = [A.Heard(0, 1, lambda task: heard, lambda: report(tags(8, {SPEECH: [0.9] * 8}), heard))]
    assert A.compose(route("How old is the speaker?"), "How old is the speaker?", talk).endswith(
        "does not estimate a speaker's age.")
    assert "age" not in A.compose(route("Is it a man or a woman?"), "Is it a man or a woman?", talk)


def test_first_and_last_words_and_how_many_are_said_come_from_the_timed_words():
    """'What is the first word?' had gone to the LLM, 'the last word' and 'how many words' to the whole transcript,
    'Count the words.' to the speech's span."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import DESCRIBE, route
    from qwen_audio.lite.phrases import ZH

    words = (Word("Mr.", 0.54, 0.78, 0.9), Word("Quilter", 0.78, 1.28, 0.9), Word("spoke.", 1.3, 1.9, 0.9))
    heard = Hearing("transcribe", "Mr. Quilter spoke.", "en", 0.9, words, ((0.5, 2.0),), 2.4)
    talk = [A.Heard(0, 1, lambda task: heard, lambda: report(tags(8, {SPEECH: [0.9] * 8}), heard))]
    ask = lambda q: A.compose(route(q), q, talk)  # noqa: E731
    for q in ("What is the first word?", "What is the last word he says?", "How many words are spoken?", "Count the words.",
              "他说的第一个词是什么？", "他说了几个字？"):
        assert route(q).kind == DESCRIBE, q
    assert ask("What is the first word?") == 'The first word is "Mr.", from <|0.54|> to <|0.78|> seconds.'
    assert ask("What is the last word he says?") == 'The last word is "spoke", from <|1.30|> to <|1.90|> seconds.'
    assert ask("How many words are spoken?") == ask("Count the words.") == "3 words are spoken."
    zh_words = (Word("你没事", 1.5, 2.0, 0.9), Word("吧", 2.0, 2.3, 0.9))
    zh = Hearing("transcribe", "你没事吧。", "zh", 0.9, zh_words, ((1.4, 2.4),), 3.0)
    zh_clip = [A.Heard(0, 1, lambda task: zh, lambda: report(tags(8, {SPEECH: [0.9] * 8}), zh))]
    assert A.word_facts(zh_clip, "他说了几个字？", ZH) == "一共说了4个字。"
    assert A.word_facts(zh_clip, "最后一个词是什么？", ZH) == '最后一个词是"吧"，从<|2.00|>秒到<|2.30|>秒。'
    silent = [A.Heard(0, 1, lambda task: None, lambda: report(tags(8, {})))]
    assert A.word_facts(silent, "What is the first word?") == "I hear no speech in this audio."


def test_same_speaker_pauses_file_properties_and_when_a_piece_was_made():
    """两段音频是同一个人说的吗 had been answered by the LLM ("两段音频是同一个人说的"), "What year is this from?" with "the 19th
    century", "Is it mono or stereo?" with "Mono", "How long is the pause?" with the speech's span, "Does the music have
    drums?" with the instrument only, "Is he a native English speaker?" with the pitch."""
    from qwen_audio.audio import SourceFormat
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import FORMAT, INSTRUMENT, LANGUAGE, SPEAKER, WHEN, route
    from qwen_audio.lite.phrases import ZH

    for q in ("Are these two clips the same speaker?", "两段音频是同一个人说的吗？"):
        assert route(q).kind == SPEAKER, q
    words = (Word("Sit", 0.2, 0.5, 0.9), Word("down.", 1.5, 1.9, 0.9))
    heard = Hearing("transcribe", "Sit down.", "en", 0.9, words, ((0.1, 0.6), (0.7, 0.9), (1.4, 2.0)), 2.4)
    talk = [A.Heard(0, 1, lambda task: heard, lambda: report(tags(8, {SPEECH: [0.9] * 8}), heard))]
    assert A.compose(route("Is it the same speaker?"), "Is it the same speaker?", talk).startswith(
        "The lite model does not tell voices apart, so it cannot say whether the same person speaks.")
    assert route("How long is the pause?").kind == WHEN and route("这段话中间有停顿吗？").kind == WHEN
    assert A.when(talk, "How long is the pause?") == \
        "There is one pause in the speech, from <|0.90|> to <|1.40|> seconds (0.50 s)."  # 0.1 s at 0.6 s is no pause
    unbroken = Hearing("transcribe", "Sit down.", "en", 0.9, words, ((0.1, 2.0),), 2.4)
    one = [A.Heard(0, 1, lambda task: unbroken, lambda: report(tags(8, {SPEECH: [0.9] * 8}), unbroken))]
    assert A.when(one, "这段话中间有停顿吗？", ZH) == "语音从<|0.10|>秒到<|2.00|>秒，中间没有停顿。"
    for q in ("What year is this from?", "Is this from a movie?", "这首曲子是哪一年的？", "What is the speaker's profession?",
              "Is he British?", "他是哪国人？"):
        assert A.unknowable(q) == "unknowable", q
    for q in ("Is it mono or stereo?", "What format is this file?", "What is the sample rate?", "采样率是多少？"):
        assert route(q).kind == FORMAT and not A.unknowable(q), q
    fmt = SourceFormat("MP3 (MPEG audio layer 3)", 44100, 2, 128000)
    mp3 = [A.Heard(0, 1, lambda task: heard, lambda: report(tags(8, {})), seconds=4.04, source_format=fmt)]
    assert A.file_format(mp3) == ("The audio is MP3 (MPEG audio layer 3), 44.1 kHz, stereo, 128 kbit/s, 4.0 s long. "
                                  "The lite model hears every clip decoded to 16 kHz mono.")
    array = [A.Heard(0, 1, lambda task: heard, lambda: report(tags(8, {})), seconds=1.0,
                     source_format=SourceFormat(None, 48000, 1))]
    assert A.file_format(array, ZH).startswith("这段音频是内存中的数组、48 kHz、单声道，时长1.0秒。")
    assert route("Is he a native English speaker?").kind == LANGUAGE and route("Rate the pronunciation.").kind == LANGUAGE
    music, piano = 132, 153
    r = report(tags(8, {music: [0.9] * 8, piano: [0.5] * 8}))
    clip = [A.Heard(0, 1, lambda task: None, lambda: r)]
    assert route("Does the music have drums?").kind == INSTRUMENT
    assert A.compose(route("Does the music have drums?"), "Does the music have drums?", clip).startswith("No, I don't hear drums")
    assert "no genre tag" in A.music(clip, question="Is this classical music?")


def test_the_loudest_second_and_how_sure_whisper_was():
    """'When is it loudest?' had been the levels only, 'How confident are you in the transcription?' the transcript."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import DESCRIBE, LOUDNESS, route
    from qwen_audio.lite.phrases import ZH
    from qwen_audio.lite.report import loudest_second

    burst = np.zeros(48000, np.float32)
    burst[30000:36000] = 0.5  # 1.875-2.25 s
    a, b, level = loudest_second(burst)
    assert abs(b - a - 1.0) < 1e-9 and a <= 1.875 and b >= 2.25 and -11 < level < -10  # 0.375 s at -6 dBFS in one second: -10.3
    assert loudest_second(np.full(8000, 0.1, np.float32)) == (0.0, 0.5, -20.0)  # shorter than a second: all of it
    r = make_report(burst, Hearing("transcribe", "", None, 0.0, duration=3.0), tags(8, {}))
    clip = [A.Heard(0, 1, lambda task: None, lambda: r)]
    assert route("When is it loudest?").kind == LOUDNESS and route("最响的是什么时候？").kind == LOUDNESS
    assert f"Its loudest second is from <|{a:.2f}|> to <|{b:.2f}|> seconds" in A.loudness(clip, question="When is it loudest?")
    assert "loudest second" not in A.loudness(clip, question="How loud is it?")
    words = (Word("Sit", 0.2, 0.5, 0.9), Word("down.", 0.5, 0.9, 0.5), Word("now.", 1.0, 1.2, 0.7))
    heard = Hearing("transcribe", "Sit down now.", "en", 0.9, words, ((0.0, 1.3),), 1.9)
    talk = [A.Heard(0, 1, lambda task: heard, lambda: report(tags(8, {SPEECH: [0.9] * 8}), heard))]
    for q in ("How confident are you in the transcription?", "转写准确吗？"):
        assert route(q).kind == DESCRIBE, q
    q = "How confident are you in the transcription?"
    assert A.compose(route(q), q, talk) == ('Whisper gives its 3 words a mean probability of 0.70; it is least sure of '
                                            '"down" (0.50) and "now" (0.70). These are Whisper\'s own probabilities, '
                                            'not a measured error rate.')
    assert A.transcript_confidence(talk, ZH).startswith("Whisper对这3个词的平均概率是0.70")
    assert A.transcript_confidence(clip) == "I hear no speech in this audio."


def test_sentences_stretches_directions_and_a_pieces_mood_by_its_emotion_word():
    """'How many sentences?' had been the transcript, 玻璃碎了几次 a span that did not say what it counts, "Where is the
    sound coming from?" and 他在哪里 the LLM's or the speech's times, "Is it sad?" of a piece 'no speaking voice'."""
    from qwen_audio.lite import answer as A
    from qwen_audio.lite.intent import EMOTION, route
    from qwen_audio.lite.phrases import ZH

    words = (Word("Mr.", 0.1, 0.3, 0.9), Word("Smith", 0.3, 0.6, 0.9), Word("left.", 0.6, 0.9, 0.9), Word("Bye!", 1.0, 1.2, 0.9))
    heard = Hearing("transcribe", "Mr. Smith left. Bye!", "en", 0.9, words, ((0.0, 1.3),), 1.9)
    talk = [A.Heard(0, 1, lambda task: heard, lambda: report(tags(8, {SPEECH: [0.9] * 8}), heard))]
    assert A.word_facts(talk, "How many sentences does he say?").startswith("2 sentences are spoken")  # "Mr." ends none
    assert A.word_facts(talk, "他说了几句话？", ZH).startswith("按Whisper写的标点，一共说了2句话")
    assert A.word_facts(talk, "一共说了多少个词？", ZH) == "一共说了4个词。"  # English words, not characters
    glass = 435
    twice = [0.9, 0.9, 0.01, 0.01, 0.01, 0.01, 0.9, 0.9]  # a second apart: two stretches (gaps under 0.5 s are joined)
    broken = [A.Heard(0, 1, lambda task: None, lambda: report(tags(8, {glass: twice})))]
    said = A.when(broken, "How many times does the glass break?")
    assert "Breaking glass is heard in two separate stretches; lite counts stretches" in said, said
    assert "stretch" not in A.when(broken, "When does the glass break?")
    for q in ("Where is the sound coming from?", "声音是从哪里来的？"):
        assert A.unknowable(q) == "unknowable_setting", q
    assert A.unknowable("他在哪里？") == "unknowable" and A.unknowable("Where is he?") == "unknowable"
    music = 132
    piece = [A.Heard(0, 1, lambda task: None, lambda: report(tags(8, {music: [0.9] * 8})))]
    assert route("Is it sad?").kind == EMOTION
    assert "mood" in A.compose(route("Is it sad?"), "Is it sad?", piece)
    assert A.compose(route("How many notes are played?"), "How many notes are played?", piece).endswith("which notes play.")
