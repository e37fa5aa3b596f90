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
    t = transcribe(model, tokenizer, "talk.wav", timestamps=True)
    print(to_srt(t))
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .audio import N_SAMPLES, SAMPLE_RATE, AudioSource, Clip, load_clip
from .errors import EmptyAudioError, QwenAudioError
from .tokenizer import AUDIO_END, AUDIO_START, LANGUAGES

MIN_WINDOW_SAMPLES = SAMPLE_RATE // 10  # 0.1 s: a trailing remainder shorter than this holds no word
MIN_SEEK_SECONDS = 1.0  # a window is re-read from its last complete segment only if that ends this late
TASKS = ("transcribe", "translate")
_TIMESTAMP = re.compile(r"<\|(\d+\.\d+)\|>")
_NO_SPACES = ("zh", "ja")  # languages whose segments are joined without a space

# decode(start, end) -> the model's raw answer for samples [start, end) of the audio.
Decoder = Callable[[int, int], str]


@dataclass(frozen=True)
class Segment:
    """A stretch of transcript."""

    start: float  # seconds from the start of the audio
    end: float  # seconds, exclusive
    text: str  # what was said, stripped


@dataclass(frozen=True)
class Transcript:
    """The transcript of a whole recording."""

    text: str  # all segments joined
    segments: list[Segment] = field(default_factory=list)  # in time order, absolute seconds
    language: str = "en"  # the language of `text`
    duration: float = 0.0  # seconds of audio


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


def stitch(n_samples: int, decode: Decoder, *, timestamps: bool = False, language: str = "en",
           progress: bool = True) -> Transcript:
    """Run `decode(start, end)` over windows of `n_samples` and join the answers into a Transcript.

    Without timestamps the windows are `windows(n_samples)`. With timestamps each window starts where
    the previous one's last complete segment ended (at least MIN_SEEK_SECONDS later; else 30 s later).
    """
    from tqdm import tqdm

    duration = n_samples / SAMPLE_RATE
    segments: list[Segment] = []
    seek = 0
    bar = tqdm(total=round(duration, 2), unit="s", disable=not progress, file=sys.stderr, leave=False,
               desc="transcribing", bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")
    with bar:
        while seek < n_samples:
            end = min(seek + N_SAMPLES, n_samples)
            if seek > 0 and end - seek < MIN_WINDOW_SAMPLES:
                break
            length = (end - seek) / SAMPLE_RATE
            found, advance = _window_segments(decode(seek, end), length, timestamps, last=end >= n_samples)
            segments += _shift(found, seek / SAMPLE_RATE)
            step = min(max(1, round(advance * SAMPLE_RATE)), end - seek)
            seek += step
            bar.update(round(step / SAMPLE_RATE, 2))
    sep = "" if language in _NO_SPACES else " "
    return Transcript(sep.join(s.text for s in segments), segments, language, round(duration, 3))


# ---- the model --------------------------------------------------------------------------------------


class WindowDecoder:
    """decode(start, end): the model's greedy (by default) answer for one window of `samples`."""

    def __init__(self, model, tokenizer, samples: np.ndarray, prompt: str, name: str = "audio", **gen):
        from .generate import GenerationConfig

        self.model, self.tokenizer, self.samples, self.name = model, tokenizer, samples, name
        # The path inside the tags is dropped when the span is expanded: a fixed word keeps it safe.
        self.prompt = f"{AUDIO_START}window{AUDIO_END}{prompt}"
        base = getattr(model, "generation_config", None) or GenerationConfig()
        self.cfg = base.updated(**{"do_sample": False, **gen})
        self.stop = {tokenizer.eod_id, tokenizer.im_end_id, tokenizer.im_start_id, self.cfg.eos_token_id}

    def __call__(self, start: int, end: int) -> str:
        from .generate import generate
        from .llm import ntk_alpha

        clip = Clip(f"{self.name}@{start / SAMPLE_RATE:.2f}s", self.samples[start:end])
        model, cfg = self.model, self.model.config
        ids = self.tokenizer.encode(self.prompt, audio_spans=[clip.length.span])
        with torch.inference_mode():
            feats = model.transformer.audio.embed_audio(clip.mel()[None], [clip.length])
        alpha = ntk_alpha(len(ids), cfg.seq_length) if cfg.use_dynamic_ntk else 1.0
        cache = model.new_cache(1, len(ids) + self.cfg.max_new_tokens)
        tokens = torch.tensor([ids], device=model.device)
        out = []
        for t in generate(model, tokens, self.cfg, self.stop, cache=cache, audio=feats, alpha=[alpha]):
            t = int(t[0])
            if t in self.stop:
                break
            out.append(t)
        return self.tokenizer.decode(out)


def transcribe(model, tokenizer, source: AudioSource | Clip, *, language: str | None = None, timestamps: bool = False,
               progress: bool = True, task: str = "transcribe", target: str | None = None, **gen) -> Transcript:
    """Transcribe (or translate, `task="translate"`) audio of any length.

    `source` is a path, bytes, an array or a Clip. `language` is the spoken language (the task tags
    need one: default "en"; the lite backend detects it when None). `gen` overrides generation options (`max_new_tokens`,
    `do_sample`, `seed`, ...; decoding is greedy unless `do_sample=True`). With `timestamps=True`, windows
    follow the segment boundaries so no word at a window edge is lost or doubled, and segments carry
    absolute times; without, windows are cut every 30 s, which can split a word at a boundary.
    A progress bar goes to stderr unless `progress=False`. A model with its own `transcribe`
    method (the lite backend) is handed the call. Raises AudioNotFoundError and the other audio errors.
    """
    if hasattr(model, "transcribe"):
        extra = {"target": target} if target is not None else {}
        return model.transcribe(tokenizer, source, language=language, timestamps=timestamps, progress=progress,
                                task=task, **extra, **gen)
    language = language or "en"
    prompt = task_prompt(language, task=task, target=target, timestamps=timestamps)
    if not hasattr(model, "transformer"):
        raise QwenAudioError(f"{type(model).__name__} has no audio encoder and no transcribe method")
    clip = source if isinstance(source, Clip) else load_clip(source)
    if clip.length.n_tokens < 1:
        raise EmptyAudioError(f"{clip.name}: {clip.duration * 1000:.0f} ms of audio is too short to transcribe")
    decode = WindowDecoder(model, tokenizer, clip.samples, prompt, clip.name, **gen)
    out_language = target or (language if task == "transcribe" else "en")
    return stitch(len(clip.samples), decode, timestamps=timestamps, language=out_language, progress=progress)


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
    """{"text", "language", "duration", "segments": [{"start", "end", "text"}]} as indented JSON."""
    return json.dumps(asdict(t), ensure_ascii=False, indent=2) + "\n"


def to_srt(t: Transcript) -> str:
    """SubRip: numbered cues `1\\n00:00:00,000 --> 00:00:02,330\\ntext\\n`, separated by blank lines."""
    return "\n".join(f"{i}\n{cue}" for i, cue in enumerate(_cues(t, ","), 1))


def to_vtt(t: Transcript) -> str:
    """WebVTT: a `WEBVTT` header, then cues `00:00:00.000 --> 00:00:02.330\\ntext\\n`."""
    return "\n".join(["WEBVTT\n", *_cues(t, ".")])


FORMATTERS: dict[str, Callable[[Transcript], str]] = {"text": to_text, "json": to_json, "srt": to_srt, "vtt": to_vtt}
