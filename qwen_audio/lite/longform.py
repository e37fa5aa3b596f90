"""Transcripts of recordings of any length: windows of at most 30 s cut at pauses, Whisper on each.

Whisper hears 30 s at once. The recording is read (`audio.open_source`) one window at a time; a
window ends in the middle of its last pause (silero VAD) after its first 15 s, so a word is not cut
in two where the speaker pauses at all; 15 s of speech without a pause are cut at their quietest
100 ms. Whisper transcribes each window with the language fixed, and word times are shifted by the
window's start. Memory holds one window (1 MB of float32), whatever the recording's length.
"""

from __future__ import annotations

from itertools import chain
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..audio import MIN_SAMPLES, N_SAMPLES, SAMPLE_RATE, AudioSource, Clip, open_source
from ..backend import NO_SPACE_LANGUAGES, Segment, TranscribeRequest, Word
from ..errors import AudioTooShortError, EmptyAudioError, QwenAudioError
from .align import HOP, frame_db
from .asr import WhisperASR
from .vad import VadConfig, speech_chunks

TASKS = ("transcribe", "translate")
WINDOW = N_SAMPLES  # the most Whisper hears at once
MIN_WINDOW = N_SAMPLES // 2  # a window that more audio follows is cut no earlier than this
QUIET_FRAMES = 10  # 100 ms: the stretch of least energy a window is cut in when it has no pause
NO_SPEECH_LANGUAGE = "en"  # the language said for a recording in which VAD finds no speech at all
SENTENCE_END = tuple(".?!。？！")
ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "jr.", "sr.", "vs.", "e.g.", "i.e."})  # no end
MAX_GAP_S = 1.0  # a pause longer than this ends a segment
MAX_SEGMENT_S = 15.0  # a segment ends at the first word past this length

# One window: (its first sample in the recording, float32 samples [n] at 16 kHz).
Window = tuple[int, np.ndarray]


def cut_point(samples: np.ndarray, chunks: Sequence[dict], min_cut: int) -> int:
    """Where a window of `samples` that more audio follows should end, as a sample index.

    `chunks` are silero's speech chunks of `samples` ({"start", "end"} samples, padded): the cut is in
    the last silence (before, between or after them) that reaches past `min_cut`, at its middle or
    at `min_cut` if the middle comes earlier. Without such a silence: the middle of the quietest
    100 ms after `min_cut`. Without speech: the end.
    """
    n = len(samples)
    if not chunks:
        return n
    edges = [0] + [x for c in chunks for x in (c["start"], c["end"])] + [n]
    silences = [(a, b) for a, b in zip(edges[0::2], edges[1::2]) if b > a and b > min_cut]
    if silences:
        a, b = silences[-1]
        return max((a + b) // 2, min_cut)
    db = frame_db(samples[min_cut:])[: (n - min_cut) // HOP]
    if len(db) < QUIET_FRAMES:
        return n
    smooth = np.convolve(db, np.ones(QUIET_FRAMES) / QUIET_FRAMES, mode="valid")
    return min_cut + (int(np.argmin(smooth)) + QUIET_FRAMES // 2) * HOP


class PauseWindows:
    """Consecutive windows of everything `read(n)` gives (up to n more float32 samples, fewer only at
    the end), each at most WINDOW long and cut at a pause (`cut_point`). Holds one window at a time."""

    def __init__(self, read: Callable[[int], np.ndarray], vad: VadConfig = VadConfig()):
        self._read, self._vad = read, vad
        self.n_read = 0  # samples read so far: all of them once the last window has been given

    def __iter__(self) -> Iterator[Window]:
        buffer, start = np.zeros(0, np.float32), 0
        while True:
            more = self._read(WINDOW + 1 - len(buffer))  # one sample past a window says whether more follow
            self.n_read += len(more)
            buffer = np.concatenate([buffer, more])
            if len(buffer) <= WINDOW:  # the end of the recording: the rest is the last window
                if len(buffer):
                    yield start, buffer
                return
            window = buffer[:WINDOW]
            cut = cut_point(window, speech_chunks(window, self._vad), MIN_WINDOW)
            yield start, buffer[:cut]
            buffer, start = buffer[cut:], start + cut


def segments_of(words: Sequence[Word], language: str) -> list[Segment]:
    """Words grouped into segments, each ending at a sentence's end (not at "Mr."), before a pause of over
    MAX_GAP_S, or at the first word past MAX_SEGMENT_S. Text is joined without spaces in NO_SPACE_LANGUAGES."""
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    out, current = [], []
    for i, w in enumerate(words):
        current.append(w)
        nxt = words[i + 1] if i + 1 < len(words) else None
        sentence_end = w.text.endswith(SENTENCE_END) and w.text.lower() not in ABBREVIATIONS
        if nxt is None or sentence_end or nxt.start - w.end > MAX_GAP_S or w.end - current[0].start > MAX_SEGMENT_S:
            out.append(Segment(current[0].start, w.end, sep.join(x.text for x in current), tuple(current)))
            current = []
    return out


def check_request(request: TranscribeRequest, languages: Iterable[str]) -> None:
    """QwenAudioError for what Whisper cannot do: other tasks, unknown languages, translation into
    anything but English."""
    if request.task not in TASKS:
        raise QwenAudioError(f"unknown task {request.task!r}; use one of {', '.join(TASKS)}")
    if request.task == "translate" and request.target not in (None, "en"):
        raise QwenAudioError(f"the lite model translates into English only, not {request.target!r}")
    known = set(languages)
    for lang in (request.language, request.target):
        if lang is not None and lang not in known:
            raise QwenAudioError(f"unknown language {lang!r}; Whisper knows {', '.join(sorted(known))}")
    if request.task == "transcribe" and request.language is not None and request.target not in (None, request.language):
        raise QwenAudioError(f"the lite model writes {request.language!r} speech in {request.language!r}; "
                             "use task='translate' for English text")


def _open(source: AudioSource | Clip) -> tuple[str, Callable[[int], np.ndarray], Callable[[], None], float | None]:
    """(name, read(n), close(), total seconds if known) of a source, read as it is transcribed."""
    if isinstance(source, Clip):
        samples, pos = source.samples, 0

        def read(n: int) -> np.ndarray:
            nonlocal pos
            pos += n
            return samples[pos - n:pos]

        return source.name, read, lambda: None, source.duration
    reader = open_source(source)
    return reader.name, reader.read, reader.close, reader.total_seconds


def transcribe_long(asr: WhisperASR, source: AudioSource | Clip, request: TranscribeRequest, *,
                    greedy: bool = True) -> tuple[str, Iterator[Segment], Callable[[], float], float | None]:
    """The lite backend's `_transcribe`: (language of the text, segments, duration(), total seconds).

    The request is checked and the first window read now, so a bad request or file fails before any
    segment; with `request.language` None the language is told by the first window with speech.
    Segments are absolute and carry their words' times. `greedy` False: Whisper's temperature fallback.
    """
    check_request(request, asr.model.supported_languages)
    name, read, close, total = _open(source)
    windows = PauseWindows(read, asr.vad)
    rest = iter(windows)
    try:
        first = next(rest, None)
        if first is None:
            raise EmptyAudioError(f"{name}: the audio is empty (no samples)")
        if windows.n_read < MIN_SAMPLES:
            raise AudioTooShortError(f"{name}: {1000 * windows.n_read / SAMPLE_RATE:.0f} ms of audio is too short "
                                     f"to transcribe; at least {1000 * MIN_SAMPLES // SAMPLE_RATE} ms are needed")
        language, ahead = request.language, [first]
        if language is None:
            language, ahead = _detect(asr, chain(ahead, rest))
            if request.task == "transcribe" and request.target not in (None, language):
                raise QwenAudioError(f"{name}: the speech is in {language!r} and the lite model writes it in "
                                     f"{language!r}, not {request.target!r}; use task='translate' for English text")
    except BaseException:
        close()
        raise
    text_language = "en" if request.task == "translate" else language
    segments = _segments(asr, chain(ahead, rest), request.task, language, text_language, greedy, close)
    return text_language, segments, lambda: windows.n_read / SAMPLE_RATE, total


def _detect(asr: WhisperASR, windows: Iterator[Window]) -> tuple[str, list[Window]]:
    """(language, [the first window with speech]): windows before it hold no speech and are dropped;
    a recording with no speech at all is said to be NO_SPEECH_LANGUAGE."""
    for start, samples in windows:
        chunks = speech_chunks(samples, asr.vad)
        if chunks:
            return asr.detect_language(samples, chunks)[0], [(start, samples)]
    return NO_SPEECH_LANGUAGE, []


def _segments(asr: WhisperASR, windows: Iterator[Window], task: str, language: str, text_language: str,
              greedy: bool, close: Callable[[], None]) -> Iterator[Segment]:
    try:
        for start, samples in windows:
            heard = asr.transcribe(samples, task=task, language=language, greedy=greedy)
            offset = start / SAMPLE_RATE
            words = [Word(w.text, round(w.start + offset, 3), round(w.end + offset, 3)) for w in heard.words]
            if words:
                yield from segments_of(words, text_language)
            elif heard.has_speech:  # text without word times: one segment over the speech
                (a, _), (_, b) = heard.regions[0], heard.regions[-1]
                yield Segment(round(a + offset, 3), round(b + offset, 3), heard.text)
    finally:
        close()
