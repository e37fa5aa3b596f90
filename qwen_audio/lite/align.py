"""Word-timing refinement: Whisper's cross-attention word edges, corrected against the signal.

Whisper's word times come from attention over 20 ms encoder frames and are often 50-300 ms off
(about 100 ms early in connected speech), and it makes consecutive words touch, so every pause is
glued onto one of its neighbours. Two corrections, in `align_words`:

* energy snapping (`refine_words`, any language): each edge between words moves, within a small
  window, onto the nearest pause, a run of frames whose short-time energy is below a level set
  between the clip's own noise floor and speech level. Edges inside connected speech keep
  Whisper's time (snapping those to energy dips made the tutorial's spans worse, 52 -> 68 ms).
* forced alignment (`force_align`, English, when pocketsphinx is installed): Whisper's own words
  are aligned phone by phone against the audio with pocketsphinx's bundled en-US acoustic model,
  which also places edges in connected speech; then edges within 40 ms of a pause snap onto it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..audio import SAMPLE_RATE

HOP = SAMPLE_RATE // 100  # 10 ms between energy frames: frame k starts at k / 100 s
WIN = SAMPLE_RATE * 25 // 1000  # 25 ms analysis window


@dataclass(frozen=True)
class AlignConfig:
    search_s: float = 0.25  # how far an edge may move, seconds
    level: float = 0.25  # voiced if dB > floor + level * (speech - floor)
    min_gap_frames: int = 3  # a pause must last 30 ms: shorter dips are stop closures inside words
    snap_after_align_s: float = 0.04  # after forced alignment, edges move onto pauses this close


def frame_db(samples: np.ndarray) -> np.ndarray:
    """Short-time energy in dB, one value per 10 ms frame: float32 [n] -> [n // HOP + 1]."""
    x = np.asarray(samples, dtype=np.float32)
    pad = np.pad(x, (WIN // 2, WIN // 2))
    n = len(x) // HOP + 1
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    idx = np.minimum(idx, len(pad) - 1)
    power = np.mean(pad[idx] ** 2, axis=1)
    return 10.0 * np.log10(power + 1e-10)


def voiced_mask(db: np.ndarray, config: AlignConfig = AlignConfig()) -> np.ndarray:
    """Boolean [frames]: frames louder than the clip-relative threshold."""
    floor, speech = np.percentile(db, 5), np.percentile(db, 95)
    return db > floor + config.level * (speech - floor)


def pauses(voiced: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """Runs of unvoiced frames at least `min_frames` long, as [first, last + 1) frame indices."""
    edges = np.diff(np.concatenate([[1], voiced.astype(np.int8), [1]]))
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    return [(int(a), int(b)) for a, b in zip(starts, ends) if b - a >= min_frames]


def _nearest(runs: list[tuple[int, int]], lo: float, hi: float, reach: float):
    """The run (in seconds) closest to the interval [lo, hi], if it lies within `reach` of it."""
    best, best_d = None, reach
    for a, b in runs:
        a_s, b_s = a / 100, b / 100
        d = max(a_s - hi, lo - b_s, 0.0)  # 0 when the run touches the interval
        if d <= best_d:
            best, best_d = (a_s, b_s), d
            if d == 0:
                break
    return best


def refine_words(samples: np.ndarray, words: Sequence, config: AlignConfig = AlignConfig()) -> list:
    """Return `words` (dataclasses with .start/.end in seconds) with edges moved onto pauses.

    Each edge between two words moves to the nearest pause (a run of low-energy frames) within
    `search_s`: the left word ends where the pause begins, the right one starts where it ends.
    The first start and the last end move to the nearest sound onset / offset. An edge with no
    pause nearby (connected speech) keeps Whisper's time. Times are rounded to 10 ms.
    """
    if not words:
        return []
    voiced = voiced_mask(frame_db(samples), config)
    runs = pauses(voiced, config.min_gap_frames)
    # The clip's ends count as pauses, so a word may start at 0.00 or end at the last sample.
    runs = [(-1000, 0)] + runs + [(len(voiced), len(voiced) + 1000)]
    starts = [w.start for w in words]
    ends = [w.end for w in words]
    found = _nearest(runs, starts[0], starts[0], config.search_s)
    if found is not None:
        starts[0] = found[1] if found[1] <= ends[0] else starts[0]
    found = _nearest(runs, ends[-1], ends[-1], config.search_s)
    if found is not None:
        ends[-1] = found[0] if found[0] >= starts[-1] else ends[-1]
    for i in range(len(words) - 1):
        found = _nearest(runs, min(ends[i], starts[i + 1]), max(ends[i], starts[i + 1]), config.search_s)
        # Keep each word at least 20 ms long: a pause may not swallow a word Whisper placed.
        if found is not None and found[0] > starts[i] + 0.02 and found[1] < ends[i + 1] - 0.02:
            ends[i], starts[i + 1] = found
    return [replace(w, start=round(max(s, 0.0), 2), end=round(e, 2)) for w, s, e in zip(words, starts, ends)]


# ---- forced alignment of English transcripts (pocketsphinx's bundled en-US model) -------------------
#
# Whisper's cross-attention times are ~100 ms early in connected speech, where there is no pause
# to snap to. A phonetic forced alignment of Whisper's own words against the signal (an HMM
# acoustic model with optional silences between words, Viterbi at 10 ms frames) places each edge
# where the phones change. pocketsphinx ships its en-US acoustic model and CMU dictionary inside the
# PyPI wheel (no download), aligns ~6 s of speech in ~50 ms, and is optional: without it, or for
# other languages, the energy refinement above is all there is.

_LETTERS = [  # crude letter-to-sound rules for words neither in the dictionary nor made of its words
    ("tch", "CH"), ("sch", "S K"), ("igh", "AY"), ("ch", "CH"), ("sh", "SH"), ("th", "TH"), ("ph", "F"),
    ("ng", "NG"), ("ck", "K"), ("qu", "K W"), ("wh", "W"), ("gh", "G"), ("ee", "IY"), ("ea", "IY"),
    ("oo", "UW"), ("ou", "AW"), ("ow", "OW"), ("oa", "OW"), ("ai", "EY"), ("ay", "EY"), ("oi", "OY"),
    ("oy", "OY"), ("au", "AO"), ("aw", "AO"), ("ie", "IY"), ("er", "ER"), ("ir", "ER"), ("ur", "ER"),
    ("ar", "AA R"), ("or", "AO R"), ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"),
    ("f", "F"), ("g", "G"), ("h", "HH"), ("i", "IH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"),
    ("n", "N"), ("o", "AA"), ("p", "P"), ("q", "K"), ("r", "R"), ("s", "S"), ("t", "T"), ("u", "AH"),
    ("v", "V"), ("w", "W"), ("x", "K S"), ("y", "IY"), ("z", "Z"),
]
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> list[str]:
    """English words for 0 <= n < 10**6 ("1999" -> one thousand nine hundred ninety nine)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (_number_words(n % 100) if n % 100 else [])
    return _number_words(n // 1000) + ["thousand"] + (_number_words(n % 1000) if n % 1000 else [])


def tokens_of(word: str) -> list[str]:
    """Dictionary-style tokens for one Whisper word: "Shelley's," -> ["shelley's"], "10" -> ["ten"].

    Hyphens split; digits are spelled out; anything else but letters and apostrophes is dropped.
    """
    out = []
    for part in re.split(r"[-\u2013\u2014/]+", word.lower().replace("\u2019", "'")):
        for piece in re.findall(r"[a-z']+|\d+", part):
            if piece.isdigit():
                n = int(piece)
                out += _number_words(n) if n < 10**6 else [_ONES[int(d)] for d in piece]
            elif piece.strip("'"):
                out.append(piece.strip("'") if not piece.endswith("'s") else piece)
    return out


class PhoneticAligner:
    """Forced alignment of known English words with pocketsphinx (None from `create` if not installed)."""

    @classmethod
    def create(cls) -> "PhoneticAligner | None":
        try:
            from pocketsphinx import Decoder
        except ImportError:
            return None
        # No language model: alignment searches only the given words (0.1 s to load the dictionary).
        return cls(Decoder(samprate=SAMPLE_RATE, lm=None, bestpath=False, loglevel="FATAL"))

    def __init__(self, decoder):
        import threading

        self.decoder = decoder
        self._lock = threading.Lock()  # one decoder, stateful: one alignment at a time

    def pronounce(self, token: str) -> str | None:
        """ARPABET phones for `token`; out-of-dictionary words get composed from dictionary words
        ("companionless" = companion + less) or, failing that, from letter rules."""
        d = self.decoder
        known = d.lookup_word(token)
        if known:
            return known
        phones = self._compose(token, depth=0)
        if phones is None:
            phones, rest = [], token.replace("'", "")
            while rest:
                for letters, ph in _LETTERS:
                    if rest.startswith(letters):
                        if not phones or phones[-1] != ph:  # doubled letters are one sound
                            phones.append(ph)
                        rest = rest[len(letters):]
                        break
                else:
                    rest = rest[1:]
            if token.endswith("e") and len(phones) > 2 and phones[-1] == "EH":
                phones.pop()  # silent final e
            phones = " ".join(phones) if phones else None
        if phones:
            d.add_word(token, phones, True)
        return phones

    def _compose(self, token: str, depth: int) -> str | None:
        """Phones of `token` as a concatenation of dictionary words (longest first part first)."""
        if depth > 2:
            return None
        lookup = self.decoder.lookup_word
        for cut in range(len(token) - 2, 2, -1):
            head, tail = token[:cut], token[cut:]
            hp = lookup(head)
            if not hp:
                continue
            tp = lookup(tail) or (self._compose(tail, depth + 1) if len(tail) > 5 else None)
            if tp:
                return f"{hp} {tp}"
        return None

    def align(self, samples: np.ndarray, tokens: list[str]) -> list[tuple[float, float]] | None:
        """(start s, end s) of each token in `samples` (times relative to it), or None on failure."""
        found = self.align_scored(samples, tokens)
        return found[0] if found is not None else None

    def align_scored(self, samples: np.ndarray, tokens: list[str]) -> tuple[list[tuple[float, float]], float] | None:
        """`align`'s times and how well the words fit the sound: pocketsphinx's path score as a probability
        normalised by the frames, so two texts aligned to the same samples compare (higher fits better)."""
        with self._lock:
            return self._align(samples, tokens)

    def _align(self, samples: np.ndarray, tokens: list[str]) -> tuple[list[tuple[float, float]], float] | None:
        if not tokens or any(self.pronounce(t) is None for t in tokens):
            return None
        d = self.decoder
        # Digital silence (exact zeros) sends the features' log energy to -inf and the search
        # loses every path: add a fixed, inaudible dither (-80 dBFS), the same on every call.
        noise = np.random.default_rng(0).standard_normal(len(samples)).astype(np.float32) * 1e-4
        pcm = (np.clip(samples + noise, -1, 1) * 32767).astype(np.int16).tobytes()
        try:
            d.set_align_text(" ".join(tokens))
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            hyp = d.hyp()
            found = d.seg() if hyp is not None else None
        except RuntimeError:
            return None
        if found is None:  # the search lost every path (the words don't fit the audio)
            return None
        segs = [s for s in found if not (s.word.startswith("<") or s.word.startswith("["))]
        names = [re.sub(r"\(\d+\)$", "", s.word) for s in segs]
        if names != tokens:  # the search ran out of beam before the last word: no alignment
            return None
        return [(s.start_frame / 100, (s.end_frame + 1) / 100) for s in segs], hyp.score


def _windows(samples: np.ndarray, words: Sequence, groups: Sequence[tuple[int, int]],
             pad_s: float, max_s: float) -> list[tuple[int, int, float, float]]:
    """Split the words into alignment windows (first, last, start s, end s).

    Consecutive Whisper segments stay in one window unless a clear pause (>= 150 ms of low energy)
    lies between them, or the window would pass `max_s`: a cut inside connected speech would
    split a word whose true end Whisper does not know.
    """
    total = len(samples) / SAMPLE_RATE
    runs = [(a / 100, b / 100) for a, b in pauses(voiced_mask(frame_db(samples)), 15)]
    spans = [(i, j) for i, j in groups if j > i]
    out, first, lo = [], spans[0][0], max(0.0, words[spans[0][0]].start - pad_s)
    for (_, j), (k, _) in zip(spans, spans[1:]):
        left, right = min(words[j - 1].end, words[k].start), max(words[j - 1].end, words[k].start)
        gap = [(a, b) for a, b in runs if a < right + 0.3 and b > left - 0.3]
        cut = None
        if gap:
            a, b = max(gap, key=lambda r: r[1] - r[0])
            cut = (a + b) / 2
        elif words[k].end - lo > max_s:
            cut = (left + right) / 2
        if cut is not None:
            out.append((first, j, lo, cut))
            first, lo = k, cut
    out.append((first, spans[-1][1], lo, min(total, words[spans[-1][1] - 1].end + pad_s)))
    return out


def force_align(samples: np.ndarray, words: Sequence, groups: Sequence[tuple[int, int]],
                aligner: PhoneticAligner, pad_s: float = 1.0, max_s: float = 30.0,
                max_shift_s: float = 0.6) -> list:
    """`words` with times from a forced alignment of their text, window by window.

    `groups` are [first, last) word-index ranges (Whisper's segments), joined into windows that
    are cut only at clear pauses (see `_windows`). A window whose alignment fails, or that moves
    any word more than `max_shift_s` from its time in `words` (a misrecognised or hallucinated
    stretch), keeps its words as they were. Words with no speakable token (punctuation) keep theirs.
    """
    out = list(words)
    if not any(j > i for i, j in groups):
        return out
    for i, j, lo, hi in _windows(samples, words, groups, pad_s, max_s):
        a, b = int(lo * SAMPLE_RATE), int(hi * SAMPLE_RATE)
        per_word = [tokens_of(w.text) for w in words[i:j]]
        flat = [t for toks in per_word for t in toks]
        times = aligner.align(samples[a:b], flat) if b - a > SAMPLE_RATE // 10 else None
        if times is None:
            continue
        new, k = [], 0
        for w, toks in zip(words[i:j], per_word):
            if not toks:
                new.append(w)
                continue
            s, e = times[k][0] + a / SAMPLE_RATE, times[k + len(toks) - 1][1] + a / SAMPLE_RATE
            k += len(toks)
            new.append(replace(w, start=round(s, 2), end=round(e, 2)))
        if all(abs(n.start - w.start) <= max_shift_s and abs(n.end - w.end) <= max_shift_s
               for n, w in zip(new, words[i:j])):
            out[i:j] = new
    return out


def align_words(samples: np.ndarray, words: Sequence, groups: Sequence[tuple[int, int]],
                aligner: PhoneticAligner | None, config: AlignConfig = AlignConfig()) -> list:
    """The whole refinement: energy snapping, then (with an aligner) forced alignment, then a
    light snap (`config.snap_after_align_s`) of aligned edges that sit next to a pause.

    Without an aligner (not installed, or not English) this is `refine_words` alone.
    """
    refined = refine_words(samples, words, config)
    if aligner is None or not refined:
        return refined
    aligned = force_align(samples, refined, groups, aligner)
    return refine_words(samples, aligned, replace(config, search_s=config.snap_after_align_s))
