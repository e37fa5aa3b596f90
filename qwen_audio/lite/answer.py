"""Responses in the tutorial's style, built from what Whisper heard; no model calls happen here.

Every function takes `Heard` clips (a label and a way to get what Whisper heard for a task) and
returns text; `compose` picks the one an intent asks for. What the lite model cannot know (emotion,
speaker, instruments, non-speech sounds)
it says plainly, quoting the speech when there is some.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from . import intent as I
from .asr import Hearing, Word, language_name

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
NO_SPEECH = ("I hear no speech in this audio. The lite model only recognises speech, so it can't tell "
             "what other sound this is (music, noise or a sound effect).")


@dataclass
class Heard:
    """One clip in play: `hear(task)` returns its Hearing for "transcribe" or "translate"."""

    index: int  # 0-based position among the clips in play
    count: int  # how many clips are in play
    hear: Callable[[str], Hearing]

    @property
    def label(self) -> str:
        """'the audio' for a single clip, else 'the first audio', 'the second audio', ..."""
        if self.count == 1:
            return "the audio"
        return f"the {ORDINALS[self.index]} audio" if self.index < len(ORDINALS) else f"audio {self.index + 1}"


def ts(seconds: float) -> str:
    """A timestamp as the tutorial writes it: <|2.33|>."""
    return f"<|{seconds:.2f}|>"


def quote(tr: Hearing) -> str:
    return f'"{tr.text}"'


def speech_phrase(tr: Hearing) -> str:
    """'a person speaking, in a Spanish, saying, "..."' (the tutorial's wording), or no speech."""
    if not tr.has_speech:
        return "no speech (silence, music or other sounds, which the lite model does not identify)"
    return f"a person speaking, in a {language_name(tr.language)}, saying, {quote(tr)}"


def describe(clips: Sequence[Heard], subject: str = "speech") -> str:
    """Transcription answer: 'The speech is of a person speaking, in a English, saying, "...".'"""
    if len(clips) == 1:
        tr = clips[0].hear("transcribe")
        return f"The {subject} is of {speech_phrase(tr)}." if tr.has_speech else NO_SPEECH
    parts = [f"{c.label} is of {speech_phrase(c.hear('transcribe'))}" for c in clips]
    return _sentence(", and ".join(parts)) + "."


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


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


def cannot(what: str, clips: Sequence[Heard]) -> str:
    """An honest refusal: 'I can't tell emotions from the voice with the lite model; the speech says: "..."'."""
    if not clips:
        return f"I can't tell {what} with the lite model, and there is no audio in this conversation."
    return f"I can't tell {what} with the lite model; {_says(clips)}."


def sound(clips: Sequence[Heard]) -> str:
    """Instruments, music, sound events: only speech / no speech is known."""
    if all(not c.hear("transcribe").has_speech for c in clips):
        return ("I hear no speech in this audio. The lite model only recognises speech, so it can't tell "
                "which instrument, music or sound this is.")
    text = describe(clips)
    return ("The lite model only recognises speech, so it can't tell instruments, music or sound events. "
            + text)


def language(clips: Sequence[Heard]) -> str:
    parts = []
    for c in clips:
        tr = c.hear("transcribe")
        lang = f"in {language_name(tr.language)}" if tr.has_speech else "without speech"
        parts.append((c.label, lang))
    if len(parts) == 1:
        tr = clips[0].hear("transcribe")
        if not tr.has_speech:
            return "There is no speech in this audio, so there is no language to identify."
        return f"The speech is in {language_name(tr.language)}."
    return _sentence(", and ".join(f"{label} is {lang}" for label, lang in parts)) + "."


_TARGET = re.compile(r"\b(?:into|to)\s+(chinese|mandarin|spanish|french|german|japanese|korean|italian|russian"
                     r"|portuguese|arabic)\b", re.I)


def translate(clips: Sequence[Heard], question: str) -> str:
    """Whisper's translate task; it only goes into English, which is said when asked otherwise."""
    target = _TARGET.search(question)
    lead = f"The lite model can only translate into English, not {target.group(1).capitalize()}. " if target else ""
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


def normalise(text: str) -> str:
    """Lower-case letters, digits and apostrophes only: how words are compared."""
    return re.sub(r"[^\w']+", "", text.lower().replace("’", "'"))


def find_phrase(words: Sequence[Word], phrase: str, cutoff: float = 0.75) -> tuple[float, float] | None:
    """(start, end) seconds of the run of `words` that best spells `phrase`, or None.

    Compared without spaces and punctuation, so "companion less" matches "companionless"; the best
    run of up to n+2 words wins if its similarity ratio reaches `cutoff`.
    """
    target = normalise(phrase)
    if not target or not words:
        return None
    keys = [normalise(w.text) for w in words]
    n = max(1, len(phrase.split()))
    best, best_score = None, cutoff
    for i in range(len(words)):
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
        return f'I can\'t find the word "{phrase}" in the speech; {_says(clips)}.'
    out = []
    for c, (a, b) in found:
        where = f"In {c.label}, the" if len(clips) > 1 else "The"
        out.append(f'{where} word "{phrase}" starts at {ts(a)} seconds and ends at {ts(b)} seconds.')
    return " ".join(out)


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
        key = normalise(text).rstrip(".")
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


def llm_context(clips: Sequence[Heard]) -> str:
    """What the LLM is told about the audio, one line per clip."""
    lines = []
    for c in clips:
        tr = c.hear("transcribe")
        name = f"Audio {c.index + 1}"
        if tr.has_speech:
            lines.append(f"{name}: a person speaking {language_name(tr.language)}, saying: {quote(tr)}")
        else:
            lines.append(f"{name}: no speech (silence, music or other sounds).")
    return "\n".join(lines)


NO_AUDIO = ("There is no audio in this conversation yet. Add a clip with "
            "tokenizer.from_list_format([{'audio': path}, {'text': question}]).")


def compose(intent: I.Intent, question: str, clips: Sequence[Heard]) -> str:
    """The answer to every intent but OPEN (which the LLM writes)."""
    if not clips:
        return NO_AUDIO
    k = intent.kind
    if k == I.GROUND:
        return ground(clips, intent.phrase or "")
    if k == I.PERSON:
        return person(clips)
    if k == I.TRANSLATE:
        return translate(clips, question)
    if k == I.LANGUAGE:
        return language(clips)
    if k == I.EMOTION:
        return cannot("emotions from the voice", clips)
    if k == I.SPEAKER:
        return cannot("who is speaking (gender or age) from the voice", clips)
    if k == I.SOUND:
        return sound(clips)
    return describe(clips, "sound" if re.search(r"\bsound\b", question, re.I) else "speech")
