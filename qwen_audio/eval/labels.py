"""Labels and their synonyms, and which label a free-text answer names.

    find_label("This is a sound effect of breaking glass.", LabelSet.of("sound", ["glass breaking"]))
        -> "glass breaking"

A chat model answers in sentences ("The instrument is the piano."), not in a label: an answer names the
label whose synonym it mentions first, among the category's labels and the manifest's. A mention right
after a negation ("no speech", "not a dog", "can't tell ... music") does not count. The published scripts
(eval_audio/evaluate_emotion.py, evaluate_vocal_sound.py, evaluate_scene.py) compare the base model's
one-word outputs with the label exactly; this is that comparison for sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .normalize import basic

# Canonical label -> synonyms, per category. Emotion labels are MELD's (the published emotion set);
# language labels are the codes the model's task tags use.
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "emotion": {
        "neutral": ("neutral", "calm", "flat"),
        "joy": ("joy", "happy", "happiness", "joyful", "cheerful", "glad", "delighted", "excited", "relaxed", "pleased"),
        "sadness": ("sadness", "sad", "unhappy", "sorrow", "sorrowful", "depressed", "upset", "gloomy", "negative"),
        "anger": ("anger", "angry", "mad", "furious", "annoyed", "irritated"),
        "surprise": ("surprise", "surprised", "amazed", "astonished", "shocked"),
        "fear": ("fear", "fearful", "afraid", "scared", "frightened", "anxious"),
        "disgust": ("disgust", "disgusted", "disgusting"),
    },
    "language": {
        "en": ("english",), "zh": ("chinese", "mandarin", "putonghua", "中文", "汉语", "普通话"),
        "yue": ("cantonese", "粤语"), "es": ("spanish", "español", "castilian"), "fr": ("french", "français"),
        "de": ("german", "deutsch"), "ja": ("japanese", "日本語"), "ko": ("korean", "한국어"),
        "it": ("italian", "italiano"), "ru": ("russian",), "pt": ("portuguese",), "ar": ("arabic",),
        "nl": ("dutch",), "hi": ("hindi",), "tr": ("turkish",), "vi": ("vietnamese",),
    },
    "instrument": {
        "piano": ("piano", "pianoforte", "keyboard"), "guitar": ("guitar",), "violin": ("violin", "fiddle"),
        "cello": ("cello", "violoncello"), "flute": ("flute",), "trumpet": ("trumpet",), "saxophone": ("saxophone", "sax"),
        "drums": ("drum", "drums", "drum kit", "percussion"), "organ": ("organ",), "bass": ("bass",),
        "harp": ("harp",), "clarinet": ("clarinet",), "voice": ("singing", "vocals", "singer", "voice"),
        "synthesizer": ("synthesizer", "synth"), "mallet": ("mallet", "marimba", "xylophone", "vibraphone"),
        "brass": ("brass", "horn", "trombone", "tuba"), "reed": ("reed", "oboe", "bassoon"),
        "string": ("string", "strings"),
    },
    "sound": {
        "glass breaking": ("breaking glass", "glass breaking", "glass shattering", "shattering", "shatter", "glass"),
        "speech": ("speech", "speaking", "talking", "conversation", "voice"),
        "music": ("music", "song", "melody"),
        "dog barking": ("dog", "bark", "barking"), "cat meowing": ("cat", "meow", "meowing"),
        "laughter": ("laughter", "laughing", "laugh", "giggle"), "crying": ("crying", "cry", "sobbing", "baby crying"),
        "applause": ("applause", "clapping"), "siren": ("siren", "ambulance", "police car"),
        "car horn": ("car horn", "honking", "horn"), "engine": ("engine", "motor"),
        "rain": ("rain", "raining"), "thunder": ("thunder", "thunderstorm"), "water": ("water", "stream", "splash"),
        "wind": ("wind",), "footsteps": ("footsteps", "walking"), "door": ("door", "knock", "knocking"),
        "bird": ("bird", "birds", "chirping", "tweeting"), "gunshot": ("gunshot", "gun", "shot"),
        "explosion": ("explosion", "blast"), "alarm": ("alarm", "beeping", "beep"), "cough": ("cough", "coughing"),
        "sneeze": ("sneeze", "sneezing"), "silence": ("silence", "silent", "nothing"),
    },
}
CATEGORIES = tuple(SYNONYMS)
NEGATIONS = frozenset({"no", "not", "never", "without", "cannot", "t", "neither", "nor", "none"})  # "t": can't -> can t
NEGATION_REACH = 4  # words before a mention that a negation reaches ("can't tell which instrument, music")


@dataclass(frozen=True)
class LabelSet:
    """The labels an answer may name (canonical label -> its normalised synonyms)."""

    synonyms: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, category: str | None, labels=(), extra: dict[str, list[str]] | None = None) -> "LabelSet":
        """The category's labels, plus `labels` (each folded into the category's label it is a synonym of,
        else a label of its own), plus `extra` synonyms by label."""
        table = {k: list(v) for k, v in SYNONYMS.get(category or "", {}).items()}
        found = cls({k: tuple(basic(s) for s in v) for k, v in table.items()})
        for label in labels:
            canonical = found.canonical(label)
            table.setdefault(canonical, [label])
        for label, words in (extra or {}).items():
            table.setdefault(found.canonical(label), []).extend(words)
        codes = SYNONYMS["language"] if category == "language" else {}  # "en" is a Spanish word, not a name
        return cls({k: tuple(dict.fromkeys(basic(s) for s in (v if k in codes else [k, *v]) if basic(s)))
                    for k, v in table.items()})

    def canonical(self, label: str) -> str:
        """The label that `label` names (itself when none does)."""
        key = basic(label)
        for canonical, words in self.synonyms.items():
            if key == basic(canonical) or key in words:
                return canonical
        return key


def _mentions(text: str, phrase: str) -> list[int]:
    """Word positions in `text` (normalised) where `phrase` starts; CJK phrases match anywhere."""
    if phrase.isascii():
        return [text[:m.start()].count(" ") for m in re.finditer(rf"(?<!\S){re.escape(phrase)}(?!\S)", text)]
    return [text[:i].count(" ") for i in (m.start() for m in re.finditer(re.escape(phrase), text))]


def find_label(answer: str, labels: LabelSet) -> str | None:
    """The label `answer` names first (a mention just after a negation does not count); None if none."""
    text = basic(answer)
    words = text.split()
    best: tuple[int, int, str] | None = None  # (position, -length of the synonym, label)
    for label, synonyms in labels.synonyms.items():
        for phrase in synonyms:
            for at in _mentions(text, phrase):
                if NEGATIONS & set(words[max(0, at - NEGATION_REACH):at]):
                    continue
                candidate = (at, -len(phrase), label)
                if best is None or candidate < best:
                    best = candidate
    return best[2] if best else None


def yes_no(answer: str) -> str | None:
    """"yes" or "no", whichever of the two words comes first in `answer`; None if neither does."""
    for word in basic(answer).split():
        if word in ("yes", "no"):
            return word
    return None
