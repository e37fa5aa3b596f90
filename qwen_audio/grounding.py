"""Grounding: timestamps in answers -> spans -> audio clips.

The model answers "find the word X" with timestamp tokens in text, seconds from the start of the clip:
    The word "middle classes" starts at <|2.33|> seconds and ends at <|3.26|> seconds.
`parse_spans` turns that into `Span(start=2.33, end=3.26, words="middle classes")`, `cut` returns (and
optionally writes) those samples, as the tutorial's `ffmpeg -i in.flac -ss 2.33 -to 3.26 out.wav` does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from .audio import SAMPLE_RATE, AudioSource, load_clip, save_wav
from .errors import QwenAudioError
from .tokenizer import MAX_TIMESTAMP_CS

MAX_SECONDS = MAX_TIMESTAMP_CS / 100  # 30.0 s: the last timestamp token, <|30.00|>

# Anything numeric-looking between <| |> is meant as a timestamp; <|en|>, <|endoftext|> are not.
_TOKEN = re.compile(r"<\|\s*([-+]?[\d.]+)\s*\|>")
_WELL_FORMED = re.compile(r"\d+(?:\.\d+)?")
_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”')
# A sentence ends at . ! ? (followed by space or the end) or a newline; CJK stops need no space.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|[。！？\n]")
_ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth".split()
_CJK_DIGITS = {c: i + 1 for i, c in enumerate("一二三四五六七八九十")}
_CLIP = re.compile(
    rf"\b(?P<ord>{'|'.join(_ORDINALS)}|\d+(?:st|nd|rd|th))\s+(?:audio|clip|recording)"
    r"|\b(?:audio|clip|recording)\s*#?\s*(?P<num>\d+)\b(?!\.\d)"
    r"|第(?P<cjk>[一二三四五六七八九十\d]+)[段个條条]?(?:音频|语音|录音)"
    r"|(?:音频|语音|录音)\s*(?P<cjknum>\d+)",
    re.IGNORECASE,
)


class GroundingError(QwenAudioError, ValueError):
    """A span that cannot be cut from its clip: empty, reversed, or outside the audio."""


@dataclass(frozen=True)
class Span:
    """A stretch of one clip that an answer points at."""

    start: float  # seconds from the start of the clip (or of the long audio, after `offset`)
    end: float  # seconds, exclusive
    words: str | None = None  # the quoted words the span refers to, e.g. "middle classes"
    clip: int | None = None  # 0-based clip index when the answer says "second audio" / "Audio 2"
    text: str = ""  # the sentence(s) of the answer it was parsed from

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


@dataclass(frozen=True)
class GroundingResult:
    spans: list[Span] = field(default_factory=list)  # in the order the answer gives them
    problems: list[str] = field(default_factory=list)  # what could not be read, for a human


def _seconds(raw: str) -> tuple[float | None, str | None]:
    """(seconds, None) for a usable timestamp body like "2.33", else (None, why not)."""
    if raw.startswith("-"):
        return None, f"<|{raw}|> is negative (timestamps run 0.00..{MAX_SECONDS:.2f} s)"
    if not _WELL_FORMED.fullmatch(raw):
        return None, f"<|{raw}|> is malformed (not a timestamp)"
    value = float(raw)
    if value > MAX_SECONDS:
        return None, f"<|{raw}|> is out of range (timestamps run 0.00..{MAX_SECONDS:.2f} s)"
    return value, None


def _clip_index(m: re.Match) -> int | None:
    """0-based clip index from a match of _CLIP: "second audio", "Audio 2", "第二段音频" -> 1."""
    if m["ord"]:
        word = m["ord"].lower()
        n = _ORDINALS.index(word) + 1 if word in _ORDINALS else int(word[:-2])
    elif m["cjk"] and not m["cjk"].isdigit():
        tens, ten, ones = m["cjk"].rpartition("十")  # 二十一 -> ("二", "十", "一"); 三 -> ("", "", "三")
        n = (_CJK_DIGITS.get(tens, 1) * 10 if ten else 0) + _CJK_DIGITS.get(ones, 0)
    else:
        n = int(m["num"] or m["cjk"] or m["cjknum"])
    return n - 1 if n > 0 else None  # "Audio 0" names no clip


def parse_spans(answer: str) -> GroundingResult:
    """Read every (start, end) timestamp pair of `answer` into Spans; never raises.

    Timestamps pair in order of appearance. Pairs with a malformed, negative or > 30 s member, pairs that
    end before they start, and a final start without an end are left out and described in `problems`.
    """
    # Mask tokens and quotes (same length) so the dots in <|2.33|> or "Mr. X" do not end sentences.
    masked = _TOKEN.sub(lambda m: "#" * len(m[0]), answer)
    masked = _QUOTED.sub(lambda m: "#" * len(m[0]), masked)
    ends = [m.end() for m in _SENTENCE_END.finditer(masked)]

    def sentence(at: int) -> tuple[int, int]:
        """(begin, end) character offsets of the sentence holding position `at`."""
        begin = max((e for e in ends if e <= at), default=0)
        return begin, min((e for e in ends if e > at), default=len(answer))

    quotes = list(_QUOTED.finditer(answer))
    clips = list(_CLIP.finditer(answer))
    tokens = list(_TOKEN.finditer(answer))
    spans, problems = [], []
    for first, second in zip(tokens[::2], tokens[1::2]):
        (start, why_start), (end, why_end) = _seconds(first[1]), _seconds(second[1])
        problems += [why for why in (why_start, why_end) if why]
        if start is None or end is None:
            continue
        if end < start:
            problems.append(f"span {first[0]}..{second[0]} ends before it starts")
            continue
        begin, stop = sentence(first.start())[0], sentence(second.start())[1]
        local = [q for q in quotes if begin <= q.start() and q.end() <= first.start()]
        words = (local[-1][1] or local[-1][2]).strip() if local else None
        # The clip this sentence names: nearest before the start, else after it ("... in the second
        # audio."); else the last one named earlier in the answer ("Audio 2:\n ...").
        before = [c for c in clips if c.end() <= first.start()]
        after = [c for c in clips if first.start() < c.start() < stop]
        if before and before[-1].start() >= begin:
            chosen = before[-1]
        else:
            chosen = after[0] if after else (before[-1] if before else None)
        clip = _clip_index(chosen) if chosen else None
        spans.append(Span(start, end, words, clip, answer[begin:stop].strip()))
    if len(tokens) % 2:
        last = tokens[-1]
        problems.append(f"unpaired timestamp {last[0]} at character {last.start()}: no end follows it")
    return GroundingResult(spans, problems)


def render_seconds(text: str, fmt: str = "{:.2f}") -> str:
    """Replace each timestamp token `<|2.33|>` with plain seconds `2.33`, for answers shown to people.

    Other `<|...|>` tokens, and malformed ones like `<|3.2.1|>`, are left as they are.
    """
    return re.sub(r"<\|(\d+(?:\.\d+)?)\|>", lambda m: fmt.format(float(m[1])), text)


def offset(spans: Iterable[Span], seconds: float) -> list[Span]:
    """Shift spans by `seconds`: spans of a 30 s window starting at `seconds` in a longer recording."""
    return [replace(s, start=s.start + seconds, end=s.end + seconds) for s in spans]


def cut(
    source: AudioSource,
    span_or_start: Span | float,
    end: float | None = None,
    out_path: str | os.PathLike | None = None,
    *,
    pad: float = 0.0,
) -> np.ndarray:
    """Samples [start - pad, end + pad) seconds of `source`, clamped to the clip, as float32 (n,) at 16 kHz.

    `source` is anything `load_audio` takes; it is decoded only as far as the span's end. Give a Span,
    or start and end in seconds. With `out_path`, also write them as a 16-bit PCM mono 16 kHz WAV.
    Raises GroundingError for an empty or reversed span or one wholly outside the clip, and the audio
    errors of `load_audio`.
    """
    if isinstance(span_or_start, Span):
        if end is not None:
            raise TypeError("cut: give a Span or (start, end), not both")
        start, end = span_or_start.start, span_or_start.end
    elif end is None:
        raise TypeError("cut: an end time (seconds) is needed with a start time")
    else:
        start = span_or_start
    name = f"span {float(start):.2f}-{float(end):.2f} s"
    if not end > start:
        raise GroundingError(f"{name} is empty or ends before it starts")
    start, end = float(start) - pad, float(end) + pad
    clip = load_clip(source, max_samples=max(1, round(end * SAMPLE_RATE)))  # decoded only as far as the span
    samples, duration = clip.samples, clip.duration
    a, b = max(0, round(start * SAMPLE_RATE)), min(len(samples), round(end * SAMPLE_RATE))
    if a >= b:
        where = "lies outside" if end <= 0 or start >= duration else "selects no samples of"
        raise GroundingError(f"{name} {where} the clip, which lasts {duration:.2f} s")
    piece = samples[a:b].copy()
    if out_path is not None:
        save_wav(out_path, piece)  # load_audio quantised to 16 bits, so this round trip is exact
    return piece
