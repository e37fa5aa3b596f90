"""Find a word Whisper misheard: by its sound in the transcript, then checked against the audio.

Chinese (`find_by_pinyin`): Whisper often writes a homophone or near-homophone (你们是吧 for 你没事吧), so a
word is looked for by its toneless pinyin (`pypinyin`'s dictionary) in the transcript's characters. There is no
Chinese acoustic model to check it against, so only close matches count (most syllables the same).

English:

"Where is the word "amazon"?" on a clip Whisper wrote as "M&M rainforest" has no answer in the text. Two
steps find it (English; pocketsphinx's dictionary and acoustic model, both inside its wheel):

1. Candidates: runs of one to three transcript words whose pronunciation is closest to the word's, by an
   edit distance over ARPABET phones in which near sounds cost less (AE/EH, T/D, M/N).
2. The check in the sound: the words around a candidate are force-aligned twice, as heard and with the
   candidate replaced by the asked word. A word that was really said fits the sound about as well as
   what Whisper wrote (on the tutorial's "middle classes", "glasses" fits 0.01 worse and "castles" 0.02;
   unrelated words 0.06-0.26 worse), so a candidate within `FIT_MARGIN` is taken if the asked word also fits
   clearly better than decoy words put in its place; the asked word's own aligned times give the span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..audio import SAMPLE_RATE
from .align import PhoneticAligner, tokens_of
from .answer import heard_text, spoken
from .asr import Word

VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
_CLASSES = [  # consonants that are easily heard as one another: same manner of articulation
    frozenset("P B T D K G".split()), frozenset("M N NG".split()), frozenset("F V TH DH S Z SH ZH HH".split()),
    frozenset("CH JH SH ZH".split()), frozenset("L R W Y".split()),
]
_VOICING = {frozenset(p.split()) for p in ("P B", "T D", "K G", "F V", "S Z", "TH DH", "SH ZH", "CH JH")}

# Words unlike anything asked, aligned in the asked word's place: a real word must fit the sound clearly better
# than they do. Without them a transcript that fits its audio badly (a real mishearing) lets any word of about
# the right shape fit "better than what was heard".
DECOYS = ("bicycle", "elephant", "hostel", "window", "paper", "yesterday", "orange", "umbrella", "pocket", "tomato")
N_DECOYS = 4  # the decoys nearest the asked word in length
DECOY_MARGIN = 0.03
MIN_SIMILARITY = 0.35  # phone similarity a candidate needs (unrelated words of the tutorial clips: < 0.3)
MAX_CANDIDATES = 4  # candidates checked against the audio (an alignment each: ~30 ms for 2 s)
FIT_MARGIN = 0.04  # how much worse than the heard words the asked word may fit the sound (see the docstring)
FULL_MARGIN_AT = 0.6  # below this phone similarity the margin shrinks in proportion: "Paris" is not "nearer"
CONTEXT_WORDS = 2  # words on each side aligned with a candidate, so its edges are free to move
PAD_S = 0.2


@dataclass(frozen=True)
class SoundMatch:
    """Where an asked word that is not in the transcript was found by its sound."""

    start: float  # seconds from the start of the clip
    end: float
    heard: str  # what the transcript has there ("M&M")
    similarity: float  # of the pronunciations, 0..1
    fit: float  # the asked word's fit to the sound minus the heard words' (>= -FIT_MARGIN)


def _substitution(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if a in VOWELS and b in VOWELS:
        return 0.5
    if frozenset((a, b)) in _VOICING:
        return 0.3
    if any(a in c and b in c for c in _CLASSES):
        return 0.6
    return 1.0


def phone_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """1 - (weighted edit distance / the longer length): 1 for equal phone strings, near 0 for unrelated.
    Insertions and deletions cost 1, a vowel 0.7 (unstressed vowels come and go in fast speech)."""
    if not a or not b:
        return 0.0
    indel = [0.7 if p in VOWELS else 1.0 for p in b]
    prev = np.concatenate([[0.0], np.cumsum(indel)])
    for pa in a:
        cost_a = 0.7 if pa in VOWELS else 1.0
        row = np.empty_like(prev)
        row[0] = prev[0] + cost_a
        for j, pb in enumerate(b, 1):
            row[j] = min(prev[j] + cost_a, row[j - 1] + indel[j - 1], prev[j - 1] + _substitution(pa, pb))
        prev = row
    return max(0.0, 1.0 - float(prev[-1]) / max(len(a), len(b)))


def phones(aligner: PhoneticAligner, tokens: Sequence[str]) -> list[str] | None:
    """The ARPABET phones of dictionary-style tokens, in order; None if one cannot be pronounced."""
    out = []
    for t in tokens:
        p = aligner.pronounce(t)
        if p is None:
            return None
        out += p.split()
    return out


def _tokens(text: str) -> list[str]:
    """Dictionary-style tokens of text as spoken: "M&M" -> ["m", "and", "m"], "Dr." -> ["doctor"]."""
    return [t for w in spoken(text) for t in tokens_of(w)]


def candidates(words: Sequence[Word], target: Sequence[str], aligner: PhoneticAligner) -> list[tuple[int, int, float]]:
    """[(first, last + 1, similarity)] of the transcript runs that sound most like `target` (phones), best first."""
    per_word = [phones(aligner, _tokens(w.text)) or [] for w in words]
    found = []
    for i in range(len(words)):
        run: list[str] = []
        for k in range(i, min(len(words), i + 3)):
            run = run + per_word[k]
            if per_word[i] and per_word[k]:
                found.append((i, k + 1, phone_similarity(target, run)))
            if len(run) > 2 * len(target):
                break
    found = [f for f in found if f[2] >= MIN_SIMILARITY]
    found.sort(key=lambda f: -f[2])
    out: list[tuple[int, int, float]] = []
    for f in found:  # overlapping runs are one place: keep its best
        if all(f[1] <= g[0] or f[0] >= g[1] for g in out):
            out.append(f)
    return out[:MAX_CANDIDATES]


def find_by_sound(samples: np.ndarray, words: Sequence[Word], phrase: str,
                  aligner: PhoneticAligner) -> SoundMatch | None:
    """Where `phrase` (English) was said, judged by sound, when the transcript `words` do not have it.

    samples: float32 [n] at 16 kHz, the clip the words' times refer to. None when no run of words sounds
    like it or none fits the audio within `FIT_MARGIN` (less for runs that sound less alike).
    """
    asked = _tokens(phrase)
    target = phones(aligner, asked) if asked else None
    if not target or not words:
        return None
    decoys = sorted(([d] for d in DECOYS if d not in asked), key=lambda d: abs(len(phones(aligner, d)) - len(target)))
    decoys = decoys[:N_DECOYS]
    best = None
    for i, k, similarity in candidates(words, target, aligner):
        lo, hi = max(0, i - CONTEXT_WORDS), min(len(words), k + CONTEXT_WORDS)
        a = max(0, int((words[lo].start - PAD_S) * SAMPLE_RATE))
        b = min(len(samples), int((words[hi - 1].end + PAD_S) * SAMPLE_RATE))
        heard = [_tokens(x.text) for x in words[lo:hi]]
        before = [t for toks in heard[: i - lo] for t in toks]
        after = [t for toks in heard[k - lo:] for t in toks]
        as_heard = aligner.align_scored(samples[a:b], [t for toks in heard for t in toks])
        as_asked = aligner.align_scored(samples[a:b], before + asked + after)
        if as_heard is None or as_asked is None:
            continue
        fit = as_asked[1] - as_heard[1]
        if fit < -FIT_MARGIN * min(1.0, similarity / FULL_MARGIN_AT) or (best is not None and fit <= best.fit):
            continue
        if any(decoy is not None and as_asked[1] - decoy[1] < DECOY_MARGIN
               for decoy in (aligner.align_scored(samples[a:b], before + d + after) for d in decoys)):
            continue
        times = as_asked[0][len(before): len(before) + len(asked)]
        start, end = times[0][0] + a / SAMPLE_RATE, times[-1][1] + a / SAMPLE_RATE
        best = SoundMatch(round(start, 2), round(end, 2), heard_text(words[i:k]), round(similarity, 3), round(fit, 4))
    return best


PINYIN_MIN_SIMILARITY = 0.75  # mean per-syllable similarity: 没事 in 们是 (m-en/m-ei, shi) = 0.75


def _syllable_similarity(a: str, b: str, initials: dict[str, str]) -> float:
    """1 for the same toneless syllable, 0.5 when the initial or the final is the same, else 0."""
    if a == b:
        return 1.0
    ia, ib = initials.get(a, ""), initials.get(b, "")
    return 0.5 if ia == ib or a[len(ia):] == b[len(ib):] else 0.0


def find_by_pinyin(words: Sequence[Word], phrase: str) -> SoundMatch | None:
    """Where the Chinese `phrase` sounds as if said in the transcript `words` (their characters' pinyin), or None.

    Each run of characters as long as the phrase is compared syllable by syllable; the best run at or above
    `PINYIN_MIN_SIMILARITY` gives the span (characters share their word's time evenly). None without
    `pypinyin` installed.
    """
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:
        return None
    hanzi = [c for c in phrase if "\u4e00" <= c <= "\u9fff"]
    if not hanzi or not words:
        return None
    target = lazy_pinyin("".join(hanzi))
    # Each character with its time, shared out evenly within its word (Whisper's words are 1-3 characters).
    chars = []
    for w in words:
        han = [c for c in w.text if "\u4e00" <= c <= "\u9fff"]
        step = (w.end - w.start) / max(1, len(han))
        chars += [(c, w.start + k * step, w.start + (k + 1) * step) for k, c in enumerate(han)]
    if len(chars) < len(target):
        return None
    heard = lazy_pinyin("".join(c for c, _, _ in chars))
    syllables = set(heard) | set(target)
    initials = dict(zip(syllables, lazy_pinyin(list(syllables), style=Style.INITIALS, strict=False)))
    best, best_score = None, PINYIN_MIN_SIMILARITY
    for start in range(len(chars) - len(target) + 1):
        run = heard[start: start + len(target)]
        score = sum(_syllable_similarity(a, b, initials) for a, b in zip(target, run)) / len(target)
        if score >= best_score and (best is None or score > best_score):
            best, best_score = start, score
    if best is None:
        return None
    run = chars[best: best + len(target)]
    text = "".join(c for c, _, _ in run)
    return SoundMatch(round(run[0][1], 2), round(run[-1][2], 2), text, round(best_score, 3), 0.0)
