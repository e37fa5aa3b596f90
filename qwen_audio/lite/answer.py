"""Responses in the tutorial's style, composed from each clip's `Report`; no model runs here.

Every function takes `Heard` clips (a label, the clip's report, and a way to get a translation)
and returns text; `compose` picks the one an intent asks for. Sounds are named from the AudioSet
tagger's groups ("This is a sound effect of breaking glass."), instruments and music from its
music classes, emotions never: the voice cues that were measured are stated instead. Answers are in
the question's language: every function takes the answer's `Phrases` (`phrases.EN`, the default, or
`phrases.ZH`: "这是玻璃破碎的音效，出现在<|0.00|>到<|1.80|>秒。"); transcripts stay as spoken.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from ..audio import SourceFormat
from ..grounding import render_seconds
from . import intent as I
from .asr import LANGUAGE_NAMES, Hearing, Word, language_name
from .events import TAGGER_PIP
from .phrases import EN, ORDINALS, ZH_LANGUAGES, Phrases, for_question
from .report import Report, Sound

if TYPE_CHECKING:
    from .soundalike import SoundMatch


@dataclass
class Heard:
    """One clip in play: its report, and `hear(task)` for Whisper's "transcribe" or "translate"."""

    index: int  # 0-based position among the clips in play
    count: int  # how many clips are in play
    hear: Callable[[str], Hearing]
    report: Callable[[], Report] | None = None
    # where an English word missing from the transcript sounds as if said (`soundalike.find_by_sound`)
    sounds_like: Callable[[str], "SoundMatch | None"] | None = None
    seconds: float | None = None  # the whole recording's length (the report covers its first 30 s), when known
    source_format: SourceFormat | None = None  # the codec, rate and channels the clip was decoded from

    @property
    def label(self) -> str:
        """'the audio' for a single clip, else 'the first audio', 'the second audio', ..."""
        return EN.label(self.index, self.count)

    @property
    def rep(self) -> Report | None:
        return self.report() if self.report is not None else None


def ts(seconds: float) -> str:
    """A timestamp as the tutorial writes it: <|2.33|>."""
    return f"<|{seconds:.2f}|>"


def quote(tr: Hearing) -> str:
    return f'"{tr.text}"'


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _span_text(spans: Sequence[tuple[float, float]], limit: int = 3, p: Phrases = EN) -> str:
    """'from <|0.00|> to <|1.80|> seconds' (several spans joined; at most `limit`)."""
    parts = [p("span", a=ts(a), b=ts(b)) for a, b in spans[:limit]]
    more = p("more", n=len(spans) - limit) if len(spans) > limit else ""
    return p.join(parts) + more


def _timed(sounds: Sequence[Sound], p: Phrases, limit: int = 2) -> str:
    """'laughter (from <|1.00|> to <|1.50|> seconds) and a sigh (...)' / '笑声（<|1.00|>到<|1.50|>秒）和……'."""
    return p.join([p("paren", p.name(s.name), _span_text(s.spans, limit, p)) for s in sounds])


def _clauses(parts: Sequence[str], p: Phrases) -> str:
    """Clauses as one sentence: 'The first audio is ..., and the second audio is ....' / '第一段音频是……，第二段音频是……。'"""
    return _sentence(p.clause.join(parts)) + p.stop


# ---- what a clip is -----------------------------------------------------------------------------------


def speaking_phrase(r: Report, p: Phrases = EN) -> str:
    """'a person speaking, in a English, saying, "..."' (the tutorial's wording)."""
    tr = r.hearing
    return p("speaking", verb=p.pick("verb", r.singing), lang=p.language(tr.language), quote=quote(tr))


_SOLO = ("piano", "guitar", "violin", "cello", "flute", "harp", "organ", "harpsichord", "acoustic guitar")


def music_phrase(r: Report, p: Phrases = EN) -> str:
    """'a piano piece' / 'music with drums and guitar' / 'music'."""
    inst = [s.name for s in r.instruments[:3]]
    sung = any(v.name == "singing" for v in r.vocal)
    if len(inst) == 1 and not sung:
        return p("solo" if inst[0] in _SOLO else "inst_music", p.name(inst[0]))
    body = p("music_with", p.join([p.name(n) for n in inst])) if inst else p("music")
    return p("song", body) if sung else body


def loud_sounds(r: Report) -> list:
    """The sounds confident enough to name beside speech (at most two): the layers of a mixture."""
    return [s for s in r.sounds if s.score >= 0.6][:2]


def what_phrase(r: Report, p: Phrases = EN) -> str:
    """A noun phrase for the whole clip (used in multi-clip answers and the LLM's lead), every confident layer:
    speech, the music under it and the sounds beside it."""
    if r.has_speech:
        out = speaking_phrase(r, p)
        if r.has_music and not r.singing:
            out += p("over", music_phrase(r, p))
        if loud_sounds(r):
            out += p("with_sounds", p.join([p.name(s.name) for s in loud_sounds(r)]))
        return out
    if r.has_music:
        return music_phrase(r, p)
    if r.sounds:
        return p("sound_of", p.join([p.name(s.name) for s in r.sounds[:2]]))
    return p("silence" if r.silent else "unnamed")


def sound_answer(r: Report, subject: str = "sound", p: Phrases = EN) -> str:
    """'This is a sound effect of breaking glass. It is heard from <|0.00|> to <|1.80|> seconds.' and the like."""
    if r.has_speech:
        text = p("subject", p(subject), speaking_phrase(r, p))
        extra = loud_sounds(r)
        if r.has_music and not r.singing:
            text += p.sp + p("background", music_phrase(r, p))
        if extra:
            text += p.sp + p("also_hear", _timed(extra, p))
        return text
    if not r.tagged:
        return p("no_speech_heard") + p.sp + p("no_tagger", TAGGER_PIP)
    if r.has_music:
        text = _sentence(p("this_is", music_phrase(r, p)))
        if r.instruments:
            text += p.sp + instrument_sentence(r, p)
        return text
    if r.sounds:
        main = r.sounds[0]
        text = p("sound_effect", name=p.name(main.name), spans=_span_text(main.spans, p=p))
        others = [s for s in r.sounds[1:] if s.score >= 0.6][:2]
        if others:
            text += p.sp + p("also_hear", _timed(others, p))
        vocal = [v for v in r.vocal if v.score >= 0.6][:2]
        if vocal:
            text += p.sp + p("there_is", _timed(vocal, p))
        return text
    if r.vocal:
        v = r.vocal[0]
        return p("vocal_only", name=p.name(v.name), spans=_span_text(v.spans, p=p))
    if r.silent:
        return p("silent", r.loudness_dbfs)
    tags = p.comma.join(p("paren", p.tag(lbl), f"{s:.2f}") for lbl, s in r.top[:3])
    return p("closest", tags)


def what_is(clips: Sequence[Heard], question: str = "", p: Phrases = EN) -> str:
    """The answer to 'what is it' / 'what is that sound?' for one or several clips."""
    subject = "sound" if re.search(r"\bsound\b|声音", question, re.I) else "speech"
    asked = I.mentioned_sounds(question)
    if asked and (I.yes_no(question) or re.search(rf"\bis there\b|\bare there\b|\bdo you hear\b|{I.WHICH_HAS}|有没有|是否"
                                                   r"|有.*吗|哪一?段", question, re.I)):
        return presence(clips, asked, p)
    if len(clips) == 1:
        return sound_answer(clips[0].rep, subject, p)
    return lead(clips, p)


def _label(c: Heard, p: Phrases = EN) -> str:
    """The clip's label in the answer's language: 'the first audio' / '第一段音频'."""
    return p.label(c.index, c.count)


def _subject(c: Heard, p: Phrases = EN) -> str:
    """The clip's label opening a sentence: 'The first audio' / '第一段音频'."""
    label = _label(c, p)
    return label[:1].upper() + label[1:]


def _where(c: Heard, n: int, p: Phrases, key: str = "where") -> str:
    """'In the first audio, ' (or the `key` form) when several clips are answered; '' for one."""
    return p(key, _label(c, p)) if n > 1 else ""


def presence(clips: Sequence[Heard], names: Sequence[str], p: Phrases = EN) -> str:
    """'Yes: breaking glass is heard from ... .' / 'No, I don't hear a dog barking ...' for asked-about sounds."""
    if any(not c.rep.tagged for c in clips):
        return p("no_tagger", TAGGER_PIP)
    out = []
    for c in clips:
        r = c.rep
        where = _where(c, len(clips), p, "in_label")
        for name in names:
            s = r.find(name)
            if s is None and name in ("piano", "guitar", "violin", "drums"):
                s = next((i for i in r.instruments if name in i.name), None)
            if s is not None:
                out.append(p("yes_heard", name=p.name(s.name), where=where, spans=_span_text(s.spans, p=p), score=s.score))
            else:
                out.append(p("not_heard", name=p.name(name), where=where, what=what_phrase(r, p)))
    return p.sp.join(out)


def instrument_sentence(r: Report, p: Phrases = EN, where: str = "") -> str:
    """'The instrument is the piano.' / '乐器是钢琴。', after `where` ('In the first audio, ')."""
    names = [p.name(s.name) for s in r.instruments[:3]]
    text = p.pick("instrument", len(names) == 1, names[0] if len(names) == 1 else p.join([p("the", n) for n in names]))
    return _sentence(where + text)


NO_TAGGER = EN("no_tagger", TAGGER_PIP)


def instruments(clips: Sequence[Heard], p: Phrases = EN) -> str:
    if any(not c.rep.tagged for c in clips):
        return p("no_tagger", TAGGER_PIP)
    out = []
    for c in clips:
        r = c.rep
        where = _where(c, len(clips), p)
        if r.instruments:
            out.append(instrument_sentence(r, p, where))
        elif r.has_music:
            out.append(_sentence(where + p("unnamed_instrument")))
        else:
            out.append(_sentence(where + p("no_instrument", what_phrase(r, p))))
    return p.sp.join(out)


# Tempo is not measured (an onset-autocorrelation estimate was tried and could not be checked): said when asked.
_TEMPO = re.compile(r"\btempo\b|\bbpm\b|\bbeats? per\b|\bfast\b|\bslow\b|\bspeed\b|\bpace\b|节奏|快慢|速度|节拍|多快", re.I)
_KEY = re.compile(r"\bkey\b|\bnotes\b|音符|\bmajor or (?:a )?minor\b|\bchords?\b|调性|什么调|哪个调|大调|小调|和弦", re.I)
_GENRE = re.compile(r"\bclassical\b|\bjazz\b|\brock\b|\bpop\b|\bhip[- ]hop\b|\belectronic\b|\bfolk\b|\bblues\b"
                    r"|古典|爵士|摇滚|流行|民谣|电子|\bgenre|\bstyle\b|\bkind of music\b|\btype of music\b|风格|类型|流派", re.I)
_MUSIC_WORDS = re.compile(r"\bmusic\b|\bsong\b|\bmelody\b|\bpiece\b|音乐|歌|曲|旋律", re.I)
_MOOD = re.compile(r"\bmood|\bemotion|\bhappy\b|\bsad\b|\bcheerful|\bjoyful|\bmelanchol|\bfeel|情绪|情感|心情|开心|高兴|难过"
                   r"|伤心|悲伤|欢快", re.I)


def music(clips: Sequence[Heard], p: Phrases = EN, question: str = "") -> str:
    """Is there music, what kind (the tagger's instrument, genre and mood tags, with scores); that its tempo
    is not measured, when the question asks for it."""
    if any(not c.rep.tagged for c in clips):
        return p("no_tagger", TAGGER_PIP)
    out = []
    for c in clips:
        r = c.rep
        where = _where(c, len(clips), p)
        if not r.has_music:
            out.append(_sentence(where + p("no_music_here", what_phrase(r, p))) if where else
                       p("no_music", what_phrase(r, p)))
            continue
        text = where + p("this_is", music_phrase(r, p))
        if r.instruments:
            text += p.sp + instrument_sentence(r, p)
        if r.genres:
            text += p.sp + p("genres", p.join([p("paren", p.tag(g), f"{s:.2f}") for g, s in r.genres[:3]]))
        elif _GENRE.search(question):
            text += p.sp + p("no_genre")
        if r.moods:
            text += p.sp + p("moods", p.join([p("paren", p.tag(m), f"{s:.2f}") for m, s in r.moods]))
        elif _MOOD.search(question):
            text += p.sp + p("no_mood")
        out.append(_sentence(text))
    if _TEMPO.search(question) and any(c.rep.has_music for c in clips):
        out.append(p("no_tempo"))
    if _KEY.search(question) and any(c.rep.has_music for c in clips):
        out.append(p("no_key"))
    return p.sp.join(out)


QUIET_BACKGROUND_DB, SOME_BACKGROUND_DB = 35.0, 20.0  # quietest tenth under the loudest tenth; see `quality`


def quality(clips: Sequence[Heard], p: Phrases = EN, question: str = "") -> str:
    """How good the recording is, as measured: its level and peak (full scale: maybe clipped), how far its quietest
    50 ms frames lie under its loudest (the tutorial's clean readings 43-53 dB, its continuous music and Spanish 15 dB,
    white noise 0.5 dB), and what else is heard beside the speech. No quality is judged beyond these."""
    out = []
    for c in clips:
        r = c.rep
        if r.silent:
            out.append(_where(c, len(clips), p) + p("silent", r.loudness_dbfs))
            continue
        clip = p("quality_clipped") if r.peak_dbfs >= -0.1 else ""
        text = [p("quality_levels", who=_subject(c, p), mean=round(r.loudness_dbfs), peak=round(r.peak_dbfs), clip=clip)]
        gap = round(r.loudest_dbfs - r.quietest_dbfs)
        if r.quietest_dbfs <= -100.0:
            text.append(p("quality_digital"))
        else:
            kind = "quiet" if gap >= QUIET_BACKGROUND_DB else "some" if gap >= SOME_BACKGROUND_DB else "busy"
            text.append(p(f"quality_{kind}", q=round(r.quietest_dbfs), gap=gap))
        if r.has_speech:
            beside = [music_phrase(r, p)] if r.has_music and not r.singing else []
            beside += [p.name(s.name) for s in loud_sounds(r)]
            text.append(p("quality_besides", p.join(beside)) if beside else
                        p("quality_nothing_else") if r.tagged else "")
        else:
            text.append(p("quality_what", what_phrase(r, p)))
        out.append(p.sp.join(t for t in text if t))
    reverb = [p("no_reverb")] if re.search(r"\becho|\breverb|回声|混响", question, re.I) else []
    return p.sp.join([*out, *reverb, p("quality_note")])


# ---- speech -------------------------------------------------------------------------------------------


def describe(clips: Sequence[Heard], subject: str = "speech", p: Phrases = EN) -> str:
    """Transcription answer: 'The speech is of a person speaking, in a English, saying, "...".'"""
    if len(clips) == 1:
        r = clips[0].rep
        if r.has_speech:
            return p("subject", p(subject), speaking_phrase(r, p))
        return p("no_speech_heard") + p.sp + sound_answer(r, p=p)
    parts = []
    for c in clips:
        r = c.rep
        parts.append(p("is_of", _label(c, p), speaking_phrase(r, p)) if r.has_speech
                     else p("is_of_no_speech", _label(c, p), what_phrase(r, p)))
    return _clauses(parts, p)


_HAN = re.compile(r"[\u3400-\u9fff]")


def _no_words(c: Heard, n: int, p: Phrases) -> str:
    """The sentence for a clip with no words to answer from ('I hear no speech in this audio.'); '' when it has them."""
    r = c.rep
    if r.has_speech and r.hearing.words:
        return ""
    return _sentence(_where(c, n, p) + (p("is_of_no_speech", _label(c, p), what_phrase(r, p)) if n > 1
                                         else p("no_speech_heard")))


def _from_words(clips: Sequence[Heard], p: Phrases, answer: Callable[[Heard, str, tuple], str]) -> list[str]:
    """Each clip's `answer(clip, where, words)` from its timed words, or the sentence that it has none (`_no_words`)."""
    n = len(clips)
    return [_no_words(c, n, p) or answer(c, _where(c, n, p), c.rep.hearing.words) for c in clips]


def word_facts(clips: Sequence[Heard], question: str, p: Phrases = EN) -> str:
    """'The first word is "Mr.", from <|0.54|> to <|0.80|> seconds.', the last word, or how many words are spoken (Han
    characters for Chinese speech) or sentences, from the transcript's timed words; that no one speaks where no one does."""
    low = question.lower()

    def one(c: Heard, where: str, words: tuple) -> str:
        hearing = c.rep.hearing
        if re.search(r"\bsentences\b|几句|多少句", low):
            text = re.sub(r"\b(Mr|Mrs|Ms|Dr|St|Prof|Jr|Sr)\.", r"\1", hearing.text.strip())  # "Mr." ends no sentence
            n = max(1, len(re.findall(r"[^.!?。！？]+[.!?。！？]+", text + ".")))
            return _sentence(p.pick("sentence_count", n == 1, where=where, n=n))
        if re.search(r"\bhow many words\b|\bnumber of words\b|\bword count\b|\bcount\b|多少个?(?:词|字)|几个(?:词|字)", low):
            cjk = hearing.language in ("zh", "yue", "ja")
            n = len(_HAN.findall(hearing.text)) if cjk else len(words)
            return _sentence(p("word_count" if cjk else "word_count_words", where=where, n=n))
        last = re.search(r"\b(?:last|final)\b|最后|结尾", low) is not None
        w = words[-1] if last else words[0]
        word = w.text.strip(" ,!?;:。，！？；：、\"'“”")
        if not re.fullmatch(r"[A-Z][a-z]{0,3}\.", word):  # "Mr." keeps its stop; a sentence's last word does not
            word = word.rstrip(".")
        return _sentence(p("last_word" if last else "first_word", where=where, word=word, a=ts(w.start), b=ts(w.end)))

    return p.sp.join(_from_words(clips, p, one))


def transcript_confidence(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """How sure Whisper was of its words: their mean probability and the two it was least sure of (its own token
    probabilities, not a measured error rate)."""

    def one(c: Heard, where: str, words: tuple) -> str:
        mean = sum(w.prob for w in words) / len(words)
        least = sorted(words, key=lambda w: w.prob)[:2]
        unsure = p.join([p("word_prob", w.text.strip(" ,.!?;:。，！？；：、\"'“”"), f"{w.prob:.2f}") for w in least])
        return _sentence(p("confidence", where=where, mean=f"{mean:.2f}", n=len(words), unsure=unsure))

    said = any(c.rep.has_speech and c.rep.hearing.words for c in clips)
    return p.sp.join([*_from_words(clips, p, one), *([p("confidence_note")] if said else [])])


def _says(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """'the speech says: "..."' for one clip; per-clip quotes for several."""
    if len(clips) == 1:
        tr = clips[0].hear("transcribe")
        return p("says", quote(tr)) if tr.has_speech else p("no_speech_in_it")
    parts = []
    for c in clips:
        tr = c.hear("transcribe")
        parts.append(p("label_says", _label(c, p), quote(tr)) if tr.has_speech else p("label_no_speech", _label(c, p)))
    return p.clause.join(parts)


def language(clips: Sequence[Heard], p: Phrases = EN, accent: bool = False) -> str:
    """The language Whisper detects in each clip; asked for an accent or dialect (`accent`), that Whisper names
    only the language."""
    note = p.sp + p("accent_note") if accent else ""
    if len(clips) == 1:
        tr = clips[0].hear("transcribe")
        if not tr.has_speech:
            return p("no_language")
        return p("language", p.language(tr.language)) + note
    parts = []
    for c in clips:
        tr = c.hear("transcribe")
        parts.append(p("label_language", _label(c, p), p.language(tr.language)) if tr.has_speech
                     else p("label_without_speech", _label(c, p)))
    return _clauses(parts, p) + note


_LANGUAGES = r"(chinese|mandarin|spanish|french|german|japanese|korean|italian|russian|portuguese|arabic)"
_TARGET = re.compile(rf"\b(?:into|to|in)\s+{_LANGUAGES}\b|(?:译成|翻译成|译为)(中文|汉语|日语|法语|德语|西班牙语|韩语)"
                     r"|(中文|汉语)(?:怎么说|意思)", re.I)


# A target as the question names it -> its code: Whisper's English names and the Chinese phrasebook's, lower-cased.
_TARGET_CODES = {**{name.lower(): code for code, name in LANGUAGE_NAMES.items()},
                 **{name: code for code, name in ZH_LANGUAGES.items()}, "mandarin": "zh", "汉语": "zh"}


_TO_ENGLISH = re.compile(r"\b(?:into|to|in) english\b|(?:译成|翻译成|译为|用)(?:英文|英语)|英文怎么说", re.I)


def _target(question: str) -> str | None:
    """The language a question asks a translation into, as it names it, when that is not English; None for
    English ("what he says in Spanish, into English")."""
    target = None if _TO_ENGLISH.search(question) else _TARGET.search(question)
    return next(g for g in target.groups() if g) if target else None


def translation_target(question: str) -> str | None:
    """The language code a question asks speech to be translated into when that is not English ('zh', 'fr', ...)."""
    target = _target(question)
    return _TARGET_CODES[target.lower()] if target else None


def llm_translation(clips: Sequence[Heard], code: str, p: Phrases = EN) -> tuple[str, str | None]:
    """For a translation into `code` (not English: Whisper only translates into English), what lite writes first
    (each clip's words in its own language) and the task for the LLM (None when nothing needs translating)."""
    said, sources = [], []
    for c in clips:
        src = c.hear("transcribe")
        if not src.has_speech:
            said.append(p("nothing_to_translate", _label(c, p)))
        elif src.language == code:
            said.append(p("already_in", _label(c, p), p.language(code), quote(src)))
        else:
            said.append(p("says_in", _label(c, p), p.language(src.language), quote(src)))
            sources.append(quote(src))
    lead = _sentence(p("translation_sep").join(said)) + p.stop
    if not sources:
        return lead, None
    task = f"Translate into {EN.language(code)}. Write only the translation.\n\n" + "\n".join(sources)
    return lead + "\n" + p("llm_translation", p.language(code)), task


def translate(clips: Sequence[Heard], question: str, p: Phrases = EN) -> str:
    """Whisper's translate task; it only goes into English, which is said when asked otherwise."""
    target = _target(question)
    lead = p("only_english", target.capitalize()) if target else ""
    parts = []
    for c in clips:
        src = c.hear("transcribe")
        if not src.has_speech:
            parts.append(p("nothing_to_translate", _label(c, p)))
        elif src.language == "en":
            parts.append(p("already_in", _label(c, p), p.language("en"), quote(src)))
        else:
            parts.append(p("translation", _label(c, p), p.language(src.language), quote(c.hear("translate"))))
    return lead + _sentence(p("translation_sep").join(parts)) + p.stop


# ---- grounding ----------------------------------------------------------------------------------------

# Written and spoken forms of the same word: both sides of a comparison are spelled out this way.
_SPOKEN = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "st": "saint", "prof": "professor",
    "jr": "junior", "sr": "senior", "vs": "versus", "etc": "et cetera", "no": "no", "co": "company",
    "&": "and", "%": "percent", "ok": "okay", "mt": "mount", "ft": "feet", "lb": "pounds", "km": "kilometers",
}


def spoken(text: str) -> list[str]:
    """A word or phrase as spoken tokens: 'Dr.' -> ['doctor'], '9' -> ['nine'], "Mr. Quilter's" -> ['mister', "quilter's"]."""
    from .align import tokens_of

    out = []
    text = text.replace("&", " and ").replace("%", " percent ")
    for w in text.split():
        key = w.lower().strip(".,;:!?\"“”()").replace("’", "'")
        if key in _SPOKEN:
            out += _SPOKEN[key].split()
            continue
        toks = tokens_of(w)
        if toks:
            out += toks
        elif re.search(r"\w", w):  # Chinese and other scripts: keep the word's letters
            out.append(re.sub(r"[^\w']+", "", w.lower()))
    return out


def normalise(text: str) -> str:
    """Letters, digits and apostrophes of the spoken form, without spaces: how words are compared."""
    return "".join(spoken(text))


def find_phrase(words: Sequence[Word], phrase: str, cutoff: float = 0.75) -> tuple[float, float] | None:
    """(start, end) seconds of the run of `words` that best spells `phrase`, or None (see `find_run`)."""
    run = find_run(words, phrase, cutoff)
    return (words[run[0]].start, words[run[1] - 1].end) if run else None


def find_run(words: Sequence[Word], phrase: str, cutoff: float = 0.75) -> tuple[int, int, float] | None:
    """(first, last + 1, similarity) of the run of `words` that best spells `phrase`, or None.

    Both sides are compared in spoken form without spaces and punctuation, so "companion less"
    matches "companionless", "doctor" matches "Dr." and "nine" matches "9"; for text without
    spaces (Chinese), each word is matched by its characters. The best run of up to n+2 words wins
    if its similarity ratio reaches `cutoff` (1.0: spelled the same).
    """
    target = normalise(phrase)
    if not target or not words:
        return None
    keys = [normalise(w.text) for w in words]
    n = max(1, len(spoken(phrase)), len(target) if not re.search(r"[a-z0-9]", target) else 1)
    best, best_score = None, cutoff
    for i in range(len(words)):
        if not keys[i]:
            continue
        for k in range(i, min(len(words), i + n + 2)):
            got = "".join(keys[i: k + 1])
            score = 1.0 if got == target else difflib.SequenceMatcher(a=got, b=target).ratio()
            if score > best_score or (score == best_score == 1.0 and best is None):
                best, best_score = (i, k + 1, score), score
            if len(got) > 2 * len(target):
                break
    return best


def ground(clips: Sequence[Heard], phrase: str, p: Phrases = EN) -> str:
    """'The word "X" starts at <|a|> seconds and ends at <|b|> seconds.'"""
    found = []
    for c in clips:
        words = c.hear("transcribe").words
        run = find_run(words, phrase)
        if run:  # spelled alike; where it is not spelled the same, say what the transcript has there
            i, k, score = run
            note = "" if score == 1.0 else p.sp + p("heard_as", heard_text(words[i:k]))
            found.append((c, (words[i].start, words[k - 1].end), note))
    if not found:
        names = I.mentioned_sounds(phrase)
        if names:  # "find "glass breaking"": a sound, not a word
            return when(clips, phrase, p)
        # Not in the text: maybe Whisper misheard it. Look for it by its sound (English words only).
        for c in clips:
            match = c.sounds_like(phrase) if c.sounds_like is not None else None
            if match is not None:
                found.append((c, (match.start, match.end), p.sp + p("heard_as", match.heard)))
        if not found:
            return p("word_missing", phrase, _says(clips, p))
    out = []
    for c, (a, b), note in found:
        out.append(_sentence(_where(c, len(clips), p) + p("word_span", phrase=phrase, a=ts(a), b=ts(b))) + note)
    return p.sp.join(out)


def heard_text(words: Sequence[Word]) -> str:
    """The words as the transcript wrote them, without the run's outer punctuation ("classes," -> "classes")."""
    return " ".join(w.text for w in words).strip(".,;:!?，。！？")


MIN_PAUSE = 0.3  # seconds between speech regions that count as a pause


def pauses(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """The pauses in the speech: the gaps of MIN_PAUSE or more between its regions (silero's), with their times
    and lengths ('There is one pause, from <|5.57|> to <|6.12|> seconds (0.55 s).')."""
    out = []
    for c in clips:
        r = c.rep
        where = _where(c, len(clips), p)
        if not r.has_speech:
            out.append(_sentence(where + p("no_speech_pauses", what_phrase(r, p))) + p.stop)
            continue
        rs = r.hearing.regions
        gaps = [(a[1], b[0]) for a, b in zip(rs, rs[1:]) if b[0] - a[1] >= MIN_PAUSE]
        if not gaps:
            out.append(_sentence(where + p("no_pause", a=ts(rs[0][0]), b=ts(rs[-1][1]))) + p.stop)
            continue
        items = p.join([p("pause_item", a=ts(a), b=ts(b), s=f"{b - a:.2f}") for a, b in gaps[:5]])
        out.append(_sentence(where + p.pick("pauses", len(gaps) == 1, n=p.number(len(gaps)), items=items)) + p.stop)
    return p.sp.join(out)


def when(clips: Sequence[Heard], question: str, p: Phrases = EN) -> str:
    """Times of the sounds a question names ('The breaking glass starts at <|0.00|> seconds and ends at ...'),
    else of every named sound in the clips."""
    if re.search(I.PAUSES, question.lower()):
        return pauses(clips, p)
    counting = re.search(I.COUNTING, question.lower()) is not None
    asked = I.mentioned_sounds(question)
    if asked and any(not c.rep.tagged for c in clips):
        return p("no_tagger", TAGGER_PIP)
    out = []
    for c in clips:
        r = c.rep
        where = _where(c, len(clips), p)
        found = []
        for name in asked:
            s = r.find(name) or next((i for i in r.instruments if name in i.name), None)
            if s is not None:
                found.append(s)
        if asked and not found:
            names = p.join([p.name(n) for n in asked])
            out.append(where + p("not_hearing", names=names, it=p.pick("it", bool(where)), what=what_phrase(r, p)))
            continue
        span = None if asked else _asked_words(question, r.hearing.words)
        if span is not None:
            text, (a, b) = span
            out.append(where + p("words_span", phrase=text, a=ts(a), b=ts(b)))
            continue
        events = found or [*r.sounds, *r.vocal][:3]
        if not found and r.music_spans and (_MUSIC_WORDS.search(question) or not (events or r.has_speech)):
            text = _music_times(r.music_spans, p)  # "When does the music start?"
            out.append(where + (text[:1].lower() + text[1:] if where else text))
            continue
        if not events and r.has_speech:
            rs = r.hearing.regions
            out.append(where + p("speech_span", a=ts(rs[0][0]), b=ts(rs[-1][1])))
            continue
        if not events:
            out.append(where + p("no_event", what_phrase(r, p)))
            continue
        for s in events:
            text = _event_times(s, p)
            out.append(where + (text[:1].lower() + text[1:] if where else text))  # "In the first audio, the ..."
            where = ""
            if counting:  # "How many times does the glass break?": stretches, said to be stretches
                out.append(_sentence(p.pick("stretches", len(s.spans) == 1, name=p.name(s.name), n=p.number(len(s.spans)))))
    return _sentence(p.sp.join(out))


_STOP = set("""a an the and or of to in on at is are was were be been do does did done he she they it its his her
their this that these those what when where which who how time times word words phrase say says said saying
speak speaks spoken speaking start starts end ends find locate audio clip recording second seconds please tell
me you can could would i mentioned mention there""".split())


def _asked_words(question: str, words: Sequence[Word]) -> tuple[str, tuple[float, float]] | None:
    """The longest run of the question's content words that the speech contains, with its span. Runs of Chinese
    characters are tokens of their own ("他什么时候说gospel": 他什么时候说, gospel) and never join other words."""
    tokens = [t for t in re.findall(r"[\u3400-\u9fff]+|(?:[^\W\u3400-\u9fff]|')+", question.lower()) if t not in _STOP]
    best = None
    for n in range(min(4, len(tokens)), 0, -1):
        for i in range(len(tokens) - n + 1):
            phrase = " ".join(tokens[i:i + n])
            if len(phrase) < 3 or len({"\u3400" <= t[0] <= "\u9fff" for t in tokens[i:i + n]}) > 1:
                continue
            span = find_phrase(words, phrase, cutoff=0.85)
            if span:
                return phrase, span
    return best


def _music_times(spans, p: Phrases = EN) -> str:
    if len(spans) == 1:
        return p("music_span", a=ts(spans[0][0]), b=ts(spans[0][1]))
    return p("music_spans", spans=_span_text(spans, 4, p))


def _event_times(s: Sound, p: Phrases = EN) -> str:
    if len(s.spans) == 1:
        a, b = s.spans[0]
        return p("event_span", name=p.name(s.name), a=ts(a), b=ts(b))
    return p("event_spans", name=p.name(s.name), spans=_span_text(s.spans, 4, p))


_TITLES = {"mr", "mrs", "ms", "miss", "dr", "sir", "mister", "madam", "lady", "lord", "professor"}
# Capitalised words that are rarely names, so "I" or a weekday is not offered as a person.
_NOT_NAMES = {"i", "i'm", "i've", "i'll", "i'd", "god", "monday", "tuesday", "wednesday", "thursday", "friday",
              "saturday", "sunday", "january", "february", "march", "april", "may", "june", "july", "august",
              "september", "october", "november", "december", "english", "ok", "okay"}


def person_names(words: Sequence[Word]) -> list[tuple[str, float, float]]:
    """Name-like runs (capitalised words not opening a sentence, or after a title): (text, start, end)."""
    out = []
    i = 0
    while i < len(words):
        w = words[i]
        text = w.text.strip("\"“”,.;:!?()")
        sentence_start = i == 0 or words[i - 1].text.rstrip("\"”)").endswith((".", "?", "!"))
        key = re.sub(r"[^\w']+", "", text.lower()).rstrip(".")
        if key in _TITLES and i + 1 < len(words) and words[i + 1].text[:1].isupper():
            nxt = words[i + 1]
            out.append((f"{w.text.strip(',;:!?')} {nxt.text.strip(',.;:!?')}".lower(), w.start, nxt.end))
            i += 2
            continue
        if text[:1].isupper() and not sentence_start and key not in _NOT_NAMES and key not in _TITLES:
            out.append((text.lower(), w.start, w.end))
        i += 1
    return out


def person(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """'The person name "shelley's" is mentioned. "shelley's" starts at <|3.79|> ... seconds.'"""
    out = []
    for c in clips:
        for name, a, b in person_names(c.hear("transcribe").words)[:1]:
            out.append(_sentence(_where(c, len(clips), p) + p("person", name=name, a=ts(a), b=ts(b))))
    if out:
        return p.sp.join(out)
    return p("no_person", _says(clips, p))


# ---- the voice ----------------------------------------------------------------------------------------

EMOTION_NOTE = EN("emotion_note")


# Plain words for measured ranges (interquartile pitch spread in semitones; speaking rate), so an answer
# reads "the intonation is very varied" rather than only numbers. Descriptions of the voice, not of a mood.
def _intonation(st: float, p: Phrases = EN) -> str:
    return p.pick("flat", st < 2.0) if st < 4.0 else p("varied")


def _pace(rate: float, unit: str, p: Phrases = EN) -> str:
    slow, fast = (3.0, 5.5) if unit.startswith("characters") else (2.0, 3.5)
    return p("brisk") if rate > fast else p.pick("slow", rate < slow)


def _voice_sentence(r: Report, p: Phrases = EN) -> str:
    """'the intonation is very varied (pitch about 159 Hz, varying by 5.5 semitones), the pace is slow (1.7 words
    per second), at a level of -21 dBFS'."""
    v = r.voice
    parts = []
    if v.pitch_hz:
        parts.append(p("intonation", _intonation(v.pitch_iqr_st, p), v.pitch_hz, v.pitch_iqr_st))
    if v.rate:
        parts.append(p("pace", _pace(v.rate, v.rate_unit, p), v.rate, p(v.rate_unit)))
    parts.append(p("level", v.loudness_dbfs))
    return p.clauses(parts)


def _vocal_sounds(r: Report) -> list[Sound]:
    return [s for s in r.vocal if s.score >= 0.6 and s.name != "singing"][:2]


def emotion(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """What the voice cues show (pitch, its variation, loudness, rate, laughter/crying/sighs), compared across
    clips; never an emotion label."""
    reps = [(c, c.rep) for c in clips]
    voiced = [(c, r) for c, r in reps if r.voice is not None]
    if not voiced:
        return p("no_voice", p.join([what_phrase(r, p) for _, r in reps]))
    if len(voiced) == 1:
        c, r = voiced[0]
        text = p("based", where=_where(c, len(clips), p, "of_label"), cues=_voice_sentence(r, p))
        sounds = _vocal_sounds(r)
        if sounds:
            text += p.sp + p("also_hear", _timed(sounds, p))
        return text + p.sp + _sentence(_says([c], p)) + p.stop + p.sp + p("emotion_note")
    return _compare_voices(voiced, p) + p.sp + p("emotion_note")


def _compare_voices(voiced, p: Phrases = EN) -> str:
    """Pairwise cue differences between the first two voiced clips, in words and numbers."""
    (c1, r1), (c2, r2) = voiced[:2]
    v1, v2 = r1.voice, r2.voice
    diffs = []
    if v1.pitch_hz and v2.pitch_hz:
        st = 12 * __import__("math").log2(v1.pitch_hz / v2.pitch_hz)
        if abs(st) >= 1.0:
            diffs.append(p.pick("pitch_diff", st > 0, v1.pitch_hz, v2.pitch_hz))
        if abs(v1.pitch_iqr_st - v2.pitch_iqr_st) >= 1.0:
            diffs.append(p.pick("spread_diff", v1.pitch_iqr_st > v2.pitch_iqr_st, v1.pitch_iqr_st, v2.pitch_iqr_st))
    if abs(v1.loudness_dbfs - v2.loudness_dbfs) >= 2.0:
        diffs.append(p.pick("level_diff", v1.loudness_dbfs > v2.loudness_dbfs, v1.loudness_dbfs, v2.loudness_dbfs))
    if v1.rate and v2.rate and v1.rate_unit == v2.rate_unit and abs(v1.rate - v2.rate) / max(v1.rate, v2.rate) >= 0.15:
        diffs.append(p.pick("rate_diff", v1.rate > v2.rate, v1.rate, v2.rate, p("rate:" + v1.rate_unit)))
    l1, l2 = _label(c1, p), _label(c2, p)
    text = p("differences", l1, l2, p.clauses(diffs)) if diffs else p("alike", l1, l2)
    for c, r in ((c1, r1), (c2, r2)):
        sounds = _vocal_sounds(r)
        if sounds:
            text += p.sp + p("label_also_hear", _label(c, p), _timed(sounds, p))
    return text + p.sp + _sentence(_says([c1, c2], p)) + p.stop


def speaker(clips: Sequence[Heard], p: Phrases = EN, count: bool = False, age: bool = False, same: bool = False) -> str:
    """The measured pitch and the range it is typical of; the lite model does not identify speakers, nor (asked how
    many people speak: `count`) tell voices apart, nor (asked how old: `age`) estimate ages."""
    if count and not any(c.rep.has_speech for c in clips):
        return p("nobody_speaks", p.join([what_phrase(c.rep, p) for c in clips]))
    out, guessed = [p("same_speaker" if same else "speaker_count")] if count else [], False
    for c in clips:
        r = c.rep
        where = _where(c, len(clips), p)
        if r.voice is None or not r.voice.pitch_hz:
            out.append(_sentence(where + p("no_voice_measured", what_phrase(r, p))))
            continue
        f0 = r.voice.pitch_hz
        typical = p("pitch_man" if f0 < 160 else "pitch_woman" if f0 > 180 else "pitch_between")
        out.append(_sentence(where + p("median_pitch", f0, typical)))
        guessed = True
    return p.sp.join(out + ([p("pitch_guess")] if guessed else []) + ([p("no_age")] if age else []))


# ---- the LLM's context --------------------------------------------------------------------------------


def report_lines(c: Heard, name: str | None = None) -> str:
    """What the LLM is told about one clip: its report as one plain sentence, without times, durations or
    scores (the small models copied them into stories). What is not heard is said as "only this is heard"
    where it can be: told "nobody speaks; there is no music", the 1.5B wrote "If there's no music, it could
    be ..." and called a piano piece silent (benchmarks/lite_open.py: 25/32 passed with "only", 24/32 with the
    negatives, 21/32 with "nobody speaks" alone)."""
    r = c.rep
    if name is None:
        name = f"In the {ORDINALS[c.index]} clip" if c.count > 1 and c.index < len(ORDINALS) else "In the clip"
    facts = []
    for s in (*r.sounds[:3], *[v for v in r.vocal[:2] if not (v.name == "singing" and r.has_music)]):
        facts.append(f"the sound of {s.name}")
    if r.has_speech:
        who = "sings" if r.singing else "says"
        facts.append(f"a person {who} in {language_name(r.hearing.language)}: {quote(r.hearing)}")
    if r.has_music:
        facts.append(music_phrase(r) + (" (genre tags: " + ", ".join(g.lower() for g, _ in r.genres[:3]) + ")"
                                        if r.genres else "") + " plays")
    if facts and r.tagged and not r.silent and not (r.has_speech and r.has_music):
        return f"{name}, only this is heard: " + "; ".join(facts) + "."
    if not r.has_speech:
        facts.append("nobody speaks")
    if not r.has_music and r.tagged:
        facts.append("there is no music")
    if r.silent:
        facts.append("it is silent")
    return f"{name}: " + "; ".join(facts) + "."


def as_told(said: str) -> str:
    """An earlier answer of lite's as the LLM is shown it: timestamps as plain seconds, and "the sound of" for the
    tutorial's "a sound effect of" (shown "This is a sound effect of breaking glass." before "What should I do?",
    the 1.5B took the glass for a film's effect and advised audio software)."""
    return render_seconds(said).replace("a sound effect of ", "the sound of ").replace("的音效，", "的声音，")


def llm_context(clips: Sequence[Heard], story: bool = False) -> str:
    """What the LLM is told about the clips: each one's report, or for a story from several clips what is
    heard, numbered in order (told the reports, the 0.5B swapped the clips in its stories; told the order,
    it kept it, both ways round)."""
    if not clips:
        return ""
    if story and len(clips) > 1:
        events = "\n".join(f"{i + 1}. {what_phrase(c.rep)}" for i, c in enumerate(clips))
        return "These are heard, in this order (from an audio analyser):\n" + events
    return "The audio clips contain the following (from an audio analyser):\n" + "\n".join(report_lines(c) for c in clips)


# Questions for what no analyser can know unless it is said: who plays or speaks, where or when it was recorded,
# contact details. The 1.5B answered "What is the name of the pianist, and in which city was this recorded?" with
# "John Doe ... New York City", and still did when the prompt said such things cannot be told: lite answers these
# itself (`phrases` "unknowable").
_UNKNOWABLE = re.compile(
    r"\b(?:(?:what is )?the name of the (?!person|people)|who (?:is|was) (?:the )?(?:playing|singing|pianist|player|singer|"
    r"performer|composer|band)|which (?:city|country|place|studio|year|venue)|where (?:was|is) (?:this|it) recorded|"
    r"when was (?:this|it) recorded|phone number|e-?mail address|home address|(?:the )?speaker'?s name|name of the speaker"
    r"|who (?:composed|wrote|sang|sings|plays|played|performs|performed) (?:this|it|the)|what(?:'s| is) (?:this|the) "
    r"(?:song|piece|track) called|(?:the )?name of (?:this|the) (?:song|piece|track)|which (?:song|piece) is (?:this|it)"
    r"|where (?:is|are|was|were) (?:he|she|they|the speaker|the person) from)\b"
    r"|是谁(?:弹|唱|演奏)|谁(?:写|唱|弹|作曲|演奏)的|作曲家是谁|在哪里录|哪一年录|电话号码|地址"
    r"|哪首歌|什么歌|歌名|曲名|哪里人"
    # When a piece or clip was made, what it is from, a speaker's job: the LLM said "the 19th century", "not from a movie".
    r"|\b(?:what|which) (?:year|decade|century|era)\b|\bhow old is (?:this|the) (?:recording|piece|song)\b"
    r"|\bfrom (?:a|which|what) (?:movie|film|show|tv show|series|game|album)\b"
    r"|\b(?:speaker's|his|her|their) (?:profession|job|occupation)\b"
    r"|\b(?:is|are) (?:he|she|they|the speaker|the person) (?:british|english|american|australian|canadian|irish|scottish"
    r"|indian|chinese|japanese|korean|french|german|spanish|mexican|italian|russian|a foreigner|foreign)\b"
    r"|国籍|哪国人|外国人|(?:他|她|他们|说话的人|说话人)在哪(?:里|儿)[？?]?$"
    r"|\bwhere (?:is|are) (?:he|she|they|the speaker|the person)\s*[?.!]*$"
    r"|哪一年|什么年代|哪个年代|哪部电影|哪个电影|电影里的|什么职业|做什么工作", re.I)


# Where and how a clip was made: the LLM said "most likely outdoors" of the glass, "室内", "a real recording".
# Asked of the clip only: "write a story set outdoors" is a story.
_SETTING = re.compile(
    r"\b(?:indoors?|inside) or (?:outdoors?|outside)\b|\b(?:outdoors?|outside) or (?:indoors?|inside)\b"
    r"|\b(?:is|was) (?:it|this|that)(?: recorded)? (?:indoors?|outdoors?|inside|outside|live|in a studio)\b"
    r"|\brecorded (?:indoors?|outdoors?|inside|outside|live|in a studio)\b|\b(?:is|was) (?:it|this|that) a (?:live|studio) "
    r"(?:recording|performance)\b|\b(?:is|was) (?:it|this|that|the voice|the speaker|he|she) (?:a )?(?:real|synthetic|"
    r"synthesi[sz]ed|ai[- ]generated|computer[- ]generated|human|robot)\b|\b(?:real|human) or (?:a )?(?:synthetic|fake|ai|"
    r"tts|robot|computer|generated)\b"
    r"|\bwhere (?:is|was|does|did) (?:the|this|that|it) (?:sound|noise)? ?(?:coming|come) from\b|\bwhich direction\b"
    r"|(?:声音|它)(?:是)?从哪(?:里|儿)?(?:来|传来)|哪个方向|室内还是室外|室外还是室内|在(?:室内|室外|户外)(?:录|吗)|现场录|录音棚|(?:是不是|是)真人|合成的吗|是不是合成"
    r"|ai生成的吗|机器合成", re.I)
_AGE = re.compile(r"\bhow old\b|\bage\b|年龄|几岁|多大", re.I)


def unknowable(question: str) -> str:
    """The phrase key that answers a question no sound can: who plays or speaks, where or when a clip was recorded,
    contact details ("unknowable"); indoors or out, live or studio, a real or synthetic voice ("unknowable_setting");
    '' for any other question."""
    if _UNKNOWABLE.search(question):
        return "unknowable"
    return "unknowable_setting" if _SETTING.search(question) else ""


def answer_opening(question: str, clips: Sequence[Heard]) -> str:
    """Words the open answer starts with, in the tutorial's style, for a story request ('Based on these two
    audio, a story could be written as follows:'); the LLM continues from them. Empty otherwise."""
    if not clips or not re.search(r"\bstor(?:y|ies)\b|故事", question, re.I):
        return ""
    p = for_question(question)
    which = p("this_audio") if len(clips) == 1 else p("these_audio", p.number(len(clips)))
    return p("story", which)


NO_AUDIO = EN("no_audio")


def lead(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """The first sentence of an open answer: what the clips are (the tutorial's 'The first audio is of ...')."""
    return _clauses([p("is_of", _label(c, p), what_phrase(c.rep, p)) for c in clips], p)


LOUD_DBFS, QUIET_DBFS = -20.0, -35.0  # mean levels: the tutorial's glass and piano -18, its speech -22 to -32


def loudness(clips: Sequence[Heard], p: Phrases = EN, question: str = "") -> str:
    """How loud each clip is as recorded (mean and peak level in dBFS, and a word for it), where it is loudest when the
    question asks when or where ("When is it loudest?" had been the levels only), and that the loudness where it was
    recorded cannot be told from a recording."""
    at = re.search(r"\bwhen\b|\bwhere\b|\bwhich (?:part|moment|second)|\bat what (?:point|time)|什么时候|哪里|哪个(?:部分|时候)"
                   r"|哪一?(?:部分|秒)|几秒", question, re.I) is not None
    out = []
    for c in clips:
        r = c.rep
        kind = ("silent" if r.silent else "loud" if r.loudness_dbfs >= LOUD_DBFS
                else "quiet" if r.loudness_dbfs < QUIET_DBFS else "moderate")
        # Whole decibels as ints: a float peak of -0.0 would read "-0 dBFS".
        out.append(p("loudness", who=_subject(c, p), kind=p(f"loud_{kind}"), mean=round(r.loudness_dbfs),
                     peak=round(r.peak_dbfs)))
        a, b, level = r.loudest_second
        if at and not r.silent:
            out.append(p("loudest_second", a=ts(a), b=ts(b), level=round(level)))
    if len(clips) > 1:  # "Which one is louder?": say which, by the average level
        quiet = re.search(r"\bquiet|\bsoft|轻|安静|小声", question, re.I) is not None
        pick = (min if quiet else max)(clips, key=lambda c: c.rep.loudness_dbfs)
        out.append(p("quietest" if quiet else "loudest", who=_subject(pick, p)))
    return p.sp.join([*out, p("loudness_note")])


def file_format(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """What each clip was decoded from, as its container states it: codec, sample rate, channels, bit rate and
    length ('The audio is MP3 (MPEG audio layer 3), 48 kHz, mono, 65 kbit/s, 8.3 s long.'); lite hears all at 16 kHz
    mono. (The LLM had answered "Mono" and "an audio clip".)"""
    out = []
    for c in clips:
        f, seconds = c.source_format, c.seconds if c.seconds is not None else c.rep.duration
        if f is None:
            out.append(p("duration", who=_subject(c, p), seconds=f"{seconds:.1f}"))
            continue
        parts = [p("in_memory") if f.codec is None else f.codec]
        if f.sample_rate:
            parts.append(f"{f.sample_rate / 1000:g} kHz")
        if f.channels:
            parts.append(p(f"channels_{f.channels}") if f.channels <= 2 else p("channels_n", f.channels))
        if f.bit_rate:
            parts.append(f"{f.bit_rate / 1000:.0f} kbit/s")
        out.append(p("file_format", who=_subject(c, p), what=p.comma.join(parts), seconds=f"{seconds:.1f}"))
    return p.sp.join([*out, p("file_format_note")])


def duration(clips: Sequence[Heard], p: Phrases = EN) -> str:
    """How long each clip is (and, past 30 s, that questions about it hear its first 30 s)."""
    out = []
    for c in clips:
        seconds = c.seconds if c.seconds is not None else c.rep.duration
        text = p("duration", who=_subject(c, p), seconds=f"{seconds:.1f}")
        out.append(text + (p("duration_heard", f"{c.rep.duration:.0f}") if seconds > c.rep.duration + 0.05 else ""))
    return p.sp.join(out)


def compose(intent: I.Intent, question: str, clips: Sequence[Heard]) -> str:
    """The answer to every intent but OPEN (which the LLM writes), in the question's language."""
    p = for_question(question)
    if not clips:
        return p("no_audio")
    k = intent.kind
    if k == I.GROUND:
        return ground(clips, intent.phrase or "", p)
    if k == I.WHEN:
        return when(clips, question, p)
    if k == I.PERSON:
        return person(clips, p)
    if k == I.TRANSLATE:
        return translate(clips, question, p)
    if k == I.LANGUAGE:
        return language(clips, p, I.asks_accent(question))
    if k == I.LOUDNESS:
        return loudness(clips, p, question)
    if k == I.DURATION:
        return duration(clips, p)
    if k == I.FORMAT:
        return file_format(clips, p)
    if k == I.EMOTION:
        if not any(c.rep.has_speech for c in clips) and any(c.rep.has_music for c in clips):
            return music(clips, p, question)  # "Is it sad?" of a piece: its mood tags, not a voice's cues
        return emotion(clips, p)
    if k == I.SPEAKER:
        return speaker(clips, p, I.asks_speaker_count(question), bool(_AGE.search(question)),
                       bool(re.search(I.SAME_SPEAKER, question.lower())))
    if k == I.QUALITY:
        return quality(clips, p, question)
    if k == I.INSTRUMENT:
        asked = I.mentioned_sounds(question)
        return presence(clips, asked, p) if asked and I.yes_no(question) else instruments(clips, p)
    if k == I.MUSIC:
        return music(clips, p, question)
    if k == I.SOUND:
        return what_is(clips, question, p)
    if re.search(I.WORD_FACTS, question.lower()):
        return word_facts(clips, question, p)
    if re.search(I.CONFIDENCE, question.lower()):
        return transcript_confidence(clips, p)
    subject = "sound" if re.search(r"\bsound\b|声音", question, re.I) else "speech"
    return describe(clips, subject, p)
