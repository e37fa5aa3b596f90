"""Intent routing: what a question asks for, from its text alone, in English or Chinese.

`route(question)` scores every intent by weighted cues (English words and Chinese phrases) and
returns the best as an `Intent`; a question no cue matches is OPEN (the LLM answers it, in any
language). A quoted phrase with a time or find cue is GROUND. `clip_refs(question, n)` says which
of the n clips a question points at ("the first audio", "audio 2", "第二段音频"); `mentioned_sounds`
which named sounds it asks about. All are pure functions of strings; accuracy on a written
question set is measured in tests/test_lite_intent.py and benchmarks/lite_events.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUND = "ground"  # times of a quoted word or phrase
WHEN = "when"  # times of a sound event ("when does the glass break?"), else of the words asked about
PERSON = "person"  # find a person's name, with its times
TRANSLATE = "translate"  # the speech in English
LANGUAGE = "language"  # which language is spoken
EMOTION = "emotion"  # voice cues, compared across clips; no emotion label is claimed
LOUDNESS = "loudness"  # how loud: the recording's level, measured
QUALITY = "quality"  # the recording's quality or background noise: its levels, measured, and what else is heard
DURATION = "duration"  # how long a clip is
FORMAT = "format"  # the file's codec, sample rate, channels and bit rate, as its container states them
SPEAKER = "speaker"  # gender / age: the measured pitch, stated as such
INSTRUMENT = "instrument"  # which instruments play
MUSIC = "music"  # is there music, and what kind (instrument, genre and mood tags)
SOUND = "sound"  # what is it: speech, music, or named sound events with times
DESCRIBE = "describe"  # transcription in the tutorial's "The speech is of ..." style
OPEN = "open"  # anything else: the LLM, told the clips' reports

WHICH_HAS = r"\bwhich (?:clip|audio|one|recording)s? (?:has|have|contains?)\b"  # "Which clip has the glass?"
WORD_FACTS = (r"\b(?:first|last|final) word\b|\bhow many words\b|\bnumber of words\b|\bcount (?:the |all the )?words\b"
              r"|\bhow many sentences\b|几句话|多少句|\bword count\b"
              r"|第一个(?:词|字)|最后一个(?:词|字)|多少个?(?:词|字)|几个(?:词|字)")
CONFIDENCE = (r"\bhow (?:confident|sure|accurate|reliable|certain)\b|\bconfidence\b|\baccuracy of (?:the|this|your) transcri"
              r"|准确吗|准确度|有多准|把握|可信")
# How many times a sound is heard: WHEN's cue, and its answer says in how many stretches (`answer.when`).
COUNTING = r"\bhow many times\b|\bhow often\b|\bcount (?:the|how)\b|多少次|几次|数一数|数一下"
PAUSES = r"\bpauses?\b|\bsilences? between\b|\bgaps? between\b|停顿|停了多久|中间(?:的)?(?:空白|静音)"
_ACCENT = (r"\baccents?\b|\bdialect\b|\bnative (?:\w+ )?speaker\b|\bpronunciation\b|\bpronounce\b|\bfluen(?:t|cy)\b|发音|流利"
           r"|\b(?:british|american|australian|irish|scottish) or\b|口音|方言")
# Whether clips have one voice: the same question of telling voices apart (the LLM had said "两段音频是同一个人说的").
SAME_SPEAKER = (r"\bsame (?:speaker|person|voice|man|woman)\b|\bdifferent (?:speakers|people|persons|voices)\b"
                r"|同一个人|同一个说话人|同一人|是不是一个人|同一个声音")
_SPEAKER_COUNT = (r"\bhow many (?:people|persons|speakers|voices|men|women|different voices)\b"
                  r"|\bnumber of (?:speakers|people|voices)\b|几个人|多少人|几位|几个说话|" + SAME_SPEAKER)

# (intent, weight, pattern). Scores add up per intent; the highest wins, ties go to the earlier
# intent in PRIORITY. English patterns are matched on the lower-cased question.
_CUES: list[tuple[str, float, str]] = [
    (OPEN, 3.0, r"\bstor(?:y|ies)\b|\bpoem\b|\bsuggest|\badvi[cs]e\b|\bwhat should\b|\bhow (?:should|can|do) (?:i|we|the user)\b"
                r"|\bwhat (?:do|can|shall) (?:i|we)\b|\bshould (?:i|we)\b|\bpropos|\bgood idea\b|\breply\b|\brespond\b"
                r"|\bhandl(?:e|ing)\b|\brecommend|\bsummari[sz]e\b|\bexplain\b|\bimagine\b|\bwhy\b|\bin detail\b"
                r"|\bwrite\b|\bcompose\b|\bscene\b|\bguess\b|\bwhere (?:is|was|might) (?:this|it|the)\b"
                r"|\bwho (?:might|could|would)\b|\bwhat (?:might|could|would)\b|\bmeaning\b|\bopinion\b|\bthink\b"
                r"|\bwhat (?:did|does|do) (?:the speaker|he|she|they|it|this) mean\b|\bdangerous\b|\bsafe\b|\bharmful\b"),
    (OPEN, 3.0, r"写|故事|建议|推荐|怎么办|应该|如何处理|怎么处理|总结|概括|解释|为什么|想象|诗|场景|猜|提议|主意|好不好|好吗"
                r"|怎么看|看法|回应|回复|怎么做|该做什么|要做什么|危险吗|安全吗|什么意思|意思是|大意|主要内容|主旨"),
    (PERSON, 3.0, r"\bperson(?:'s)? name\b|\bname of (?:the|a|any) person\b|\bwho is (?:mentioned|named)\b|\bwhat names?\b"
                  r"|\bnames? (?:is|are) mentioned\b|\bmention(?:s|ed)? (?:a |any )?(?:names?|anyone|someone)\b|人名|名字"),
    (TRANSLATE, 3.0, r"\btranslat|\bin english\b|翻译|译成|译为|用英语|英文怎么说|(?:中文|汉语)怎么说|中文意思"
                     r"|(?:中文|汉语)是什么意思"
                     r"|\b(?:say|says|saying|said|mean|means)\b[^?.!]{0,20}\bin (?:chinese|mandarin|spanish|french|german"
                     r"|japanese|korean|italian|russian|portuguese|arabic)\b"),
    # An accent or dialect: Whisper names the language only, which the answer says (`asks_accent`).
    (LANGUAGE, 3.5, _ACCENT),
    (LANGUAGE, 3.0, r"\b(?:what|which) (?:language|languages|dialect)\b|\blanguage (?:is|was) (?:it|this|spoken|used)\b"
                    r"|\bidentify the language\b|\bwhat is the language\b|语言|语种|方言|哪国话|什么话|哪种话"
                    r"|\b(?:speaking|spoken|speak|talking|talk|said|sung|singing) in (?:english|chinese|mandarin|cantonese"
                    r"|spanish|french|german|japanese|korean|italian|russian|portuguese|arabic)\b"),
    # "mood" is weaker than the other cues and counts for music too: "what mood does this music create" is the
    # music's mood tags, "what mood does it set, and what might it be from" an open question.
    (EMOTION, 2.0, r"\bmood\b"),
    (MUSIC, 1.0, r"\bmood\b"),
    (EMOTION, 3.0, r"\bemotion|\bfeel(?:ing|s)?\b|\bhappy\b|\bsad\b|\bangry\b|\btone\b|\bsentiment\b|\battitude\b"
                   r"|\bexcited\b|\bcalm\b|\bnervous\b|情绪|情感|心情|语气|开心|高兴|难过|伤心|生气|态度|感情"),
    # States a listener may be in too ("should I be worried?" is advice): only of how someone sounds or is.
    (EMOTION, 3.0, r"\b(?:sounds?|sounding|seems?|more|less|is (?:he|she|the speaker)|are they)\b[^?.!]{0,15}"
                   r"\b(?:worried|anxious|scared|afraid|upset|relaxed|cheerful|depressed|stressed|tired|sleepy|bored"
                   r"|energetic|confident|friendly|serious|sarcastic|sincere)\b"
                   r"|(?:听起来|他|她)[^？。！?]{0,6}(?:担心|焦虑|紧张|害怕|轻松|沮丧|激动)"),
    # How fast someone speaks is one of the voice cues.
    (EMOTION, 3.5, r"\bhow fast (?:is|does|do) (?:he|she|the speaker|the person|they) (?:talk|speak)|\bspe(?:aking|ech) rate\b"
                   r"|\bspeed of (?:his|her|their|the) (?:speech|speaking|talking)\b|\bspe(?:aking|ech) speed\b"
                   r"|语速|说话(?:很)?(?:快|慢)|说得(?:很)?(?:快|慢)|(?:说话|讲话)的?速度"),
    # "多大" asks a speaker's age too (他多大了): a loudness cue outweighs it (声音有多大).
    (LOUDNESS, 3.5, r"\bhow loud\b|\bhow quiet\b|\bloudness\b|\bvolume\b|\bdecibels?\b|\bdbfs\b|\blouder\b|\bquieter\b"
                    r"|\b(?:is|was) (?:it|this|that|the (?:sound|noise|audio|clip|music)) (?:very |too )?(?:loud|quiet)\b"
                    r"|\bloudest\b|\bquietest\b|\bsoftest\b|最响|最吵|最安静"
                    r"|音量|响度|分贝|多响|多大声|声音(?:有)?多大|响不响|大声吗|吵不吵|有多吵|更响|更大声|更吵|更轻"),
    # How good the recording is, how noisy its background: its measured levels and what else is heard. "What is that
    # noise?" stays SOUND's; the LLM had answered "背景里有噪音吗？" with "背景里有噪音" for a clean reading.
    (QUALITY, 3.5, r"\b(?:audio|sound|recording|voice) quality\b|\bquality of (?:the|this|that) (?:audio|sound|recording|clip)\b"
                   r"|\bbackground noise\b|\bany noise\b|\bnois(?:y|iness)\b|\bnoise level\b|\bhiss\b|\bclipp(?:ed|ing)\b"
                   r"|\bdistort(?:ed|ion)\b|\b(?:is|was) (?:it|this|the (?:audio|recording|sound|speech|voice)) (?:clear|clean)\b"
                   r"|\bhow clear\b|\bwell recorded\b|\becho(?:es|y)?\b|\breverb\w*|回声|混响"
                   r"|音质|录音质量|声音质量|背景(?:里|中)?(?:有)?(?:没有)?(?:噪音|杂音|噪声)|有(?:没有)?(?:噪音|杂音|噪声)|噪音大|杂音大"
                   r"|底噪|失真|清晰吗|清楚吗|清不清楚|清不清晰"),
    # A file's own properties (the LLM had answered "Mono", "an audio clip").
    (FORMAT, 3.5, r"\bmono\b|\bstereo\b|\bsample ?rate\b|\bsampling rate\b|\bbit ?rate\b|\bbit depth\b|\bcodec\b"
                  r"|\b(?:file|audio) format\b|\bwhat format\b|\bwhich format\b|\bhow many channels\b|\bkhz\b"
                  r"|采样率|比特率|码率|位深|声道|文件格式|什么格式|编码格式"),
    # A clip's length; "how long does the glass break" is WHEN's (a sound's times).
    (DURATION, 3.5, r"\bhow long is (?:the |this |that |each )?(?:\w+ )?(?:audio|clip|recording|file|track|it)\b"
                    r"|\bhow long is (?:this|that)\s*[?.!]*$"
                    r"|\b(?:length|duration) of (?:the|this|that|each) (?:audio|clip|recording|file)\b"
                    r"|\bwhich (?:one|clip|audio|recording) is (?:the )?(?:longer|shorter|longest|shortest)\b"
                    r"|\bhow many seconds\b"
                    r"|(?:音频|录音|这段|片段)[^？?，,]{0,4}(?:多长|多久|几秒|时长)|时长"),
    # Happy or sad music is the music's mood tags, not a voice's cues ("Is the music happy or sad?").
    (MUSIC, 2.0, r"\b(?:music|song|melody|tune)\b[^?.!]{0,30}\b(?:happy|sad|cheerful|joyful|melanchol\w*|emotions?|feel)\b"
                 r"|\b(?:happy|sad|cheerful|joyful|melanchol\w*|emotions?|feel)\b[^?.!]{0,30}\b(?:music|song|melody|tune)\b"
                 r"|(?:音乐|歌|曲子)[^？?。]{0,10}(?:开心|高兴|难过|伤心|悲伤|欢快|情绪|情感)"
                 r"|(?:开心|高兴|难过|伤心|悲伤|欢快|情绪|情感)[^？?。]{0,10}(?:音乐|歌|曲子)"),
    (SPEAKER, 3.0, r"\bpitch\b|音高|音调"),
    # How many speak: lite does not tell voices apart, and says so (`asks_speaker_count`); the LLM said "one person".
    (SPEAKER, 3.5, _SPEAKER_COUNT),
    (SPEAKER, 3.0, r"\bgender\b|\bhow old\b|\bage of\b|\bmale or female\b|\bman or (?:a )?woman\b|\bboy or (?:a )?girl\b"
                   r"|\bwho is speaking\b|\bis (?:it|this|the speaker|the voice|the person|he|she) (?:a )?(?:man|woman|male"
                   r"|female|child)\b|\b(?:male|female) (?:voice|speaker)\b"
                   r"|性别|男的|女的|男人|女人|男声|女声|年龄|几岁|多大"),
    (SPEAKER, 0.5, r"\bspeaker\b|说话人|说话的人"),
    (INSTRUMENT, 3.0, r"\binstrument|\bpiano\b|\bguitar\b|\bviolin\b|\bdrums?\b|\bplayed on\b|\bwhat is playing\b"
                      r"|乐器|钢琴|吉他|小提琴|鼓|演奏"),
    (MUSIC, 2.0, r"\bmusic|\bgenre\b|\bsong\b|\bmelody\b|\btempo\b|\bbpm\b|\bbeats? per\b|\bstyle\b"
                 r"|\b(?:this|the|that) (?:piano )?piece\b|音乐|歌|曲|风格|节奏|旋律|节拍"),
    # A genre by name ("Is it classical?" after "What instrument is this?" had gone to the LLM); "rock" and "pop" are
    # sounds too, so only with a music word (above).
    (MUSIC, 2.0, r"\bclassical\b|\bjazz\b|\bhip[- ]hop\b|\bblues\b|\bopera\b|古典|爵士|摇滚|流行音乐|民谣"),
    # A piece's key is not measured (said so, `answer.music`); the LLM had named one ("C major").
    (MUSIC, 3.0, r"\bhow many notes\b|\b(?:what|which) notes\b|音符"
                 r"|\b(?:what|which) key\b|\bin (?:what|which) key\b|\bthe key of (?:the|this|that) (?:music|song|piece)\b"
                 r"|\bmajor or (?:a )?minor\b|\bchords?\b|调性|什么调|哪个调|大调|小调|和弦"),
    (SOUND, 1.5, r"\bsounds?\b|\bnoise\b|\bwhat is (?:it|this|that)\b|\bwhat's (?:it|this|that)\b|\bwhat happened\b"
                 r"|\bhear\b|\bheard\b"
                 r"|\baudio events?\b|\bwhat(?:'s| is) in (?:the|this|that)(?: \w+)? (?:audio|clip|recording)\b"
                 rf"|{WHICH_HAS}|哪一?段(?:音频)?(?:里)?有"
                 r"|\b(?:describe|tell me about) (?:the|this|that) (?:audio|sound|clip|recording)\b"
                 r"|\bwhat(?:'s| is) going on(?: here| in (?:the|this) (?:audio|clip|recording))?\s*[?.!]?$"
                 r"|\bwhat (?:kind of )?(?:animal|bird|insect|creature|vehicle|machine)s?\b"
                 r"|\bis there\b|\bare there\b|声音|什么声|听到|听见|发生了什么|这是什么|是什么|有没有|有什么"),
    # Writing down what is said is a transcript, not a composition ("write" and 写 are OPEN's cues).
    # Which word comes first or last, how many are said: from the transcript's words (`answer.word_facts`).
    (DESCRIBE, 3.5, WORD_FACTS),
    # How sure Whisper was of its words (`answer.transcript_confidence`); the transcript alone had been the answer.
    (DESCRIBE, 3.5, CONFIDENCE),
    (DESCRIBE, 3.5, r"\brepeat\b|重复一下|重复一遍"),
    (DESCRIBE, 3.5, r"\blyrics\b|\bwrite down\b|\bwrite out\b|\b(?:give me|show me|get|into|to|as) (?:the )?text\b"
                    r"|歌词|写下来|记下来|抄下来|写出来|转写|听写|几个字|多少字"),
    (DESCRIBE, 2.0, r"\brecogni[sz]e\b|\btranscri|\bsaying\b|\bsays?\b|\bsaid\b|\bspoken\b|\bspeech\b|\bwords\b"
                    r"|\btalk(?:ing)?\b|\bspeak(?:s|ing)?\b|有人说话|在说话"
                    r"|\bcontent of\b|\bwhat (?:do|did|does) (?:you|he|she|they|it|the(?: \w+){1,2}) (?:hear|say)"
                    r"|说了什么|说什么|讲了什么|讲什么|内容|识别|转写|听写|讲的是|说的是|说了啥|说啥"),
    # Pauses are the gaps between speech regions (`answer.pauses`); "how long" alone is a sound's times.
    (WHEN, 3.5, PAUSES),
    (WHEN, 2.0, r"\bwhen\b|\bwhat time\b|\bat what point\b|\btimestamps?\b|\bstart(?:s|ing)? (?:time|at)\b"
                r"|\bend(?:s|ing)? (?:time|at)\b"
                r"|\bfind\b|\blocate\b|\bwhere\b|\bseconds\b|\bhow long\b"
                r"|什么时候|何时|时间|开始|结束|哪里|在哪|位置|找出|找到|定位|几秒|多久|" + COUNTING),
]
PRIORITY = [GROUND, PERSON, TRANSLATE, LANGUAGE, LOUDNESS, QUALITY, DURATION, FORMAT, EMOTION, SPEAKER, OPEN, INSTRUMENT,
            WHEN, MUSIC, DESCRIBE, SOUND]

# A quoted phrase: closed by ” 」 』 », or by " ' ’ before a space, the end or punctuation (so "don't" opens nothing).
_QUOTED = re.compile(r"[\"“”«»「」『』'‘’]([^\"“”«»「」『』]+?)(?:[”」』»]|[\"“'‘’](?=\s|$|[?.!,？。！，的]))")
_GROUND_WORDS = re.compile(r"\b(?:find|locate|where|when|start|end|timestamp|time|times|position|grounding|seconds)\b"
                           r"|找|时间|开始|结束|哪里|在哪|位置|定位|几秒|什么时候", re.I)


_YES_NO = re.compile(r"\s*(?:is|are|was|were|does|do|did|can you hear|could you hear)\b", re.I)
_YES_NO_ZH = re.compile(r"吗\s*[？?]?\s*$")


def asks_accent(question: str) -> bool:
    """Whether `question` asks for an accent or dialect ("What is the speaker's accent?", 哪里的方言)."""
    return bool(re.search(_ACCENT, question.lower()))


def asks_speaker_count(question: str) -> bool:
    """Whether `question` asks how many people speak ("How many people are speaking?", 有几个人说话)."""
    return bool(re.search(_SPEAKER_COUNT, question.lower()))


def yes_no(question: str) -> bool:
    """Whether `question` is a yes/no question: English ("Is she singing?", "Does a bell ring?") or Chinese, ending
    in 吗 ("她在笑吗？")."""
    return bool(_YES_NO.match(question) or _YES_NO_ZH.search(question))


# A follow-up that names no task of its own: "And this one?", "What about the second clip?", 这段呢？
_ELLIPTICAL = re.compile(
    r"^(?:(?:and|what about|how about)\s+)?(?:this|that|it|these|those|(?:this|that|the \w+) (?:one|clip|audio|recording))"
    r"(?: one)?\s*[?.!]*$|^(?:and|what about|how about)\s+(?:the )?(?:audio|clip|recording)\s*#?\d+\s*[?.!]*$"
    r"|^(?:那|那么)?(?:这段|这个|这一段|这条|它|这段音频|这个音频|下一段|另一段|第[一二两三四五1-5](?:段|个)(?:音频)?)(?:呢|又如何)\s*[？?]?$",
    re.I)


def standing_question(question: str, earlier: "list[str]") -> str:
    """The question to answer: `question`, or for an elliptical follow-up ("And this one?", 这段呢？) the latest of the
    `earlier` questions (oldest first) that is not one, asked again (of the clips the follow-up brings or names)."""
    if not _ELLIPTICAL.search(question.strip()):
        return question
    return next((q for q in reversed(earlier) if q.strip() and not _ELLIPTICAL.search(q.strip())), question)


@dataclass(frozen=True)
class Intent:
    kind: str  # one of the constants above
    phrase: str | None = None  # the word or phrase to ground (GROUND only)


def scores(question: str) -> dict[str, float]:
    """Each intent's cue score for `question` (for tests and the benchmark's confusion table)."""
    low = question.lower()
    out: dict[str, float] = {}
    for kind, weight, pattern in _CUES:
        if re.search(pattern, low):
            out[kind] = out.get(kind, 0.0) + weight
    return out


def route(question: str) -> Intent:
    """Classify one question (audio tags already removed)."""
    q = question.strip()
    quoted = _QUOTED.search(q + " ")
    if quoted and _GROUND_WORDS.search(q):
        return Intent(GROUND, quoted.group(1).strip())
    m = re.search(r"\b(?:find|locate) the (?:word|phrase)s?\s+([\w'’-]+(?:\s+[\w'’-]+)?)\s*[?.!]?$", q, re.I)
    if m:  # unquoted: 'find the word companionless'
        return Intent(GROUND, m.group(1))
    s = scores(q)
    if not s:
        # "Is she singing?", "Does a bell ring?": a yes/no question about a sound the report names, not an open one.
        if yes_no(q) and mentioned_sounds(q):
            return Intent(SOUND)
        return Intent(OPEN)
    best = max(s.values())
    kind = next(k for k in PRIORITY if s.get(k) == best)
    return Intent(kind)


# A quoted stretch: "..." “...” 「...」 『...』 «...» ‘...’, or '...' not inside a word (so "what's" is no quote).
_ANY_QUOTE = re.compile(r"[\"“”«»「」『』‘’][^\"“”«»「」『』‘’]*[\"“”«»「」『』‘’]|(?<!\w)'[^']*'(?!\w)")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # CJK ideographs
_KANA = re.compile(r"[\u3040-\u30ff]")  # hiragana and katakana: Japanese, not Chinese


def question_language(question: str) -> str:
    """'zh' when the question's own words (outside quotes) contain CJK ideographs and no kana, else 'en'.

    '请找出 "middle classes" 的开始和结束时间' is Chinese; 'When does she say "你没事吧"?' is English. A
    question that is nothing but a quotation is judged by the quotation.
    """
    own = _ANY_QUOTE.sub(" ", question)
    if not re.search(r"\w", own):
        own = question
    return "zh" if _HAN.search(own) and not _KANA.search(own) else "en"


_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1, "1st": 1, "2nd": 2, "3rd": 3}
_ZH_ORDINALS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5}


def named_clips(question: str) -> list[int]:
    """The positions of the clips `question` names, 1-based ("the second audio": 2, "audio 3": 3, 第一段: 1), -1 for
    the last; empty when it names none."""
    low = question.lower()
    named = [_ORDINALS[m.group(1)] for m in
             re.finditer(r"\b(first|second|third|fourth|fifth|last|1st|2nd|3rd)\s+(?:audio|clip|recording|one|sound)\b", low)]
    named += [int(m.group(1)) for m in re.finditer(r"\b(?:audio|clip)\s*#?(\d+)\b", low)]
    named += [_ZH_ORDINALS[m.group(1)] for m in re.finditer(r"第([一二两三四五1-5])(?:段|个|条)", question)]
    if re.search(r"最后一(?:段|个|条)", question):
        named.append(-1)
    return list(dict.fromkeys(named))


def clip_refs(question: str, n: int) -> list[int]:
    """0-based indices of the clips (of `n` in play) that `question` names; all of them if none."""
    picked = [n - 1 if k == -1 else k - 1 for k in named_clips(question)]
    picked = [i for i in dict.fromkeys(picked) if 0 <= i < n]
    return picked or list(range(n))


_SEVERAL = re.compile(r"\bboth\b|\b(?:two|three|four|all|these|those|each) (?:clips|audios?|recordings|sounds|files)\b"
                      r"|\bcompar|\bdifference|两段|两个音频|这两|三段|所有|每段|每个音频|比较|区别")


def asks_several(question: str) -> bool:
    """Whether `question` is about several clips ("both", "these two audio", "compare", 这两段, 比较)."""
    return bool(_SEVERAL.search(question.lower()))


# Words a question may use for a sound group (report.GROUPS names); English stems and Chinese.
SOUND_WORDS: dict[str, str] = {
    "breaking glass": r"\bglass|\bshatter|\bbreak|玻璃|碎",
    "a dog barking": r"\bdogs?\b|\bbark|狗|犬",
    "a cat": r"\bcats?\b|\bmeow|猫",
    "birdsong": r"\bbirds?\b|\bchirp|鸟",
    "rain": r"\brain|下雨|雨声",
    "thunder": r"\bthunder|雷",
    "running water": r"\bwater\b|\bstream\b|\bpour|水",
    "ocean waves": r"\bocean|\bwaves?\b|\bsea\b|海浪|海",
    "wind": r"\bwind\b|风",
    "a siren": r"\bsiren|警笛",
    "an alarm": r"\balarm|警报|闹钟",
    "a bell ringing": r"\bbells?\b|\bding|\bring(?:s|ing)?\b|铃声|钟声|铃",
    "a telephone ringing": r"\bphones?\b|\btelephone|\bring(?:s|ing)?\b|电话",
    "a doorbell": r"\bdoorbell|门铃",
    "knocking": r"\bknock|敲门|敲",
    "a door": r"\bdoors?\b|门",
    "a car horn": r"\bhorn|\bhonk|喇叭",
    "a car": r"\bcars?\b|汽车|车",
    "a train": r"\btrain|火车",
    "an aircraft": r"\bplane|\baircraft|\bhelicopter|飞机",
    "an engine": r"\bengine|发动机|引擎",
    "footsteps": r"\bfootsteps?|\bsteps\b|\bwalking|脚步",
    "applause": r"\bapplause|\bclapping|掌声|鼓掌",
    "an explosion": r"\bexplosion|\bexplode|爆炸",
    "gunshots": r"\bgun|\bshots?\b|枪",
    "fireworks": r"\bfireworks?|烟花|鞭炮",
    "typing": r"\btyping|\bkeyboard typing|打字",
    "a clock ticking": r"\bclock|\bticking|钟",
    "laughter": r"\blaugh|笑",
    "crying": r"\bcry|\bcries|\bsob|哭",
    "a sigh": r"\bsigh|叹气",
    "singing": r"\bsing|\bsung\b|唱",
    "coughing": r"\bcough|咳",
    "screaming": r"\bscream|尖叫",
    "shouting": r"\bshout|\byell|喊",
    "a pure tone": r"\btone\b|\bbeep|\bsine\b|音调|蜂鸣",
    "piano": r"\bpiano|钢琴",
    "guitar": r"\bguitar|吉他",
    "violin": r"\bviolin|小提琴",
    "drums": r"\bdrums?\b|鼓",
}


def mentioned_sounds(question: str) -> list[str]:
    """Names of the report's sound groups that `question` asks about, in SOUND_WORDS order."""
    low = question.lower()
    names = [name for name, pattern in SOUND_WORDS.items() if re.search(pattern, low)]
    if "a bell ringing" in names and "a telephone ringing" in names:  # "ring" alone: one of them, by the noun
        names.remove("a bell ringing" if re.search(r"\bphones?\b|\btelephone|电话", low) else "a telephone ringing")
    return names
