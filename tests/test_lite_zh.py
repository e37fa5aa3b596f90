"""Chinese questions get Chinese answers from the lite backend; English questions keep their English ones.

The phrasebooks (qwen_audio/lite/phrases.py) are checked against each other without a model; the real
clips are asked in Chinese and the answers held to facts (玻璃, 钢琴, 西班牙语) and time tolerances, never to
one CPU's exact Whisper words. The lite model loads once for the module (the LLM is replaced by a
recorder: what is tested here is the prompt, not the small model's prose).
"""

from __future__ import annotations

import re
import string

import pytest

from qwen_audio.lite.intent import question_language
from qwen_audio.lite.phrases import EN, ZH, for_question

from . import test_lite_events as E
from .test_lite_events import ask, clip, spans

lite = E.lite  # the lite model fixture (module-scoped), as test_lite_events loads it

HAN = re.compile(r"[\u4e00-\u9fff]")
# Emotion labels an answer must never claim (English and Chinese); the cues are measurements.
EMOTIONS = re.compile(r"\b(?:happy|sad|neutral|angry|calm|upset|relaxed|negative|positive)\b|开心|高兴|快乐|难过|伤心|悲伤"
                      r"|生气|愤怒|平静|中性|消极|积极|放松|轻松|沮丧", re.I)


def outside_quotes(text: str) -> str:
    """The answer's own words: quoted transcripts and <|t|> timestamps removed."""
    return re.sub(r'"[^"]*"|<\|[\d.]+\|>', " ", text)


# ---- without a model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("question, lang", [
    ("这段音频说了什么？", "zh"),
    ('请找出 "middle classes" 的开始和结束时间', "zh"),  # an English phrase quoted in a Chinese question
    ("请找出“middle classes”的开始和结束时间", "zh"),
    ("玻璃什么时候碎的？", "zh"),
    ('When does she say "你没事吧"?', "en"),  # a Chinese phrase quoted in an English question
    ("Find the word 「你好」 please", "en"),
    ("What's this?", "en"),
    ("what is the instrument", "en"),
    ('"你没事吧"', "zh"),  # nothing but a quotation: judged by it
    ("この音は何ですか", "en"),  # Japanese (kana): not Chinese; answered in English as before
    ("", "en"),
])
def test_question_language(question, lang):
    assert question_language(question) == lang
    assert for_question(question) is (ZH if lang == "zh" else EN)


def _fields(template: str) -> set:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def test_phrasebooks_have_the_same_messages_and_fields():
    """Every message has both forms, with the same placeholders (a missing one would raise or drop a fact)."""
    assert EN.text.keys() == ZH.text.keys()
    for key, en in EN.text.items():
        zh = ZH.text[key]
        assert isinstance(en, tuple) == isinstance(zh, tuple), key
        for e, z in zip(*((en, zh) if isinstance(en, tuple) else ((en,), (zh,)))):
            assert _fields(e) == _fields(z), key
            assert not HAN.search(e), key
            assert HAN.search(z) or not re.search(r"[A-Za-z]{3}", z.replace("dBFS", "")), key


def test_every_report_group_and_tag_has_a_chinese_name():
    from qwen_audio.lite.report import GROUPS

    missing = [name for name, _, _ in GROUPS if name not in ZH.names]
    assert not missing, missing
    assert ZH.name("breaking glass") == "玻璃破碎" and ZH.name("piano") == "钢琴"
    assert ZH.tag("Classical music") == "古典音乐" and ZH.tag("Happy music") == "欢快的音乐"
    assert ZH.name("a kazoo") == '"a kazoo"'  # unknown: the English label, quoted, never guessed
    assert EN.name("breaking glass") == "breaking glass" and EN.tag("Classical music") == "classical music"
    assert ZH.language("es") == "西班牙语" and ZH.language("xx") == "xx" and EN.language("es") == "Spanish"
    assert ZH.label(1, 2) == "第二段音频" and ZH.label(0, 1) == "这段音频" and ZH.label(11, 12) == "第12段音频"
    assert ZH.join(["钢琴", "鼓", "吉他"]) == "钢琴、鼓和吉他" and EN.join(["a", "b", "c"]) == "a, b and c"


# ---- the tutorial's clips -----------------------------------------------------------------------------


def test_glass_in_chinese(lite):
    r, h = ask(lite, [{"audio": clip("glass-breaking-151256.mp3")}, {"text": "这是什么声音？"}])
    assert r.startswith("这是玻璃破碎的音效，出现在"), r
    [(a, b)] = spans(r)[:1]
    assert 0.0 <= a < 0.6 and 1.0 <= b <= 2.6, r
    r2, _ = ask(lite, [{"text": "玻璃什么时候碎的？"}], h)
    [(a2, b2)] = spans(r2)[:1]
    assert r2.startswith("玻璃破碎开始于") and "结束于" in r2 and (a2, b2) == (a, b), r2
    r3, _ = ask(lite, [{"text": "这段音频说了什么？"}], h)  # no speech: said so, then what it is
    assert r3.startswith("这段音频里没有听到说话声。") and "玻璃" in r3, r3
    r4, _ = ask(lite, [{"text": "有没有狗叫？"}], h)
    assert r4.startswith("没有") and "狗叫" in r4 and "玻璃" in r4, r4
    for text in (r, r2, r3, r4):
        assert not re.search(r"[A-Za-z]", outside_quotes(text)), text


def test_piano_in_chinese(lite):
    r, h = ask(lite, [{"audio": clip("music.wav")}, {"text": "是什么乐器？"}])
    assert r == "乐器是钢琴。", r
    r2, _ = ask(lite, [{"text": "这是什么风格的音乐？"}], h)
    assert "钢琴" in r2 and "没有音乐" not in r2 and question_language(r2) == "zh", r2


def test_transcript_and_grounding_in_chinese(lite):
    r, h = ask(lite, [{"audio": clip("1272-128104-0000.flac")}, {"text": "这段音频说了什么？"}])
    assert r.startswith("这段语音是一个人在用英语说话") and "middle classes" in r.lower(), r  # the quote stays English
    r2, _ = ask(lite, [{"text": '请找出 "middle classes" 的开始和结束时间'}], h)
    m = re.fullmatch(r'"middle classes"开始于<\|(\d+\.\d\d)\|>秒，结束于<\|(\d+\.\d\d)\|>秒。', r2)
    assert m, r2
    assert abs(float(m[1]) - 2.33) <= 0.15 and abs(float(m[2]) - 3.26) <= 0.15, r2
    r4, _ = ask(lite, [{"text": "他什么时候说gospel？"}], h)  # unquoted: the Latin word, not the Chinese run
    [(a, b)] = spans(r4)
    assert r4.startswith('"gospel"开始于') and 4.0 < a < b < 6.0, r4
    r3, _ = ask(lite, [{"text": "请找出 \"xylophone\" 的开始和结束时间"}], h)
    assert r3.startswith('语音中找不到"xylophone"；语音内容是"') and "<|" not in r3, r3


def test_language_and_translation_in_chinese(lite):
    r, h = ask(lite, [{"audio": clip("es.mp3")}, {"text": "这是什么语言？"}])
    assert r == "这段语音说的是西班牙语。", r
    r2, _ = ask(lite, [{"text": "把这段话翻译成英文"}], h)
    assert r2.startswith("这段音频是西班牙语，英文翻译是：\"") and r2.endswith("\"。"), r2
    quoted = re.search(r'"([^"]+)"', r2)[1]
    assert re.search(r"\b(?:we|can|also|activities|sports)\b", quoted, re.I) and not HAN.search(quoted), r2


def test_emotion_speaker_and_two_clips_in_chinese(lite):
    pair = [{"audio": clip("你没事吧-轻松.wav")}, {"audio": clip("你没事吧-消极.wav")}]
    r, _ = ask(lite, [*pair, {"text": "这两段音频的情绪有什么不同？"}])
    assert r.startswith("根据声音，") and "第一段音频" in r and "第二段音频" in r and "Hz" in r, r
    assert "我不识别情绪本身" in r and not EMOTIONS.search(outside_quotes(r)), r  # cues, never a label
    r2, _ = ask(lite, [*pair, {"text": "说话人是男的还是女的？"}])
    assert r2.startswith("第一段音频中，声音的中位音高是") and "第二段音频中" in r2 and "猜测" in r2, r2
    r3, _ = ask(lite, [{"audio": clip("glass-breaking-151256.mp3")}, pair[0], {"text": "这是什么？"}])
    assert r3.startswith("第一段音频是玻璃破碎的声音，第二段音频是一个人在用中文说话"), r3


def test_english_questions_stay_english(lite):
    """A quoted Chinese phrase does not make an English question Chinese; English answers are unchanged."""
    r, _ = ask(lite, [{"audio": clip("你没事吧-轻松.wav")}, {"text": 'When does she say "你没事吧"?'}])
    assert r.startswith(("The word \"你没事吧\" starts at", "I can't find the word")), r
    assert question_language(r) == "en", r
    r2, _ = ask(lite, [{"audio": clip("glass-breaking-151256.mp3")}, {"text": "What is it"}])
    assert r2.startswith("This is a sound effect of breaking glass. It is heard from <|0.00|> to "), r2


class Recorder:
    """Stands in for the LLM: records the messages it is given and answers one sentence."""

    def __init__(self):
        self.messages = None

    def answer(self, messages, cfg, opening="", cancel=None):
        from qwen_audio.backend import TurnStats

        self.messages = messages
        yield "好的。"
        return TurnStats(0, 0, 1, "stop")


def test_open_questions_ask_the_llm_for_the_question_language(lite):
    from qwen_audio.lite import LiteModel

    model, tok = lite
    glass = {"audio": clip("glass-breaking-151256.mp3")}
    fake = LiteModel(model.asr, "fake.gguf", tagger_path=model.tagger_path)
    fake._llm = Recorder()
    r, _ = fake.chat(tok, tok.from_list_format([glass, {"text": "请根据这段音频给我一些安全建议。"}]))
    assert r.startswith("这段音频是玻璃破碎的声音。\n"), r
    user = fake._llm.messages[-1][1]
    assert user.endswith("请根据这段音频给我一些安全建议。\n请用中文详细回答。") and "breaking glass" in user, user
    r2, _ = fake.chat(tok, tok.from_list_format([glass, {"text": "根据这段音频写一个故事"}]))
    assert "根据这段音频，可以写出这样一个故事：\n" in r2, r2
    fake.chat(tok, tok.from_list_format([glass, {"text": "Please give me some handling suggestions."}]))
    assert fake._llm.messages[-1][1].endswith("\n\nPlease give me some handling suggestions."), fake._llm.messages
    bare = LiteModel(model.asr, None)  # no LLM: the refusal is in the question's language too
    r3, _ = bare.chat(tok, tok.from_list_format([glass, {"text": "请根据这段音频给我一些安全建议。"}]))
    assert "开放式问题需要" in r3 and "pip install" in r3, r3


def test_a_story_from_several_clips_tells_the_llm_what_is_heard_in_order(lite):
    """Told each clip's report, the 0.5B swapped the clips in its stories; a story's prompt numbers what is
    heard in the clips' order, whichever way round they come."""
    from qwen_audio.lite import LiteModel

    model, tok = lite
    glass, speech = {"audio": clip("glass-breaking-151256.mp3")}, {"audio": clip("你没事吧-轻松.wav")}
    fake = LiteModel(model.asr, "fake.gguf", tagger_path=model.tagger_path)
    fake._llm = Recorder()
    for clips in ([glass, speech], [speech, glass]):
        fake.chat(tok, tok.from_list_format([*clips, {"text": "based on these two audio, write a story"}]))
        user = fake._llm.messages[-1][1]
        first, second = re.search(r"\n1\. (.*)\n2\. (.*)\n", user).groups()
        glass_first = clips[0] is glass
        assert ("breaking glass" in first) == glass_first and ("breaking glass" in second) != glass_first, user
        assert ("你没事吧" in second) == glass_first, user


def test_questions_for_unknowable_facts_are_answered_without_the_llm(lite):
    """Asked for a pianist's name or where a clip was recorded, lite says that the sound cannot tell (the 1.5B
    answered "John Doe ... New York City", even when told it could not know); other questions reach the LLM."""
    from qwen_audio.lite import LiteModel

    model, tok = lite
    piano = {"audio": clip("music.wav")}
    fake = LiteModel(model.asr, "fake.gguf", tagger_path=model.tagger_path)
    fake._llm = Recorder()
    r, _ = fake.chat(tok, tok.from_list_format([piano, {"text": "What is the name of the pianist, and in which city "
                                                                "was this recorded?"}]))
    assert fake._llm.messages is None and "piano" in r and "cannot be told from the sound" in r, r
    r, _ = fake.chat(tok, tok.from_list_format([piano, {"text": "这首曲子是在哪里录的？"}]))
    assert fake._llm.messages is None and "无法判断" in r, r
    fake.chat(tok, tok.from_list_format([piano, {"text": "Recommend three similar pieces of music."}]))
    assert fake._llm.messages is not None


def test_follow_up_open_questions_are_not_led_by_the_summary_again(lite):
    """The one-line summary of the clips comes with the question that brings them; on follow-ups the LLM is
    shown the earlier answers without it (shown it, the 1.5B began its own answers with it again)."""
    from qwen_audio.lite import LiteModel

    model, tok = lite
    fake = LiteModel(model.asr, "fake.gguf", tagger_path=model.tagger_path)
    fake._llm = Recorder()
    glass = {"audio": clip("glass-breaking-151256.mp3")}
    r1, h = fake.chat(tok, tok.from_list_format([glass, {"text": "What should I do?"}]))
    lead = r1.split("\n")[0]
    assert "breaking glass" in lead and r1.endswith("\n好的。"), r1
    r2, h = fake.chat(tok, "Could someone be hurt?", history=h)
    assert r2 == "好的。", r2
    assert [m for m in fake._llm.messages if m[0] == "assistant"] == [("assistant", "好的。")], fake._llm.messages
    facts = fake._llm.messages[-1][1]  # the facts still come with the question, without negatives to echo
    assert "only this is heard: the sound of breaking glass" in facts and "no music" not in facts, facts
    r3, h = fake.chat(tok, "这个声音危险吗？我该怎么做？", history=h)
    assert r3 == "好的。" and all(lead not in m[1] for m in fake._llm.messages if m[0] == "assistant"), fake._llm.messages
    r4, _ = fake.chat(tok, "Where was this recorded?", history=h)
    assert "breaking glass" not in r4 and "cannot be told" in r4, r4


def test_translations_into_other_languages_than_english_are_the_llms(lite):
    """Whisper translates into English only: asked for Chinese, lite quotes what was said and has the LLM
    translate it; speech already in the target is quoted as it is, and without an LLM lite says what it can do."""
    from qwen_audio.lite import LiteModel
    from qwen_audio.lite.answer import translation_target

    assert [translation_target(q) for q in ("What is he saying, in Chinese?", "把这段话翻译成日语", "Translate it",
                                            "Translate what he says in Spanish into English")] == ["zh", "ja", None, None]
    model, tok = lite
    fake = LiteModel(model.asr, "fake.gguf", tagger_path=model.tagger_path)
    fake._llm = Recorder()
    r, _ = fake.chat(tok, tok.from_list_format([{"audio": clip("es.mp3")}, {"text": "What is he saying, in Chinese?"}]))
    assert r.startswith('The audio, in Spanish, says: "') and "\nIn Chinese (translated by" in r, r
    assert r.endswith("好的。"), r
    task = fake._llm.messages[-1][1]
    assert task.startswith("Translate into Chinese.") and "deportes" in task.lower(), task
    fake._llm.messages = None
    r2, _ = fake.chat(tok, tok.from_list_format([{"audio": clip("你没事吧-轻松.wav")}, {"text": "把这段话翻译成中文"}]))
    assert fake._llm.messages is None and r2.startswith("这段音频本来就是中文：") and "没事" in r2, r2
    r4, _ = fake.chat(tok, tok.from_list_format([{"audio": clip("glass-breaking-151256.mp3")}, {"text": "翻译成中文"}]))
    assert fake._llm.messages is None and r4 == "这段音频没有可翻译的说话声。", r4  # nothing for the LLM to do
    r5, _ = fake.chat(tok, tok.from_list_format([{"audio": clip("1272-128104-0000.flac")}, {"text": "Translate it"}]))
    assert fake._llm.messages is None and r5.startswith('The audio is already in English: "'), r5
    bare = LiteModel(model.asr, None)
    r3, _ = bare.chat(tok, tok.from_list_format([{"audio": clip("es.mp3")}, {"text": "Translate it into French"}]))
    assert r3.startswith("The lite model can only translate into English, not French.") and "says in English" in r3, r3


def test_clips_brought_in_separate_turns_are_all_heard_when_a_question_is_about_several(lite):
    """A story 'that uses both clips' after a piano clip in one turn and speech in the next had been told of the
    speech only ('Based on this audio'); 'the second audio' counts the conversation's clips. Earlier answers are
    shown to the LLM with plain seconds and 'the sound of' (shown 'a sound effect of breaking glass', the 1.5B took
    it for a film's effect and advised audio software)."""
    from qwen_audio.lite import LiteModel

    model, tok = lite
    fake = LiteModel(model.asr, "fake.gguf", tagger_path=model.tagger_path)
    fake._llm = Recorder()
    piano, speech = {"audio": clip("music.wav")}, {"audio": clip("1272-128104-0000.flac")}
    _, h = fake.chat(tok, tok.from_list_format([piano, {"text": "What instrument is this?"}]))
    r2, h = fake.chat(tok, tok.from_list_format([speech, {"text": "What is that sound?"}]), history=h)
    assert "piano" not in r2 and "Quilter" in r2, r2  # a question with its own clip is about that clip
    r3, _ = fake.chat(tok, "What does the second audio say?", history=h)
    assert "Quilter" in r3 and "piano" not in r3, r3
    r4, _ = fake.chat(tok, "What does the first audio say?", history=h)
    assert "piano" in r4 and "Quilter" not in r4, r4
    r5, _ = fake.chat(tok, "Write a short story that uses both clips.", history=h)
    assert r5.startswith("Based on these two audio, a story could be written as follows:"), r5
    told = fake._llm.messages[-1][1]
    assert "piano" in told and "Quilter" in told, told
    r6, _ = fake.chat(tok, "What should I do?", history=h)  # about the latest clip only
    assert "piano" not in fake._llm.messages[-1][1], fake._llm.messages

    glass = {"audio": clip("glass-breaking-151256.mp3")}
    r1, h = fake.chat(tok, tok.from_list_format([glass, {"text": "what is that sound?"}]))
    assert r1.startswith("This is a sound effect of breaking glass. It is heard from <|0.00|>"), r1
    fake.chat(tok, "What should I do?", history=h)
    shown = [m[1] for m in fake._llm.messages if m[0] == "assistant"]
    assert shown and shown[0].startswith("This is the sound of breaking glass. It is heard from 0.00"), shown


def test_an_elliptical_follow_up_with_a_new_clip_asks_the_last_question_of_it(lite):
    """'这段呢？' ("and this one?") with a new clip had gone to the LLM; it is the last question, asked of that clip."""
    from qwen_audio.lite import LiteModel

    model, tok = lite
    fake = LiteModel(model.asr, "fake.gguf", tagger_path=model.tagger_path)
    fake._llm = Recorder()
    _, h = fake.chat(tok, tok.from_list_format([{"audio": clip("glass-breaking-151256.mp3")}, {"text": "这是什么声音？"}]))
    r, _ = fake.chat(tok, tok.from_list_format([{"audio": clip("你没事吧-消极.wav")}, {"text": "这段呢？"}]), history=h)
    assert fake._llm.messages is None and "没事" in r and "玻璃" not in r, r
