"""Transcription of audio of any length: consecutive 30 s windows, stitched into one transcript.

The model hears at most 30 s at once. `transcribe` prompts the base-model ASR task (SPEC.md, raw format,
no ChatML) on one window at a time:

    <audio>...</audio><|startoftranscript|><|en|><|transcribe|><|en|><|timestamps|><|wo_itn|>

With timestamps the answer is a run of `<|a.bc|>text<|d.ef|>` segments, seconds from the window's
start. A word cut by the window's end comes back without its closing timestamp, so the next window
starts at the end of the last COMPLETE segment (Whisper's seek strategy): edge words are heard
whole, once. Without timestamps there is nothing to seek by: windows follow each other every 30 s
and a word that straddles a boundary can be cut in two.

    model, tokenizer = qwen_audio.load(path)
    t = transcribe(model, tokenizer, "talk.wav", timestamps=True)     # or model.transcribe(...)
    print(to_srt(t))

The file is read as the windows need it (`Windows`), so memory stays bounded for any length.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Callable, Iterator

import numpy as np
import torch

from .audio import MIN_SAMPLES, N_SAMPLES, SAMPLE_RATE, AudioSource, Clip, open_source
from .backend import Segment, TranscribeRequest, Transcript
from .errors import AudioTooShortError, EmptyAudioError, QwenAudioError
from .messages import Audio, Text
from .tokenizer import AUDIO_SPECIAL_TOKENS, LANGUAGES, encode_parts

MIN_WINDOW_SAMPLES = SAMPLE_RATE // 10  # 0.1 s: a trailing remainder shorter than this holds no word
MIN_SEEK_SECONDS = 1.0  # a window is re-read from its last complete segment only if that ends this late
TASKS = ("transcribe", "translate")
_TIMESTAMP = re.compile(r"<\|(\d+\.\d+)\|>")

# decode(start, end) -> the model's raw answer for samples [start, end) of the audio.
Decoder = Callable[[int, int], str]
__all__ = ["Segment", "Transcript", "Windows", "WindowDecoder", "stitch", "task_prompt", "transcribe", "windows",
           "FORMATTERS", "to_text", "to_json", "to_srt", "to_vtt"]


# ---- prompts and windows ---------------------------------------------------------------------------


def task_prompt(language: str = "en", *, task: str = "transcribe", target: str | None = None,
                timestamps: bool = False) -> str:
    """The base model's task tags after the audio, e.g. `<|startoftranscript|><|en|><|transcribe|>...`.

    `language` is the spoken language; `target` the language of the text (default: `language` to
    transcribe, "en" to translate).
    """
    target = target or (language if task == "transcribe" else "en")
    for lang in (language, target):
        if lang not in LANGUAGES:
            raise QwenAudioError(f"unknown language {lang!r}; the model knows {', '.join(LANGUAGES)}")
    if task not in TASKS:
        raise QwenAudioError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    stamps = "<|timestamps|>" if timestamps else "<|notimestamps|>"
    itn = "<|wo_itn|>" if task == "transcribe" else "<|itn|>"
    return f"<|startoftranscript|><|{language}|><|{task}|><|{target}|>{stamps}{itn}"


def windows(n_samples: int, size: int = N_SAMPLES, min_samples: int = MIN_WINDOW_SAMPLES) -> list[tuple[int, int]]:
    """Consecutive [start, end) sample ranges of at most `size` covering `n_samples`; a last remainder
    shorter than `min_samples` is left out (unless it is the only window)."""
    out = [(s, min(s + size, n_samples)) for s in range(0, n_samples, size)]
    if len(out) > 1 and out[-1][1] - out[-1][0] < min_samples:
        out.pop()
    return out


# ---- reading one window's answer -----------------------------------------------------------------


def parse_timestamped(text: str) -> tuple[list[Segment], Segment | None]:
    """Split an answer with timestamp tokens into (complete segments, unfinished tail), window-relative.

    Text between two timestamps is a complete segment; text before the first one starts at 0. Text
    after the last timestamp has no end yet: it is returned as the tail (end = start) or None when
    there is none. Empty stretches (`<|2.50|><|2.50|>`) make no segment.
    """
    parts = _TIMESTAMP.split(text)
    texts, times = parts[0::2], [float(t) for t in parts[1::2]]
    segments = []
    for k, time in enumerate(times):
        body = texts[k].strip()
        start = times[k - 1] if k > 0 else 0.0
        if body:
            segments.append(Segment(start, max(start, time), body))
    tail_start = times[-1] if times else 0.0
    tail = texts[-1].strip()
    return segments, (Segment(tail_start, tail_start, tail) if tail else None)


def _window_segments(text: str, length: float, timestamps: bool, last: bool) -> tuple[list[Segment], float]:
    """(segments relative to the window, seconds to advance) for one window's answer.

    `length` is the window's duration; `last` says that it reaches the end of the audio.
    """
    if not timestamps:
        body = text.strip()
        return ([Segment(0.0, length, body)] if body else []), length
    complete, tail = parse_timestamped(text)
    complete = [Segment(min(s.start, length), min(s.end, length), s.text) for s in complete]
    seek = complete[-1].end if complete else 0.0
    if not last and seek >= MIN_SEEK_SECONDS:
        return complete, seek  # the unfinished tail is heard again, whole, in the next window
    # The end of the audio, or nothing to seek by: keep the tail too, up to the window's end.
    if tail is not None:
        complete.append(Segment(min(tail.start, length), length, tail.text))
    return complete, length


def _shift(segments: list[Segment], seconds: float) -> list[Segment]:
    return [Segment(round(s.start + seconds, 3), round(s.end + seconds, 3), s.text) for s in segments]


class Windows:
    """The samples of a recording, read as windows need them: memory holds only the samples from the
    current window's start to the furthest read (about 30 s), whatever the recording's length."""

    def __init__(self, read: Callable[[int], np.ndarray]):
        self._read = read  # read(n) -> up to n more float32 samples, fewer only at the end
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # the absolute index of _buffer[0]
        self._eof = False

    @classmethod
    def of(cls, samples: np.ndarray) -> "Windows":
        """Windows over samples already in memory."""
        pos = 0

        def read(n: int) -> np.ndarray:
            nonlocal pos
            pos += n
            return samples[pos - n:pos]

        return cls(read)

    @property
    def n_read(self) -> int:
        """Samples read so far (all of them once the last window has been seen)."""
        return self._offset + len(self._buffer)

    def extent(self, seek: int) -> tuple[int, bool]:
        """(end, last) of the window starting at sample `seek`: at most N_SAMPLES long; `last` when no
        sample follows it."""
        want = seek + N_SAMPLES + 1 - self.n_read  # one more than the window tells whether it is the last
        if want > 0 and not self._eof:
            more = self._read(want)
            self._eof = len(more) < want
            self._buffer = np.concatenate([self._buffer, more])
        end = min(seek + N_SAMPLES, self.n_read)
        return end, self._eof and end >= self.n_read

    def samples(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._offset:end - self._offset]

    def release(self, before: int) -> None:
        """Forget the samples before `before` (windows never go back)."""
        drop = min(max(0, before - self._offset), len(self._buffer))
        self._buffer, self._offset = self._buffer[drop:], self._offset + drop


def stitch(source: Windows, decode: Decoder, *, timestamps: bool = False) -> Iterator[Segment]:
    """Run `decode(start, end)` over the windows of `source` and yield the segments, in absolute seconds.

    Without timestamps windows follow each other every 30 s. With timestamps each window starts where
    the previous one's last complete segment ended (at least MIN_SEEK_SECONDS later; else 30 s later).
    """
    seek = 0
    while True:
        end, last = source.extent(seek)
        if end <= seek or (seek > 0 and end - seek < MIN_WINDOW_SAMPLES):
            return
        length = (end - seek) / SAMPLE_RATE
        found, advance = _window_segments(decode(seek, end), length, timestamps, last=last)
        yield from _shift(found, seek / SAMPLE_RATE)
        seek += min(max(1, round(advance * SAMPLE_RATE)), end - seek)
        source.release(seek)


# ---- the model --------------------------------------------------------------------------------------


class WindowDecoder:
    """decode(start, end): the model's answer (greedy unless the options sample) for one window."""

    def __init__(self, engine, tokenizer, source: Windows, prompt: str, cfg, name: str = "audio"):
        self.engine, self.tokenizer, self.source, self.cfg, self.name = engine, tokenizer, source, cfg, name
        self.prompt = Text(prompt, frozenset(AUDIO_SPECIAL_TOKENS))  # the task tags are tokens

    def prompt_ids(self, span: int) -> list[int]:
        """`<audio>` + pad x (span - 2) + `</audio>`, then the task tags."""
        return encode_parts(self.tokenizer, [Audio(b""), self.prompt], lambda _: span)

    def __call__(self, start: int, end: int) -> str:
        clip = Clip(f"{self.name}@{start / SAMPLE_RATE:.2f}s", self.source.samples(start, end))
        with torch.inference_mode():
            feats = self.engine.model.embed_audio(clip.mel()[None], [clip.length])
        ids = self.engine.complete(self.tokenizer, self.prompt_ids(clip.length.span), feats, self.cfg)
        return self.tokenizer.decode(ids)


def open_windows(source: AudioSource | Clip) -> tuple[str, Windows, float | None]:
    """(name, windows, total seconds if known) of a recording, its first window read now: a bad or too short
    file fails here, before any segment."""
    if isinstance(source, Clip):
        name, windows, total = source.name, Windows.of(source.samples), source.duration
    else:
        reader = open_source(source)
        name, windows, total = reader.name, Windows(reader.read), reader.total_seconds
    end, _ = windows.extent(0)
    if end == 0:
        raise EmptyAudioError(f"{name}: the audio is empty (no samples)")
    if end < MIN_SAMPLES:
        raise AudioTooShortError(f"{name}: {1000 * end / SAMPLE_RATE:.0f} ms of audio is too short to transcribe; "
                                 f"at least {1000 * MIN_SAMPLES // SAMPLE_RATE} ms are needed")
    return name, windows, total


def transcribe_windows(engine, tokenizer, source: AudioSource | Clip, request: TranscribeRequest, cfg):
    """The faithful backend's `_transcribe`: the base model's task prompt over windows of `source`."""
    language = request.language or "en"
    prompt = task_prompt(language, task=request.task, target=request.target, timestamps=request.timestamps)
    name, windows, total = open_windows(source)
    decode = WindowDecoder(engine, tokenizer, windows, prompt, cfg, name)
    out_language = request.target or (language if request.task == "transcribe" else "en")
    return (out_language, stitch(windows, decode, timestamps=request.timestamps),
            lambda: windows.n_read / SAMPLE_RATE, total)


def transcribe(model, tokenizer, source: AudioSource | Clip, *, language: str | None = None, timestamps: bool = False,
               progress: bool = True, task: str = "transcribe", target: str | None = None, **options) -> Transcript:
    """Transcribe (or translate, `task="translate"`) audio of any length with any backend: `model.transcribe`.

    `source` is a path, bytes, an array, (array, rate) or a Clip. `language` is the spoken language
    (the faithful model's task tags need one: default "en"; the lite backend detects it when None).
    `options` override generation options (`max_new_tokens`, `do_sample`, `seed`, ...; decoding is
    greedy unless `do_sample=True`). With `timestamps=True`, windows follow the segment boundaries so
    no word at a window edge is lost or doubled, and segments carry absolute times; without, windows
    are cut every 30 s, which can split a word at a boundary. A progress bar goes to stderr unless
    `progress=False`. Raises AudioNotFoundError and the other audio errors.
    """
    return model.transcribe(tokenizer, source, language=language, timestamps=timestamps, progress=progress,
                            task=task, target=target, **options)


# ---- output formats ------------------------------------------------------------------------------------


def _clock(seconds: float, sep: str) -> str:
    """`00:00:02,330` (sep ",", SRT) or `00:00:02.330` (sep ".", VTT)."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(t: Transcript, sep: str) -> Iterator[str]:
    for s in t.segments:
        yield f"{_clock(s.start, sep)} --> {_clock(s.end, sep)}\n{s.text}\n"


def to_text(t: Transcript) -> str:
    """The plain transcript, one line."""
    return t.text + "\n"


def to_json(t: Transcript) -> str:
    """{"text", "language", "duration", "segments": [{"start", "end", "text"(, "words")}]} as indented JSON;
    a segment has "words" [{"text", "start", "end"}] where the backend gave word times."""
    d = asdict(t)
    for seg in d["segments"]:
        if not seg["words"]:
            del seg["words"]
    return json.dumps(d, ensure_ascii=False, indent=2) + "\n"


def to_srt(t: Transcript) -> str:
    """SubRip: numbered cues `1\\n00:00:00,000 --> 00:00:02,330\\ntext\\n`, separated by blank lines."""
    return "\n".join(f"{i}\n{cue}" for i, cue in enumerate(_cues(t, ","), 1))


def to_vtt(t: Transcript) -> str:
    """WebVTT: a `WEBVTT` header, then cues `00:00:00.000 --> 00:00:02.330\\ntext\\n`."""
    return "\n".join(["WEBVTT\n", *_cues(t, ".")])


FORMATTERS: dict[str, Callable[[Transcript], str]] = {"text": to_text, "json": to_json, "srt": to_srt, "vtt": to_vtt}
