"""Intent routing: what a question asks for, from its text alone (English keywords and quotes).

`route(question)` returns an `Intent`; `clip_refs(question, n)` says which of the n clips in play
a question points at ("the first audio", "audio 2"); both are pure functions of strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Ordered: the first kind whose pattern matches wins (grounding before transcription, because
# "find the word ... in the speech" also mentions speech).
GROUND = "ground"  # times of a quoted word or phrase
PERSON = "person"  # find a person's name, with its times
TRANSLATE = "translate"  # the speech in English
LANGUAGE = "language"  # which language is spoken
EMOTION = "emotion"  # the lite model cannot tell
SPEAKER = "speaker"  # gender, age, who: cannot tell
SOUND = "sound"  # instruments, music, sound events: cannot tell beyond speech / no speech
DESCRIBE = "describe"  # transcription in the tutorial's "The speech is of ..." style
OPEN = "open"  # anything else: the small LLM with the transcripts as context

_QUOTED = re.compile(r"[\"“”«»'‘’]([^\"“”«»]+?)[\"“”«»'‘’](?:\s|$|[?.!,])")
_PATTERNS = [
    # Requests to write or advise are open questions even when they also say "recognize the sound".
    (OPEN, r"\bstory\b|\bsuggest|\badvi[cs]e\b|\bwhat should\b|\brecommend|\bpoem\b|\bsummari[sz]e\b|\bexplain\b"),
    (PERSON, r"\bperson(?:'s)? name\b|\bname of (?:the|a|any) person\b|\bwho is (?:mentioned|named)\b|\bwhat name\b"),
    (TRANSLATE, r"\btranslat"),
    (LANGUAGE, r"\b(?:what|which) (?:language|languages|dialect)\b|\blanguage (?:is|was) (?:it|this|spoken|used)\b"
               r"|\bidentify the language\b"),
    (EMOTION, r"\bemotion|\bmood\b|\bfeel(?:ing|s)?\b|\bhappy\b|\bsad\b|\bangry\b|\btone of voice\b|\bsentiment\b"),
    (SPEAKER, r"\bgender\b|\bhow old\b|\bage of\b|\bmale or female\b|\bman or (?:a )?woman\b|\bwho is speaking\b|\bspeaker\b"),
    (SOUND, r"\binstrument|\bgenre\b|\bmusic\b|\bwhat (?:kind of )?sound (?:effect|event)"),
    (DESCRIBE, r"\brecogni[sz]e\b|\btranscri|\bwhat (?:is|was) (?:that|this|the) (?:sound|audio|speech|clip)\b|\bwhat is it\b"
               r"|\bwhat (?:do|did|does) (?:you|he|she|they|it|the(?: \w+){1,2}) (?:hear|say)|\bwhat (?:is|was) (?:said|spoken)\b"
               r"|\bwhat(?:'s| is) in (?:the|this) audio\b|\bcontent of\b|\bdescribe the (?:audio|speech|sound|clip)"),
]
_GROUND_WORDS = re.compile(r"\b(?:find|locate|where|when|start|end|timestamp|time|times|position|grounding|seconds?)\b", re.I)


@dataclass(frozen=True)
class Intent:
    kind: str  # one of the constants above
    phrase: str | None = None  # the word or phrase to ground (GROUND only)


def route(question: str) -> Intent:
    """Classify one question (audio tags already removed)."""
    q = question.strip()
    quoted = _QUOTED.search(q + " ")
    if quoted and _GROUND_WORDS.search(q):
        return Intent(GROUND, quoted.group(1).strip())
    m = re.search(r"\b(?:find|locate) the (?:word|phrase)s?\s+([\w'’-]+(?:\s+[\w'’-]+)?)\s*$", q, re.I)
    if m:  # unquoted: 'find the word companionless'
        return Intent(GROUND, m.group(1))
    low = q.lower()
    for kind, pattern in _PATTERNS:
        if re.search(pattern, low):
            return Intent(kind)
    return Intent(OPEN)


_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1, "1st": 1, "2nd": 2, "3rd": 3}


def clip_refs(question: str, n: int) -> list[int]:
    """0-based indices of the clips (of `n` in play) that `question` names; all of them if none."""
    low = question.lower()
    picked = []
    for m in re.finditer(r"\b(first|second|third|fourth|fifth|last|1st|2nd|3rd)\s+(?:audio|clip|recording|one)\b", low):
        k = _ORDINALS[m.group(1)]
        picked.append(n - 1 if k == -1 else k - 1)
    for m in re.finditer(r"\b(?:audio|clip)\s*#?(\d+)\b", low):
        picked.append(int(m.group(1)) - 1)
    picked = [i for i in dict.fromkeys(picked) if 0 <= i < n]
    return picked or list(range(n))
