"""The words of composed answers, per answer language: one phrasebook each for English and Chinese.

`answer.py` writes every answer once, through a `Phrases` object: `p("sound_effect", name=..., spans=...)`
fills a template, `p.name("breaking glass")` names a report group ("玻璃破碎" in Chinese), `p.join` lists
nouns ("a, b and c" / "a、b和c"). `for_question(q)` picks the phrasebook from the question's own
language (`intent.question_language`). Timestamps (`<|2.33|>`) and transcript quotes are the same in
both; only the words around them change. A name without a Chinese entry is given as the English label
in quotes, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .asr import language_name
from .intent import question_language

_ZH_DIGITS = "零一二三四五六七八九十"
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass(frozen=True)
class Phrases:
    """Templates (str.format) by message id, with the list and sentence punctuation of one language."""

    lang: str  # "en" or "zh"
    text: dict[str, str | tuple[str, str]]  # message id -> template, or (if-true, if-false) templates
    names: dict[str, str] = field(default_factory=dict)  # report group / AudioSet tag -> name ({} for English)
    languages: dict[str, str] = field(default_factory=dict)  # ISO code -> language name ({} for English)
    sp: str = " "  # between two sentences
    stop: str = "."  # ends a sentence
    clause: str = ", and "  # joins whole clauses ("the first audio is ..., and the second audio is ...")
    comma: str = ", "  # between the items of a list

    def __call__(self, key: str, *args, **kw) -> str:
        return self.text[key].format(*args, **kw)

    def pick(self, key: str, first: bool, *args, **kw) -> str:
        """The first or second form of a two-way template ('higher' / 'lower in pitch ...')."""
        return self.text[key][0 if first else 1].format(*args, **kw)

    def name(self, group: str) -> str:
        """A report group ("breaking glass") in this language; the English label in quotes where none is known."""
        return group if self.lang == "en" else self.names.get(group) or f'"{group}"'

    def tag(self, label: str) -> str:
        """An AudioSet tag ("Pop music") as a lower-case name in this language."""
        return self.name(label.lower())

    def number(self, n: int) -> str:
        """'two' / '两' (how many clips), digits beyond five / ten."""
        if self.lang == "en":
            return _NUMBERS.get(n, str(n))
        return "两" if n == 2 else _ZH_DIGITS[n] if n <= 10 else str(n)

    def language(self, code: str | None) -> str:
        return self.languages.get(code or "") or language_name(code)

    def join(self, items) -> str:
        """'a, b and c' / 'a、b和c'."""
        items = list(items)
        if len(items) <= 1:
            return "".join(items)
        return self.comma.join(items[:-1]) + (" and " if self.lang == "en" else "和") + items[-1]

    def clauses(self, items) -> str:
        """Clauses of one sentence: 'a, b and c' / 'a，b，c'."""
        return self.join(items) if self.lang == "en" else "，".join(items)

    def label(self, index: int, count: int) -> str:
        """'the audio' / 'the first audio' / 'audio 12' (这段音频 / 第一段音频)."""
        if self.lang == "en":
            if count == 1:
                return "the audio"
            return f"the {ORDINALS[index]} audio" if index < len(ORDINALS) else f"audio {index + 1}"
        if count == 1:
            return "这段音频"
        n = index + 1
        return f"第{_ZH_DIGITS[n] if n <= 10 else n}段音频"


ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]

EN = Phrases("en", {
    "span": "from {a} to {b} seconds",
    "more": " and {n} more times",
    "paren": "{0} ({1})",
    "speaking": "a person {verb}, in a {lang}, saying, {quote}",
    "verb": ("singing", "speaking"),
    "solo": "a solo {0} piece",
    "inst_music": "{0} music",
    "music_with": "music with {0}",
    "music": "music",
    "song": "a song: {0} and singing",
    "over": ", over {0}",
    "with_sounds": ", with {0} heard too",
    "sound_of": "a sound of {0}",
    "silence": "silence",
    "unnamed": "sound that I can't name",
    "subject": "The {0} is of {1}.",
    "sound": "sound",
    "speech": "speech",
    "background": "There is also {0} in the background.",
    "also_hear": "I also hear {0}.",
    "there_is": "There is {0}.",
    "this_is": "this is {0}.",
    "sound_effect": "This is a sound effect of {name}. It is heard {spans}.",
    "vocal_only": "This is {name}, with no words I can recognise. It is heard {spans}.",
    "silent": "The audio is silent: I hear no speech, music or other sound (its level is {0:.0f} dBFS).",
    "closest": "I hear no speech or music, and no sound event I can name with confidence; the closest tags are {0}.",
    "no_speech_heard": "I hear no speech in this audio.",
    "is_of": "{0} is of {1}",
    "is_of_no_speech": "{0} is of no speech ({1})",
    "yes_heard": "Yes: {name} is heard{where} {spans} (score {score:.2f}).",
    "not_heard": "No, I don't hear {name}{where}; it is {what}.",
    "in_label": " in {0}",
    "of_label": " in {0}",
    "where": "In {0}, ",
    "instrument": ("the instrument is the {0}.", "the instruments are {0}."),
    "the": "the {0}",
    "unnamed_instrument": "there is music, but no instrument scores high enough for me to name it.",
    "no_instrument": "there is no music or musical instrument; it is {0}.",
    "no_music_here": "there is no music; it is {0}.",
    "no_music": "There is no music in this audio; it is {0}.",
    "genres": "Its genre tags are {0}.",
    "moods": "The tagger's mood tags: {0}.",
    "no_genre": "The tagger gives it no genre tag, so I cannot name its genre.",
    "no_mood": "The tagger gives it no mood tag (it has six: happy, sad, tender, exciting, angry and scary music), so I "
               "cannot say which mood it has.",
    "no_tempo": "The lite model does not measure tempo, so it cannot say how fast the music is.",
    "no_key": ("The lite model does not measure key, chords or notes, so it cannot say which key the music is in or "
               "which notes play."),
    "quality_levels": "{who} is at {mean} dBFS on average, peaking at {peak} dBFS{clip}.",
    "quality_clipped": " (full scale: it may be clipped)",
    "quality_digital": "Between its sounds there is digital silence: no background noise at all.",
    "quality_quiet": "Its quietest moments are at {q} dBFS, {gap} dB under its loudest: a quiet background.",
    "quality_some": "Its quietest moments are at {q} dBFS, {gap} dB under its loudest: some background sound.",
    "quality_busy": ("Its quietest moments are at {q} dBFS, only {gap} dB under its loudest: sound throughout, with no "
                     "quiet pause (a noisy background, or speech or music that does not pause)."),
    "quality_besides": "Besides the speech, {0} is heard.",
    "quality_nothing_else": "Besides the speech, no other sound stands out.",
    "quality_what": "It is {0}.",
    "quality_note": "These are measurements of the recording; the lite model does not rate its quality otherwise.",
    "no_age": "The lite model does not estimate a speaker's age.",
    "no_reverb": "The lite model does not measure echo or reverberation.",
    "no_pause": "the speech runs from {a} to {b} seconds without a pause",
    "pauses": ("there is one pause in the speech, {items}", "there are {n} pauses in the speech: {items}"),
    "pause_item": "from {a} to {b} seconds ({s} s)",
    "no_speech_pauses": "there is no speech, so no pause in it: it is {0}",
    "file_format": "{who} is {what}, {seconds} s long.",
    "file_format_note": "The lite model hears every clip decoded to 16 kHz mono.",
    "in_memory": "an in-memory array", "channels_1": "mono", "channels_2": "stereo", "channels_n": "{0} channels",
    "first_word": '{where}the first word is "{word}", from {a} to {b} seconds.',
    "confidence": "{where}Whisper gives its {n} words a mean probability of {mean}; it is least sure of {unsure}.",
    "word_prob": '"{0}" ({1})',
    "confidence_note": "These are Whisper's own probabilities, not a measured error rate.",
    "last_word": '{where}the last word is "{word}", from {a} to {b} seconds.',
    "word_count": "{where}{n} words are spoken.", "word_count_words": "{where}{n} words are spoken.",
    "sentence_count": ("{where}one sentence is spoken, by its punctuation as Whisper wrote it.",
                       "{where}{n} sentences are spoken, by their punctuation as Whisper wrote it."),
    "stretches": ("{name} is heard in one stretch; lite counts stretches of a sound, not each event within one.",
                  "{name} is heard in {n} separate stretches; lite counts stretches of a sound, not each event within one."),
    "says": "the speech says: {0}",
    "no_speech_in_it": "and I hear no speech in it",
    "label_says": "{0} says {1}",
    "label_no_speech": "{0} has no speech",
    "no_language": "There is no speech in this audio, so there is no language to identify.",
    "language": "The speech is in {0}.",
    "label_language": "{0} is in {1}",
    "label_without_speech": "{0} is without speech",
    "only_english": "The lite model can only translate into English, not {0}. ",
    "nothing_to_translate": "{0} has no speech to translate",
    "translation": "{0}, in {1}, says in English: {2}",
    "translation_sep": "; ",
    "says_in": "{0}, in {1}, says: {2}",
    "already_in": "{0} is already in {1}: {2}",
    "llm_translation": "In {0} (translated by the lite model's language model):",
    "word_missing": 'I can\'t find the word "{0}" in the speech; {1}.',
    "heard_as": 'The transcript has "{0}" there.',
    "unknowable": ("Who is playing or speaking, who wrote a piece and what it is called, where someone is from, and "
                   "where or when it was recorded cannot be told from the sound itself: only what is said in it can "
                   "tell that."),
    "unknowable_setting": ("Whether it was recorded indoors or outdoors, live or in a studio, where a sound comes from, and "
                           "whether a voice is a real person's or synthetic, the lite model cannot tell: it names the speech, "
                           "music and sounds in a clip (heard in mono), not where or how it was made."),
    "accent_note": ("Whisper names the language only: the lite model does not tell accents or dialects apart, nor judge "
                    "pronunciation or fluency."),
    "same_speaker": "The lite model does not tell voices apart, so it cannot say whether the same person speaks.",
    "word_span": 'the word "{phrase}" starts at {a} seconds and ends at {b} seconds.',
    "words_span": 'the words "{phrase}" start at {a} seconds and end at {b} seconds.',
    "not_hearing": "I don't hear {names}; {it} is {what}.",
    "it": ("it", "the audio"),
    "speech_span": "the speech starts at {a} seconds and ends at {b} seconds.",
    "no_event": "I hear no sound event I can name and time; it is {0}.",
    "event_span": "The {name} sound starts at {a} seconds and ends at {b} seconds.",
    "event_spans": "The {name} sound is heard {spans}.",
    "music_span": "The music plays from {a} to {b} seconds.",
    "music_spans": "The music plays {spans}.",
    "person": 'the person name "{name}" is mentioned. "{name}" starts at {a} seconds and ends at {b} seconds.',
    "no_person": "I can't find a person's name in the speech; {0}.",
    "emotion_note": "I don't recognise emotions themselves: these are measurements of the voice, which often "
                    "go with how a person feels but do not prove it.",
    "intonation": "the intonation is {0} (pitch about {1:.0f} Hz, varying by {2:.1f} semitones)",
    "flat": ("fairly flat", "moderately varied"),
    "varied": "very varied",
    "pace": "the pace is {0} ({1:.1f} {2})",
    "slow": ("slow", "moderate"),
    "brisk": "brisk",
    "words/s": "words per second",
    "characters/s": "characters per second",
    "rate:words/s": "words/s",
    "rate:characters/s": "characters/s",
    "level": "the level is {0:.0f} dBFS",
    "loudness": "{who} is {kind}: its level is {mean} dBFS on average, peaking at {peak} dBFS.",
    "loudest_second": "Its loudest second is from {a} to {b} seconds ({level} dBFS).",
    "loudest": "{who} is the loudest on average.", "quietest": "{who} is the quietest on average.",
    "duration": "{who} is {seconds} seconds long.",
    "duration_heard": " Questions about it hear its first {0} seconds.",
    "loud_loud": "loud", "loud_moderate": "moderately loud", "loud_quiet": "quiet", "loud_silent": "silent",
    "loudness_note": ("These are levels of the recording: how loud it was where it was recorded cannot be told from them "
                      "(that depends on the distance and the recording's gain)."),
    "no_voice": "I hear no speaking voice to read cues from; it is {0}.",
    "based": "Based on the voice{where}, {cues}.",
    "pitch_diff": ("higher in pitch ({0:.0f} vs {1:.0f} Hz)", "lower in pitch ({0:.0f} vs {1:.0f} Hz)"),
    "spread_diff": ("more varied in pitch ({0:.1f} vs {1:.1f} semitones)", "less varied in pitch ({0:.1f} vs {1:.1f} semitones)"),
    "level_diff": ("louder ({0:.0f} vs {1:.0f} dBFS)", "quieter ({0:.0f} vs {1:.0f} dBFS)"),
    "rate_diff": ("faster ({0:.1f} vs {1:.1f} {2})", "slower ({0:.1f} vs {1:.1f} {2})"),
    "differences": "Based on the voice, there are differences: {0} is {2} than {1}.",
    "alike": ("Based on the voice, {0} and {1} sound alike: pitch, its variation, loudness and speaking rate "
              "differ little."),
    "label_also_hear": "In {0} I also hear {1}.",
    "no_voice_measured": "the audio has no voice I can measure; it is {0}.",
    "median_pitch": "the voice's median pitch is {0:.0f} Hz, {1}.",
    "pitch_man": "typical of an adult man's voice (about 85-155 Hz)",
    "pitch_woman": "typical of a woman's or a child's voice (about 165-255 Hz for women)",
    "pitch_between": "between the ranges typical of men's and women's voices",
    "pitch_guess": "This is a guess from pitch alone; the lite model does not recognise speakers.",
    "speaker_count": "The lite model does not tell voices apart, so it cannot say how many people speak.",
    "nobody_speaks": "No one speaks in this audio; it is {0}.",
    "no_tagger": "Naming sounds, instruments and music needs the lite model's sound tagger, which is not installed ({0}).",
    # Neutral about how a clip is given: the tutorial's strings, structured messages and HTTP clients all read it.
    "no_audio": "There is no audio in this conversation yet: ask again with a clip beside the question.",
    "no_llm": ("Open questions need the lite model's language model, which is not installed ({0}); without it the "
               "lite model transcribes, translates, names languages, sounds, instruments and music, and finds words "
               "and events in time."),
    "story": "Based on {0}, a story could be written as follows:\n",
    "this_audio": "this audio",
    "reply_in": "",
    "these_audio": "these {0} audio",
})

# Chinese names of the report's groups (report.GROUPS) and of the tagger's genre and mood tags.
ZH_NAMES = {
    # voice sounds
    "laughter": "笑声", "crying": "哭声", "a sigh": "叹气声", "singing": "歌声", "rapping": "说唱", "humming": "哼唱",
    "shouting": "喊叫声", "screaming": "尖叫声", "whispering": "耳语", "a gasp": "倒吸气声", "breathing": "呼吸声",
    "coughing": "咳嗽声", "sneezing": "打喷嚏声", "snoring": "打鼾声", "a groan": "呻吟声",
    # instruments
    "piano": "钢琴", "organ": "管风琴", "harpsichord": "羽管键琴", "synthesizer": "合成器", "electric guitar": "电吉他",
    "bass guitar": "贝斯", "acoustic guitar": "原声吉他", "guitar": "吉他", "banjo": "班卓琴", "sitar": "西塔琴",
    "mandolin": "曼陀林", "zither": "齐特琴", "ukulele": "尤克里里", "drums": "鼓", "timpani": "定音鼓",
    "tabla": "塔布拉鼓", "marimba": "马林巴", "glockenspiel": "钟琴", "vibraphone": "颤音琴", "steelpan": "钢鼓",
    "an orchestra": "管弦乐队", "French horn": "圆号", "trumpet": "小号", "trombone": "长号", "violin": "小提琴",
    "cello": "大提琴", "double bass": "低音提琴", "strings": "弦乐", "flute": "长笛", "saxophone": "萨克斯",
    "clarinet": "单簧管", "harp": "竖琴", "bells": "铃", "harmonica": "口琴", "accordion": "手风琴",
    "bagpipes": "风笛", "didgeridoo": "迪吉里杜管", "theremin": "特雷门琴", "a singing bowl": "颂钵",
    "brass": "铜管乐器", "woodwinds": "木管乐器", "percussion": "打击乐器", "keyboard": "键盘乐器",
    "plucked strings": "弹拨乐器",
    # sounds
    "breaking glass": "玻璃破碎", "a dog barking": "狗叫", "a cat": "猫叫", "birdsong": "鸟鸣",
    "a rooster and chickens": "鸡鸣", "ducks or geese": "鸭或鹅的叫声", "cattle": "牛叫", "a horse": "马叫",
    "sheep or goats": "羊叫", "a pig": "猪叫", "a lion's roar": "狮吼", "frogs": "蛙鸣", "insects": "虫鸣",
    "rain": "雨声", "thunder": "雷声", "ocean waves": "海浪", "running water": "流水", "wind": "风声",
    "fire crackling": "火的噼啪声", "a siren": "警笛", "an alarm": "警报", "a telephone ringing": "电话铃声",
    "a doorbell": "门铃", "knocking": "敲门声", "a door": "开关门声", "a car horn": "汽车喇叭", "a car": "汽车",
    "traffic": "交通噪声", "a motorcycle": "摩托车", "a train": "火车", "an aircraft": "飞机", "a boat": "船",
    "an engine": "发动机", "footsteps": "脚步声", "applause": "掌声", "a cheering crowd": "人群欢呼",
    "a crowd talking": "人群交谈", "an explosion": "爆炸", "gunshots": "枪声", "fireworks": "烟花爆竹",
    "typing": "打字声", "a clock ticking": "钟表滴答声", "power tools": "电动工具", "dishes and cutlery": "碗碟餐具碰撞",
    "frying food": "煎炸食物", "a kitchen appliance": "厨房电器", "a vacuum cleaner": "吸尘器", "a hair dryer": "吹风机",
    "a toilet flushing": "冲马桶", "a whistle": "哨声", "beeps": "哔哔声",
    "a bell ringing": "铃声", "a whip": "鞭子抽响声", "a pure tone": "纯音",
    "white noise": "白噪声", "a mechanical fan or air conditioner": "风扇或空调", "a bang or thud": "砰的撞击声",
    "a wooden crack": "木头断裂声", "a camera shutter": "相机快门", "a cash register": "收银机", "a printer": "打印机",
    "a whoosh": "呼啸声", "a clang": "金属撞击声", "a creak": "吱嘎声", "rustling": "沙沙声", "clicking": "咔嗒声",
    "a rumble": "隆隆声", "a hum": "嗡嗡声", "an animal": "动物叫声",
    # the tagger's genre and mood tags (AudioSet display names, lower-cased)
    "pop music": "流行音乐", "hip hop music": "嘻哈音乐", "rock music": "摇滚乐", "heavy metal": "重金属",
    "punk rock": "朋克摇滚", "rock and roll": "摇滚乐", "rhythm and blues": "节奏布鲁斯", "soul music": "灵魂乐",
    "reggae": "雷鬼", "country": "乡村音乐", "swing music": "摇摆乐", "bluegrass": "蓝草音乐", "funk": "放克",
    "folk music": "民谣", "middle eastern music": "中东音乐", "jazz": "爵士乐", "disco": "迪斯科",
    "classical music": "古典音乐", "opera": "歌剧", "electronic music": "电子音乐", "house music": "浩室音乐",
    "techno": "泰克诺", "dubstep": "回响贝斯", "drum and bass": "鼓打贝斯", "electronica": "电子乐",
    "electronic dance music": "电子舞曲", "ambient music": "氛围音乐", "trance music": "迷幻舞曲",
    "music of latin america": "拉丁美洲音乐", "salsa music": "萨尔萨", "flamenco": "弗拉门戈", "blues": "布鲁斯",
    "music for children": "儿童音乐", "new-age music": "新世纪音乐", "vocal music": "声乐", "a capella": "无伴奏合唱",
    "music of africa": "非洲音乐", "christian music": "基督教音乐", "gospel music": "福音音乐",
    "music of asia": "亚洲音乐", "traditional music": "传统音乐", "independent music": "独立音乐", "song": "歌曲",
    "background music": "背景音乐", "theme music": "主题音乐", "soundtrack music": "电影配乐", "lullaby": "摇篮曲",
    "video game music": "电子游戏音乐", "christmas music": "圣诞音乐", "dance music": "舞曲", "wedding music": "婚礼音乐",
    "happy music": "欢快的音乐", "sad music": "悲伤的音乐", "tender music": "温柔的音乐", "exciting music": "激动人心的音乐",
    "angry music": "愤怒的音乐", "scary music": "恐怖的音乐",
}

ZH_LANGUAGES = {
    "en": "英语", "zh": "中文", "yue": "粤语", "de": "德语", "es": "西班牙语", "ru": "俄语", "ko": "韩语",
    "fr": "法语", "ja": "日语", "pt": "葡萄牙语", "tr": "土耳其语", "pl": "波兰语", "ca": "加泰罗尼亚语",
    "nl": "荷兰语", "ar": "阿拉伯语", "sv": "瑞典语", "it": "意大利语", "id": "印尼语", "hi": "印地语",
    "fi": "芬兰语", "vi": "越南语", "he": "希伯来语", "uk": "乌克兰语", "el": "希腊语", "ms": "马来语",
    "cs": "捷克语", "ro": "罗马尼亚语", "da": "丹麦语", "hu": "匈牙利语", "ta": "泰米尔语", "no": "挪威语",
    "th": "泰语", "ur": "乌尔都语", "hr": "克罗地亚语", "bg": "保加利亚语", "lt": "立陶宛语", "la": "拉丁语",
    "cy": "威尔士语", "sk": "斯洛伐克语", "fa": "波斯语", "lv": "拉脱维亚语", "bn": "孟加拉语",
    "sr": "塞尔维亚语", "sl": "斯洛文尼亚语", "et": "爱沙尼亚语", "tl": "他加禄语", "is": "冰岛语",
    "sw": "斯瓦希里语",
}

ZH = Phrases("zh", {
    "span": "{a}到{b}秒",
    "more": "，另有{n}处",
    "paren": "{0}（{1}）",
    "speaking": "一个人在用{lang}{verb}，内容是{quote}",
    "verb": ("唱歌", "说话"),
    "solo": "一段{0}独奏曲",
    "inst_music": "{0}音乐",
    "music_with": "有{0}的音乐",
    "music": "音乐",
    "song": "一首歌：{0}，还有歌声",
    "over": "，背景是{0}",
    "with_sounds": "，同时还能听到{0}",
    "sound_of": "{0}的声音",
    "silence": "静音",
    "unnamed": "一段我无法辨认的声音",
    "subject": "{0}是{1}。",
    "sound": "这段声音",
    "speech": "这段语音",
    "background": "背景中还有{0}。",
    "also_hear": "我还听到了{0}。",
    "there_is": "还有{0}。",
    "this_is": "这是{0}。",
    "sound_effect": "这是{name}的音效，出现在{spans}。",
    "vocal_only": "这是{name}，没有我能听出的话语，出现在{spans}。",
    "silent": "这段音频是静音：没有听到说话声、音乐或其他声音（电平为{0:.0f} dBFS）。",
    "closest": "没有听到说话声或音乐，也没有能确定名称的声音事件；最接近的标签是{0}。",
    "no_speech_heard": "这段音频里没有听到说话声。",
    "is_of": "{0}是{1}",
    "is_of_no_speech": "{0}没有说话声（{1}）",
    "yes_heard": "有，{where}能听到{name}，出现在{spans}（得分{score:.2f}）。",
    "not_heard": "没有，{where}听不到{name}；这是{what}。",
    "in_label": "{0}中",
    "of_label": "{0}的",
    "where": "{0}中，",
    "instrument": ("乐器是{0}。", "乐器有{0}。"),
    "the": "{0}",
    "unnamed_instrument": "有音乐，但没有哪种乐器的得分高到能确定。",
    "no_instrument": "没有音乐或乐器；这是{0}。",
    "no_music_here": "没有音乐；这是{0}。",
    "no_music": "这段音频里没有音乐；这是{0}。",
    "genres": "风格标签有{0}。",
    "moods": "标注器给出的音乐情绪标签：{0}。",
    "no_genre": "标注器没有给出风格标签，所以我无法说出它的风格。",
    "no_mood": "标注器没有给出音乐情绪标签（它有六种：欢快、悲伤、温柔、激动、愤怒和恐怖的音乐），所以我无法判断它的情绪。",
    "no_tempo": "lite模型不测量节奏，所以无法判断音乐的快慢。",
    "no_key": "lite模型不测量调性、和弦或音符，所以无法判断音乐是什么调、弹了哪些音。",
    "quality_levels": "{who}平均电平{mean} dBFS，峰值{peak} dBFS{clip}。",
    "quality_clipped": "（已到满幅，可能有削波）",
    "quality_digital": "声音之间是数字静音：完全没有背景噪音。",
    "quality_quiet": "最安静处为{q} dBFS，比最响处低{gap} dB：背景很安静。",
    "quality_some": "最安静处为{q} dBFS，比最响处低{gap} dB：有一些背景声。",
    "quality_busy": "最安静处为{q} dBFS，只比最响处低{gap} dB：声音持续不断，没有安静的停顿（背景嘈杂，或语音、音乐没有停顿）。",
    "quality_besides": "除了说话声，还能听到{0}。",
    "quality_nothing_else": "除了说话声，没有其他突出的声音。",
    "quality_what": "内容是{0}。",
    "quality_note": "这些是对录音的测量；lite模型不对音质做其他评价。",
    "no_age": "lite模型不估计说话人的年龄。",
    "no_reverb": "lite模型不测量回声或混响。",
    "no_pause": "语音从{a}秒到{b}秒，中间没有停顿",
    "pauses": ("语音中有一处停顿，{items}", "语音中有{n}处停顿：{items}"),
    "pause_item": "{a}秒到{b}秒（{s}秒）",
    "no_speech_pauses": "没有语音，所以没有停顿：这是{0}",
    "file_format": "{who}是{what}，时长{seconds}秒。",
    "file_format_note": "lite模型把每段音频解码成16 kHz单声道来听。",
    "in_memory": "内存中的数组", "channels_1": "单声道", "channels_2": "立体声", "channels_n": "{0}声道",
    "first_word": '{where}第一个词是"{word}"，从{a}秒到{b}秒。',
    "confidence": "{where}Whisper对这{n}个词的平均概率是{mean}；最没把握的是{unsure}。",
    "word_prob": '"{0}"（{1}）',
    "confidence_note": "这些是Whisper自己给出的概率，不是测得的错误率。",
    "last_word": '{where}最后一个词是"{word}"，从{a}秒到{b}秒。',
    "word_count": "{where}一共说了{n}个字。", "word_count_words": "{where}一共说了{n}个词。",
    "sentence_count": ("{where}按Whisper写的标点，一共说了一句话。", "{where}按Whisper写的标点，一共说了{n}句话。"),
    "stretches": ("{name}出现在一段连续的时间里；lite数的是连续出现的段数，不是其中每一次。",
                  "{name}出现在{n}段分开的时间里；lite数的是连续出现的段数，不是其中每一次。"),
    "says": "语音内容是{0}",
    "no_speech_in_it": "这段音频里没有听到说话声",
    "label_says": "{0}说的是{1}",
    "label_no_speech": "{0}没有说话声",
    "no_language": "这段音频里没有说话声，所以无法识别语言。",
    "language": "这段语音说的是{0}。",
    "label_language": "{0}说的是{1}",
    "label_without_speech": "{0}没有说话声",
    "only_english": "lite模型只能翻译成英语，不能翻译成{0}。",
    "nothing_to_translate": "{0}没有可翻译的说话声",
    "translation": "{0}是{1}，英文翻译是：{2}",
    "translation_sep": "；",
    "says_in": "{0}是{1}，原话是：{2}",
    "already_in": "{0}本来就是{1}：{2}",
    "llm_translation": "{0}翻译（由lite模型的语言模型翻译）：",
    "word_missing": '语音中找不到"{0}"；{1}。',
    "heard_as": '转写里这里是"{0}"。',
    "unknowable": ("是谁在演奏或说话、作品是谁写的、叫什么名字、说话的人是哪里人、在哪里或什么时候录制的，单凭声音无法判断："
                   "只有音频里说到的内容才能说明。"),
    "unknowable_setting": ("是在室内还是室外、现场还是录音棚录制的，声音从哪里传来，声音是真人还是合成的，lite模型无法判断："
                           "它只识别音频里的语音、音乐和声音（按单声道听），不判断录制的场所和方式。"),
    "accent_note": "Whisper只能识别语言：lite模型不能区分口音或方言，也不评价发音或流利程度。",
    "same_speaker": "lite模型不能区分不同的说话人，所以无法判断是不是同一个人在说话。",
    "word_span": '"{phrase}"开始于{a}秒，结束于{b}秒。',
    "words_span": '"{phrase}"开始于{a}秒，结束于{b}秒。',
    "not_hearing": "没有听到{names}；{it}是{what}。",
    "it": ("它", "这段音频"),
    "speech_span": "说话声开始于{a}秒，结束于{b}秒。",
    "no_event": "没有听到能命名和定时的声音事件；这是{0}。",
    "event_span": "{name}开始于{a}秒，结束于{b}秒。",
    "event_spans": "{name}出现在{spans}。",
    "music_span": "音乐从{a}秒播放到{b}秒。",
    "music_spans": "音乐出现在{spans}。",
    "person": '提到了人名"{name}"。"{name}"开始于{a}秒，结束于{b}秒。',
    "no_person": "语音中找不到人名；{0}。",
    "emotion_note": "我不识别情绪本身：这些是对声音的测量，常与说话人的感受有关，但不能证明它。",
    "intonation": "语调{0}（音高约{1:.0f} Hz，变化{2:.1f}个半音）",
    "flat": ("起伏较小", "起伏适中"),
    "varied": "起伏很大",
    "pace": "语速{0}（{1:.1f} {2}）",
    "slow": ("较慢", "适中"),
    "brisk": "较快",
    "words/s": "词/秒",
    "characters/s": "字/秒",
    "rate:words/s": "词/秒",
    "rate:characters/s": "字/秒",
    "level": "音量为{0:.0f} dBFS",
    "loudness": "{who}{kind}：平均电平{mean} dBFS，峰值{peak} dBFS。",
    "loudest_second": "最响的一秒在{a}秒到{b}秒（{level} dBFS）。",
    "loudest": "{who}平均最响。", "quietest": "{who}平均最轻。",
    "duration": "{who}长{seconds}秒。",
    "duration_heard": "关于它的问题只听它的前{0}秒。",
    "loud_loud": "很响", "loud_moderate": "音量适中", "loud_quiet": "很轻", "loud_silent": "是静音",
    "loudness_note": "这是录音本身的响度；录音现场实际有多响无法从录音判断（取决于距离和录音增益）。",
    "no_voice": "没有听到可以分析的说话声；这是{0}。",
    "based": "根据{where}声音，{cues}。",
    "pitch_diff": ("音高更高（{0:.0f} vs {1:.0f} Hz）", "音高更低（{0:.0f} vs {1:.0f} Hz）"),
    "spread_diff": ("音高变化更大（{0:.1f} vs {1:.1f}个半音）", "音高变化更小（{0:.1f} vs {1:.1f}个半音）"),
    "level_diff": ("音量更大（{0:.0f} vs {1:.0f} dBFS）", "音量更小（{0:.0f} vs {1:.0f} dBFS）"),
    "rate_diff": ("语速更快（{0:.1f} vs {1:.1f} {2}）", "语速更慢（{0:.1f} vs {1:.1f} {2}）"),
    "differences": "根据声音，两者有差异：与{1}相比，{0}{2}。",
    "alike": "根据声音，{0}和{1}听起来相似：音高、音高变化、音量和语速都差别不大。",
    "label_also_hear": "{0}中还听到了{1}。",
    "no_voice_measured": "没有我能测量的说话声；这是{0}。",
    "median_pitch": "声音的中位音高是{0:.0f} Hz，{1}。",
    "pitch_man": "是成年男性声音常见的音高（约85-155 Hz）",
    "pitch_woman": "是女性或儿童声音常见的音高（女性约165-255 Hz）",
    "pitch_between": "介于男性和女性声音常见的音高之间",
    "pitch_guess": "这只是根据音高做出的猜测；lite模型不能识别说话人。",
    "speaker_count": "lite模型不能区分不同的说话人，所以无法判断有几个人在说话。",
    "nobody_speaks": "这段音频里没有人说话；这是{0}。",
    "no_tagger": "识别声音、乐器和音乐需要lite模型的声音标注器，但它没有安装（{0}）。",
    "no_audio": "这段对话里还没有音频：请把音频和问题一起发来。",
    "no_llm": ("开放式问题需要lite模型的语言模型，但它没有安装（{0}）；没有它，lite模型也能转写、翻译，识别语言、声音、"
               "乐器和音乐，并找出词语和事件的时间。"),
    "story": "根据{0}，可以写出这样一个故事：\n",
    "this_audio": "这段音频",
    "reply_in": "\n请用中文详细回答。",
    "these_audio": "这{0}段音频",
}, ZH_NAMES, ZH_LANGUAGES, sp="", stop="。", clause="，", comma="、")


def for_question(question: str) -> Phrases:
    """The phrasebook of the language the question is asked in (Chinese or, for anything else, English)."""
    return ZH if question_language(question) == "zh" else EN
