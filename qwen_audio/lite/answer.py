"""Responses in the tutorial's style, composed from each clip's `Report`; no model runs here.

Every function takes `Heard` clips (a label, the clip's report, and a way to get a translation)
and returns text; `compose` picks the one an intent asks for. Sounds are named from the AudioSet
tagger's groups ("This is a sound effect of breaking glass."), instruments and music from its
music classes, emotions never: the voice cues that were measured are stated instead.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from . import intent as I
from .asr import Hearing, Word, language_name
from .events import TAGGER_PIP
from .report import Report, Sound

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


@dataclass
class Heard:
    """One clip in play: its report, and `hear(task)` for Whisper's "transcribe" or "translate"."""

    index: int  # 0-based position among the clips in play
    count: int  # how many clips are in play
    hear: Callable[[str], Hearing]
    report: Callable[[], Report] | None = None

    @property
    def label(self) -> str:
        """'the audio' for a single clip, else 'the first audio', 'the second audio', ..."""
        if self.count == 1:
            return "the audio"
        return f"the {ORDINALS[self.index]} audio" if self.index < len(ORDINALS) else f"audio {self.index + 1}"

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


def _and(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _span_text(spans: Sequence[tuple[float, float]], limit: int = 3) -> str:
    """'from <|0.00|> to <|1.80|> seconds' (several spans joined; at most `limit`)."""
    parts = [f"from {ts(a)} to {ts(b)} seconds" for a, b in spans[:limit]]
    more = f" and {len(spans) - limit} more times" if len(spans) > limit else ""
    return _and(parts) + more


# ---- what a clip is -----------------------------------------------------------------------------------


def speaking_phrase(r: Report) -> str:
    """'a person speaking, in a English, saying, "..."' (the tutorial's wording)."""
    tr = r.hearing
    verb = "singing" if r.singing else "speaking"
    return f"a person {verb}, in a {language_name(tr.language)}, saying, {quote(tr)}"


def music_phrase(r: Report) -> str:
    """'a piano piece' / 'music with drums and guitar' / 'music'."""
    inst = [s.name for s in r.instruments[:3]]
    sung = any(v.name == "singing" for v in r.vocal)
    if len(inst) == 1 and not sung:
        return f"a solo {inst[0]} piece" if inst[0] in ("piano", "guitar", "violin", "cello", "flute", "harp",
                                                           "organ", "harpsichord", "acoustic guitar") else f"{inst[0]} music"
    body = f"music with {_and(inst)}" if inst else "music"
    return ("a song: " + body + " and singing") if sung else body


def what_phrase(r: Report) -> str:
    """A noun phrase for the whole clip (used in multi-clip answers and the LLM's lead)."""
    if r.has_speech:
        out = speaking_phrase(r)
        if r.has_music and not r.singing:
            out += f", over {music_phrase(r)}"
        return out
    if r.has_music:
        return music_phrase(r)
    if r.sounds:
        return f"a sound of {_and([s.name for s in r.sounds[:2]])}"
    if r.silent:
        return "silence"
    return "sound that I can't name"


def sound_answer(r: Report, subject: str = "sound") -> str:
    """'This is a sound effect of breaking glass. It is heard from <|0.00|> to <|1.80|> seconds.' and the like."""
    if r.has_speech:
        text = f"The {subject} is of {speaking_phrase(r)}."
        extra = [s for s in r.sounds if s.score >= 0.6][:2]
        if r.has_music and not r.singing:
            text += f" There is also {music_phrase(r)} in the background."
        if extra:
            text += " I also hear " + _and([f"{s.name} ({_span_text(s.spans, 2)})" for s in extra]) + "."
        return text
    if not r.tagged:
        return "I hear no speech in this audio. " + NO_TAGGER
    if r.has_music:
        text = f"This is {music_phrase(r)}."
        if r.instruments:
            text += f" {instrument_sentence(r)}"
        return text
    if r.sounds:
        main = r.sounds[0]
        text = f"This is a sound effect of {main.name}. It is heard {_span_text(main.spans)}."
        others = [s for s in r.sounds[1:] if s.score >= 0.6][:2]
        if others:
            text += " I also hear " + _and([f"{s.name} ({_span_text(s.spans, 2)})" for s in others]) + "."
        vocal = [v for v in r.vocal if v.score >= 0.6][:2]
        if vocal:
            text += " There is " + _and([f"{v.name} ({_span_text(v.spans, 2)})" for v in vocal]) + "."
        return text
    if r.vocal:
        v = r.vocal[0]
        return f"This is {v.name}, with no words I can recognise. It is heard {_span_text(v.spans)}."
    if r.silent:
        return f"The audio is silent: I hear no speech, music or other sound (its level is {r.loudness_dbfs:.0f} dBFS)."
    tags = ", ".join(f"{lbl.lower()} ({s:.2f})" for lbl, s in r.top[:3])
    return f"I hear no speech or music, and no sound event I can name with confidence; the closest tags are {tags}."


def what_is(clips: Sequence[Heard], question: str = "") -> str:
    """The answer to 'what is it' / 'what is that sound?' for one or several clips."""
    subject = "sound" if re.search(r"\bsound\b|声音", question, re.I) else "speech"
    asked = I.mentioned_sounds(question)
    if asked and re.search(r"\bis there\b|\bare there\b|\bdo you hear\b|\bcan you hear\b|有没有|是否|有.*吗", question, re.I):
        return presence(clips, asked)
    if len(clips) == 1:
        return sound_answer(clips[0].rep, subject)
    return _sentence(", and ".join(f"{c.label} is of {what_phrase(c.rep)}" for c in clips)) + "."


def presence(clips: Sequence[Heard], names: Sequence[str]) -> str:
    """'Yes: breaking glass is heard from ... .' / 'No, I don't hear a dog barking ...' for asked-about sounds."""
    if any(not c.rep.tagged for c in clips):
        return NO_TAGGER
    out = []
    for c in clips:
        r = c.rep
        where = f" in {c.label}" if len(clips) > 1 else ""
        for name in names:
            s = r.find(name)
            if s is None and name in ("piano", "guitar", "violin", "drums"):
                s = next((i for i in r.instruments if name in i.name), None)
            if s is not None:
                out.append(f"Yes: {s.name} is heard{where} {_span_text(s.spans)} (score {s.score:.2f}).")
            else:
                out.append(f"No, I don't hear {name}{where}; it is {what_phrase(r)}.")
    return " ".join(out)


def instrument_sentence(r: Report) -> str:
    names = [s.name for s in r.instruments[:3]]
    if len(names) == 1:
        return f"The instrument is the {names[0]}."
    return f"The instruments are {_and(['the ' + n for n in names])}."


NO_TAGGER = f"Naming sounds, instruments and music needs the lite model's sound tagger, which is not installed ({TAGGER_PIP})."


def instruments(clips: Sequence[Heard]) -> str:
    if any(not c.rep.tagged for c in clips):
        return NO_TAGGER
    out = []
    for c in clips:
        r = c.rep
        lead = f"In {c.label}, t" if len(clips) > 1 else "T"
        if r.instruments:
            out.append(lead + instrument_sentence(r)[1:])
        elif r.has_music:
            out.append(f"{lead}here is music, but no instrument scores high enough for me to name it.")
        else:
            out.append(f"{lead}here is no music or musical instrument; it is {what_phrase(r)}.")
    return " ".join(out)


def music(clips: Sequence[Heard]) -> str:
    """Is there music, what kind (the tagger's instrument, genre and mood tags, with scores)."""
    if any(not c.rep.tagged for c in clips):
        return NO_TAGGER
    out = []
    for c in clips:
        r = c.rep
        where = f"In {c.label}, " if len(clips) > 1 else ""
        if not r.has_music:
            out.append(f"{where}there is no music; it is {what_phrase(r)}." if where else
                       f"There is no music in this audio; it is {what_phrase(r)}.")
            continue
        text = f"{where}this is {music_phrase(r)}."
        if r.instruments:
            text += " " + instrument_sentence(r)
        if r.genres:
            text += " Its genre tags are " + _and([f"{g.lower()} ({s:.2f})" for g, s in r.genres[:3]]) + "."
        if r.moods:
            text += " The tagger's mood tags: " + _and([f"{m.lower()} ({s:.2f})" for m, s in r.moods]) + "."
        out.append(_sentence(text))
    return " ".join(out)


# ---- speech -------------------------------------------------------------------------------------------


def describe(clips: Sequence[Heard], subject: str = "speech") -> str:
    """Transcription answer: 'The speech is of a person speaking, in a English, saying, "...".'"""
    if len(clips) == 1:
        r = clips[0].rep
        if r.has_speech:
            return f"The {subject} is of {speaking_phrase(r)}."
        return "I hear no speech in this audio. " + sound_answer(r)
    parts = []
    for c in clips:
        r = c.rep
        parts.append(f"{c.label} is of {speaking_phrase(r)}" if r.has_speech
                     else f"{c.label} is of no speech ({what_phrase(r)})")
    return _sentence(", and ".join(parts)) + "."


def _says(clips: Sequence[Heard]) -> str:
    """'the speech says: "..."' for one clip; per-clip quotes for several."""
    if len(clips) == 1:
        tr = clips[0].hear("transcribe")
        return f"the speech says: {quote(tr)}" if tr.has_speech else "and I hear no speech in it"
    parts = []
    for c in clips:
        tr = c.hear("transcribe")
        parts.append(f"{c.label} says {quote(tr)}" if tr.has_speech else f"{c.label} has no speech")
    return ", and ".join(parts)


def language(clips: Sequence[Heard]) -> str:
    if len(clips) == 1:
        tr = clips[0].hear("transcribe")
        if not tr.has_speech:
            return "There is no speech in this audio, so there is no language to identify."
        return f"The speech is in {language_name(tr.language)}."
    parts = []
    for c in clips:
        tr = c.hear("transcribe")
        parts.append(f"{c.label} is in {language_name(tr.language)}" if tr.has_speech else f"{c.label} is without speech")
    return _sentence(", and ".join(parts)) + "."


_TARGET = re.compile(r"\b(?:into|to)\s+(chinese|mandarin|spanish|french|german|japanese|korean|italian|russian"
                     r"|portuguese|arabic)\b|(?:译成|翻译成|译为)(中文|汉语|日语|法语|德语|西班牙语|韩语)", re.I)


def translate(clips: Sequence[Heard], question: str) -> str:
    """Whisper's translate task; it only goes into English, which is said when asked otherwise."""
    target = _TARGET.search(question)
    lead = ""
    if target:
        lead = f"The lite model can only translate into English, not {(target.group(1) or target.group(2)).capitalize()}. "
    parts = []
    for c in clips:
        src = c.hear("transcribe")
        if not src.has_speech:
            parts.append(f"{c.label} has no speech to translate")
        elif src.language == "en":
            parts.append(f"{c.label} is already in English: {quote(src)}")
        else:
            parts.append(f"{c.label}, in {language_name(src.language)}, says in English: {quote(c.hear('translate'))}")
    return lead + _sentence("; ".join(parts)) + "."


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
    """(start, end) seconds of the run of `words` that best spells `phrase`, or None.

    Both sides are compared in spoken form without spaces and punctuation, so "companion less"
    matches "companionless", "doctor" matches "Dr." and "nine" matches "9"; for text without
    spaces (Chinese), each word is matched by its characters. The best run of up to n+2 words wins
    if its similarity ratio reaches `cutoff`.
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
                best, best_score = (words[i].start, words[k].end), score
            if len(got) > 2 * len(target):
                break
    return best


def ground(clips: Sequence[Heard], phrase: str) -> str:
    """'The word "X" starts at <|a|> seconds and ends at <|b|> seconds.'"""
    found = []
    for c in clips:
        span = find_phrase(c.hear("transcribe").words, phrase)
        if span:
            found.append((c, span))
    if not found:
        names = I.mentioned_sounds(phrase)
        if names:  # "find "glass breaking"": a sound, not a word
            return when(clips, phrase)
        return f'I can\'t find the word "{phrase}" in the speech; {_says(clips)}.'
    out = []
    for c, (a, b) in found:
        where = f"In {c.label}, the" if len(clips) > 1 else "The"
        out.append(f'{where} word "{phrase}" starts at {ts(a)} seconds and ends at {ts(b)} seconds.')
    return " ".join(out)


def when(clips: Sequence[Heard], question: str) -> str:
    """Times of the sounds a question names ('The breaking glass starts at <|0.00|> seconds and ends at ...'),
    else of every named sound in the clips."""
    asked = I.mentioned_sounds(question)
    if asked and any(not c.rep.tagged for c in clips):
        return NO_TAGGER
    out = []
    for c in clips:
        r = c.rep
        where = f"In {c.label}, " if len(clips) > 1 else ""
        found = []
        for name in asked:
            s = r.find(name) or next((i for i in r.instruments if name in i.name), None)
            if s is not None:
                found.append(s)
        if asked and not found:
            out.append(f"{where}I don't hear {_and(asked)}; {'it' if where else 'the audio'} is {what_phrase(r)}.")
            continue
        span = None if asked else _asked_words(question, r.hearing.words)
        if span is not None:
            text, (a, b) = span
            out.append(f'{where}the words "{text}" start at {ts(a)} seconds and end at {ts(b)} seconds.')
            continue
        events = found or [*r.sounds, *r.vocal][:3]
        if not events and r.has_speech:
            rs = r.hearing.regions
            out.append(f"{where}the speech starts at {ts(rs[0][0])} seconds and ends at {ts(rs[-1][1])} seconds.")
            continue
        if not events:
            out.append(f"{where}I hear no sound event I can name and time; it is {what_phrase(r)}.")
            continue
        for s in events:
            out.append(f"{where}{_event_times(s)}")
            where = ""
    return _sentence(" ".join(out))


_STOP = set("""a an the and or of to in on at is are was were be been do does did done he she they it its his her
their this that these those what when where which who how time times word words phrase say says said saying
speak speaks spoken speaking start starts end ends find locate audio clip recording second seconds please tell
me you can could would i mentioned mention there""".split())


def _asked_words(question: str, words: Sequence[Word]) -> tuple[str, tuple[float, float]] | None:
    """The longest run of the question's content words that the speech contains, with its span."""
    tokens = [t for t in re.findall(r"[\w']+", question.lower()) if t not in _STOP]
    best = None
    for n in range(min(4, len(tokens)), 0, -1):
        for i in range(len(tokens) - n + 1):
            phrase = " ".join(tokens[i:i + n])
            if len(phrase) < 3:
                continue
            span = find_phrase(words, phrase, cutoff=0.85)
            if span:
                return phrase, span
    return best


def _event_times(s: Sound) -> str:
    if len(s.spans) == 1:
        a, b = s.spans[0]
        return f"The {s.name} sound starts at {ts(a)} seconds and ends at {ts(b)} seconds."
    return f"The {s.name} sound is heard {_span_text(s.spans, 4)}."


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


def person(clips: Sequence[Heard]) -> str:
    """'The person name "shelley's" is mentioned. "shelley's" starts at <|3.79|> ... seconds.'"""
    out = []
    for c in clips:
        for name, a, b in person_names(c.hear("transcribe").words)[:1]:
            where = f"In {c.label}, the" if len(clips) > 1 else "The"
            out.append(f'{where} person name "{name}" is mentioned. "{name}" starts at {ts(a)} seconds '
                       f"and ends at {ts(b)} seconds.")
    if out:
        return " ".join(out)
    return f"I can't find a person's name in the speech; {_says(clips)}."


# ---- the voice ----------------------------------------------------------------------------------------

EMOTION_NOTE = ("I don't recognise emotions themselves: these are measurements of the voice, which often "
                "go with how a person feels but do not prove it.")


# Plain words for measured ranges (interquartile pitch spread in semitones; speaking rate), so an answer
# reads "the intonation is very varied" rather than only numbers. Descriptions of the voice, not of a mood.
def _intonation(st: float) -> str:
    return "fairly flat" if st < 2.0 else "moderately varied" if st < 4.0 else "very varied"


def _pace(rate: float, unit: str) -> str:
    slow, fast = (3.0, 5.5) if unit.startswith("characters") else (2.0, 3.5)
    return "slow" if rate < slow else "brisk" if rate > fast else "moderate"


def _voice_sentence(r: Report) -> str:
    """'the intonation is very varied (pitch about 159 Hz, varying by 5.5 semitones), the pace is slow (1.7 words
    per second), at a level of -21 dBFS'."""
    v = r.voice
    parts = []
    if v.pitch_hz:
        parts.append(f"the intonation is {_intonation(v.pitch_iqr_st)} (pitch about {v.pitch_hz:.0f} Hz, varying by "
                     f"{v.pitch_iqr_st:.1f} semitones)")
    if v.rate:
        parts.append(f"the pace is {_pace(v.rate, v.rate_unit)} ({v.rate:.1f} {v.rate_unit.replace('/s', ' per second')})")
    parts.append(f"the level is {v.loudness_dbfs:.0f} dBFS")
    return _and(parts)


def _vocal_sounds(r: Report) -> list[str]:
    return [f"{s.name} ({_span_text(s.spans, 2)})" for s in r.vocal if s.score >= 0.6 and s.name != "singing"][:2]


def emotion(clips: Sequence[Heard]) -> str:
    """What the voice cues show (pitch, its variation, loudness, rate, laughter/crying/sighs), compared across
    clips; never an emotion label."""
    reps = [(c, c.rep) for c in clips]
    voiced = [(c, r) for c, r in reps if r.voice is not None]
    if not voiced:
        what = _and([what_phrase(r) for _, r in reps])
        return f"I hear no speaking voice to read cues from; it is {what}."
    if len(voiced) == 1:
        c, r = voiced[0]
        where = f" in {c.label}" if len(clips) > 1 else ""
        text = f"Based on the voice{where}, {_voice_sentence(r)}."
        sounds = _vocal_sounds(r)
        if sounds:
            text += " I also hear " + _and(sounds) + "."
        return f"{text} {_sentence(_says([c]))}. {EMOTION_NOTE}"
    return _compare_voices(voiced) + " " + EMOTION_NOTE


def _compare_voices(voiced) -> str:
    """Pairwise cue differences between the first two voiced clips, in words and numbers."""
    (c1, r1), (c2, r2) = voiced[:2]
    v1, v2 = r1.voice, r2.voice
    diffs = []
    if v1.pitch_hz and v2.pitch_hz:
        st = 12 * __import__("math").log2(v1.pitch_hz / v2.pitch_hz)
        if abs(st) >= 1.0:
            diffs.append(f"{'higher' if st > 0 else 'lower'} in pitch ({v1.pitch_hz:.0f} vs {v2.pitch_hz:.0f} Hz)")
        if abs(v1.pitch_iqr_st - v2.pitch_iqr_st) >= 1.0:
            more = v1.pitch_iqr_st > v2.pitch_iqr_st
            diffs.append(f"{'more' if more else 'less'} varied in pitch "
                         f"({v1.pitch_iqr_st:.1f} vs {v2.pitch_iqr_st:.1f} semitones)")
    if abs(v1.loudness_dbfs - v2.loudness_dbfs) >= 2.0:
        diffs.append(f"{'louder' if v1.loudness_dbfs > v2.loudness_dbfs else 'quieter'} "
                     f"({v1.loudness_dbfs:.0f} vs {v2.loudness_dbfs:.0f} dBFS)")
    if v1.rate and v2.rate and v1.rate_unit == v2.rate_unit and abs(v1.rate - v2.rate) / max(v1.rate, v2.rate) >= 0.15:
        diffs.append(f"{'faster' if v1.rate > v2.rate else 'slower'} ({v1.rate:.1f} vs {v2.rate:.1f} {v1.rate_unit})")
    if diffs:
        text = f"Based on the voice, there are differences: {c1.label} is {_and(diffs)} than {c2.label}."
    else:
        text = (f"Based on the voice, {c1.label} and {c2.label} sound alike: pitch, its variation, loudness and "
                "speaking rate differ little.")
    for c, r in ((c1, r1), (c2, r2)):
        sounds = _vocal_sounds(r)
        if sounds:
            text += f" In {c.label} I also hear {_and(sounds)}."
    text += " " + _sentence(_says([c1, c2])) + "."
    return text


def speaker(clips: Sequence[Heard]) -> str:
    """The measured pitch and the range it is typical of; the lite model does not identify speakers."""
    out = []
    for c in clips:
        r = c.rep
        where = f"In {c.label}, the" if len(clips) > 1 else "The"
        if r.voice is None or not r.voice.pitch_hz:
            out.append(f"{where} audio has no voice I can measure; it is {what_phrase(r)}.")
            continue
        f0 = r.voice.pitch_hz
        if f0 < 160:
            typical = "typical of an adult man's voice (about 85-155 Hz)"
        elif f0 > 180:
            typical = "typical of a woman's or a child's voice (about 165-255 Hz for women)"
        else:
            typical = "between the ranges typical of men's and women's voices"
        out.append(f"{where} voice's median pitch is {f0:.0f} Hz, {typical}.")
    return " ".join(out) + " This is a guess from pitch alone; the lite model does not recognise speakers."


# ---- the LLM's context --------------------------------------------------------------------------------


def report_lines(c: Heard, name: str | None = None) -> str:
    """What the LLM is told about one clip: its report as one plain sentence, without times, durations or
    scores (the small models copied them into stories)."""
    r = c.rep
    name = name or (f"In the {ORDINALS[c.index]} clip" if c.count > 1 and c.index < len(ORDINALS) else "In the clip")
    facts = []
    for s in (*r.sounds[:3], *[v for v in r.vocal[:2] if not (v.name == "singing" and r.has_music)]):
        facts.append(f"the sound of {s.name}")
    if r.has_speech:
        who = "sings" if r.singing else "says"
        facts.append(f"a person {who} in {language_name(r.hearing.language)}: {quote(r.hearing)}")
    else:
        facts.append("nobody speaks")
    if r.has_music:
        facts.append(music_phrase(r) + (" (genre tags: " + ", ".join(g.lower() for g, _ in r.genres[:3]) + ")"
                                        if r.genres else "") + " plays")
    elif r.tagged:
        facts.append("there is no music")
    if r.silent:
        facts.append("it is silent")
    return f"{name}: " + "; ".join(facts) + "."


def llm_context(clips: Sequence[Heard]) -> str:
    if not clips:
        return ""
    return "The audio clips contain the following (from an audio analyser):\n" + "\n".join(report_lines(c) for c in clips)


def answer_opening(question: str, clips: Sequence[Heard]) -> str:
    """Words the open answer starts with, in the tutorial's style, for a story request ('Based on these two
    audio, a story could be written as follows:'); the LLM continues from them. Empty otherwise."""
    if not clips or not re.search(r"\bstor(?:y|ies)\b|故事", question, re.I):
        return ""
    which = "this audio" if len(clips) == 1 else f"these {_NUMBERS.get(len(clips), str(len(clips)))} audio"
    return f"Based on {which}, a story could be written as follows:\n"


_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}


NO_AUDIO = ("There is no audio in this conversation yet. Add a clip with "
            "tokenizer.from_list_format([{'audio': path}, {'text': question}]).")


def lead(clips: Sequence[Heard]) -> str:
    """The first sentence of an open answer: what the clips are (the tutorial's 'The first audio is of ...')."""
    if len(clips) == 1:
        return _sentence(f"{clips[0].label} is of {what_phrase(clips[0].rep)}.")
    return _sentence(", and ".join(f"{c.label} is of {what_phrase(c.rep)}" for c in clips)) + "."


def compose(intent: I.Intent, question: str, clips: Sequence[Heard]) -> str:
    """The answer to every intent but OPEN (which the LLM writes)."""
    if not clips:
        return NO_AUDIO
    k = intent.kind
    if k == I.GROUND:
        return ground(clips, intent.phrase or "")
    if k == I.WHEN:
        return when(clips, question)
    if k == I.PERSON:
        return person(clips)
    if k == I.TRANSLATE:
        return translate(clips, question)
    if k == I.LANGUAGE:
        return language(clips)
    if k == I.EMOTION:
        return emotion(clips)
    if k == I.SPEAKER:
        return speaker(clips)
    if k == I.INSTRUMENT:
        return instruments(clips)
    if k == I.MUSIC:
        return music(clips)
    if k == I.SOUND:
        return what_is(clips, question)
    subject = "sound" if re.search(r"\bsound\b|声音", question, re.I) else "speech"
    return describe(clips, subject)
