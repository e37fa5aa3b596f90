"""The interface every backend implements, and the types it answers with.

    response, history = model.chat(tokenizer, query, history)     # the tutorial's API (tags in text)
    stream = model.respond([Message("user", [Audio(data), Text("what is it?")])])   # text is only text
    transcript = model.transcribe(tokenizer, "talk.mp3", timestamps=True)

`Backend` implements the public methods once (argument checks, history copies, option validation,
streams, timings); a backend supplies three primitives: `_answer`, `_answer_batch` and `_transcribe`,
and may supply `_sound_events` (by default an OptionError: the model names no sounds). Nothing above
this interface asks which backend it has: a capability a backend lacks is an OptionError when used.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Generator, Iterator, Sequence

from .errors import PromptError
from .messages import Audio, Conversation, Message, copy_history, structured_conversation, tutorial_conversation
from .options import GenerationConfig, OptionError
from .tokenizer import DEFAULT_SYSTEM

History = list[tuple[str, str]]
# Keyword arguments of the published `chat` that are accepted and mean nothing here.
_IGNORED_CHAT_KWARGS = ("stream", "append_history")


@dataclass(frozen=True)
class TurnStats:
    """What one answer cost."""

    prompt_tokens: int  # tokens in the prompt (0 for answers composed without a language model)
    reused_tokens: int  # prompt tokens whose keys/values came from a cache
    new_tokens: int  # tokens generated
    stop_reason: str  # "stop" (a stop token or the answer's end) or "length" (max_new_tokens)
    first_text_s: float | None = None  # seconds from the call to the first piece of text
    total_s: float | None = None  # seconds from the call to the end of the answer


# An answer in progress: text pieces, then its TurnStats as the generator's return value. A backend's
# generator also ends early, returning its TurnStats, when StopAnswer is thrown in at a piece.
Pieces = Generator[str, None, TurnStats]


class StopAnswer(Exception):
    """Thrown into an answer's generator to end it at once (a stop string was written): the generator
    hands back what it holds and returns its TurnStats with stop_reason "stop"."""


class PieceFilter(ABC):
    """What a wrapper does to an answer's text as it streams (see `filtered`): `push(piece)` returns what
    may be shown now, `end(stats)` what is left to show once the answer has ended; `stopped` set by
    `push` ends the answer there."""

    stopped = False

    @abstractmethod
    def push(self, piece: str) -> str: ...

    @abstractmethod
    def end(self, stats: TurnStats) -> str: ...


def filtered(pieces: Pieces, f: PieceFilter) -> Pieces:
    """`pieces` through `f`. The one place where a wrapper of an answer ends it (StopAnswer, thrown in by
    `f` or by a wrapper around this one, goes to `pieces`, which hands back what it holds and returns its
    TurnStats) and closes it however the wrapper itself is left."""
    try:
        while True:
            try:
                piece = next(pieces)
            except StopIteration as done:
                tail = f.end(done.value)
                try:
                    if tail:
                        yield tail
                except StopAnswer:
                    return replace(done.value, stop_reason="stop")
                return done.value
            shown = f.push(piece)
            try:
                if shown:
                    yield shown
            except StopAnswer:
                return end_answer(pieces)
            if f.stopped:
                return end_answer(pieces)
    finally:
        pieces.close()


def end_answer(pieces: Pieces) -> TurnStats:
    """End an answer now: StopAnswer thrown into its generator, which returns its TurnStats."""
    try:
        pieces.throw(StopAnswer())
    except StopIteration as done:
        return replace(done.value, stop_reason="stop")
    raise RuntimeError("an answer's generator went on after StopAnswer")


class StopMatcher(PieceFilter):
    """Cut streamed text before the first of the `stop` strings: `push(piece)` returns what may be shown
    now, holding back a tail that could begin a stop string; `stopped` says one was found."""

    def __init__(self, stop: Sequence[str]):
        self.stop, self.held, self.stopped = tuple(stop), "", False
        self.hold = max((len(s) for s in self.stop), default=1) - 1

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self.held + piece
        found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if found:
            self.stopped, self.held = True, ""
            return text[:min(found)]
        keep = max(0, len(text) - self.hold)
        self.held = text[keep:]
        return text[:keep]

    def end(self, stats: TurnStats) -> str:
        out, self.held = self.held, ""
        return out


def stop_at(pieces: Pieces, stop: Sequence[str]) -> Pieces:
    """`pieces` ended before the first stop string; the answer is ended (StopAnswer) as soon as it is seen."""
    return filtered(pieces, StopMatcher(stop))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first of the stop strings."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(found)] if found else text


class ChatStream:
    """An answer as it is written: iterate for text pieces; afterwards `.response`, `.history`, `.stats`.

    The pieces concatenate to `.response` and never split a character. `close()` (or leaving a
    `with` block) ends the answer at once and hands back what it holds (caches, memory); a closed
    stream keeps the text written so far in `.response` and has no `.history` or `.stats`.
    `cancel()` may be called from any thread (a server's timeout or disconnect): the model stops
    writing the answer at its next step, and the reader's loop ends as if it had closed the stream.
    """

    def __init__(self, pieces: Pieces, history: Callable[[str], list], started: float | None = None,
                 cancel: threading.Event | None = None):
        self._pieces, self._history = pieces, history
        self._cancel = threading.Event() if cancel is None else cancel
        self._started = time.perf_counter() if started is None else started
        self._text: list[str] = []
        self._state = "new"  # new -> reading -> done | closed
        self.response: str | None = None
        self.history: list | None = None
        self.stats: TurnStats | None = None

    def __iter__(self) -> Iterator[str]:
        if self._state != "new":
            return
        self._state = "reading"
        first = None
        while self._state == "reading":
            if self._cancel.is_set():
                self.close()
                return
            try:
                piece = next(self._pieces)
            except StopIteration as stop:
                if self._cancel.is_set():  # it ended because it was cancelled: not a whole answer
                    self.close()
                    return
                done = time.perf_counter()
                self.response = "".join(self._text)
                self.history = self._history(self.response)
                self.stats = replace(stop.value, first_text_s=first, total_s=round(done - self._started, 4))
                self._state = "done"
                return
            if first is None:
                first = round(time.perf_counter() - self._started, 4)
            self._text.append(piece)
            try:
                yield piece
            except GeneratorExit:  # the reader left the loop: hand back at once, not when collected
                self.close()
                raise

    def cancel(self) -> None:
        """Ask, from any thread, that the answer end at the model's next step (the reader's loop then ends)."""
        self._cancel.set()

    def close(self) -> None:
        """Stop the answer now and release what it holds (from the reading thread). Safe to call more than once."""
        if self._state in ("new", "reading"):
            self._state = "closed"
            self._pieces.close()
            self.response = "".join(self._text)

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ChatStream({self._state}, {len(self._text)} pieces)"


# ---- transcripts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """One word of a transcript, with its times."""

    text: str
    start: float  # seconds from the start of the audio
    end: float  # seconds, exclusive


@dataclass(frozen=True)
class Segment:
    """A stretch of transcript."""

    start: float  # seconds from the start of the audio
    end: float  # seconds, exclusive
    text: str  # what was said, stripped
    words: tuple[Word, ...] = ()  # word times, where the backend knows them


@dataclass(frozen=True)
class Transcript:
    """The transcript of a whole recording."""

    text: str  # all segments joined
    segments: list[Segment] = field(default_factory=list)  # in time order, absolute seconds
    language: str = "en"  # the language of `text`
    duration: float = 0.0  # seconds of audio

    def to_dict(self) -> dict:
        return asdict(self)


NO_SPACE_LANGUAGES = ("zh", "ja", "yue")  # languages whose segments are joined without a space


def join_segments(segments: Sequence[Segment], language: str) -> str:
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    return sep.join(s.text for s in segments if s.text)


@dataclass(frozen=True)
class TranscribeRequest:
    """What `transcribe` was asked for (checked by the backend before any audio is read)."""

    language: str | None = None  # the spoken language; None: the backend's default or detection
    task: str = "transcribe"  # or "translate"
    target: str | None = None  # the language of the text (default: `language`, "en" when translating)
    timestamps: bool = False  # segment times that follow the speech; windows follow segment ends


class TranscriptStream:
    """Segments as they are transcribed; afterwards `.transcript`. `language` is known from the start."""

    def __init__(self, language: str, segments: Iterator[Segment], duration: Callable[[], float],
                 total: float | None = None, progress: bool = False):
        self.language = language
        self._segments, self._duration, self._total, self._progress = segments, duration, total, progress
        self._got: list[Segment] = []
        self._cancel = threading.Event()
        self.transcript: Transcript | None = None

    def __iter__(self) -> Iterator[Segment]:
        if self.transcript is not None:
            return
        bar = _progress_bar(self._total, self._progress)
        try:
            for s in self._segments:
                if self._cancel.is_set():
                    self.close()
                    return
                self._got.append(s)
                bar.update(max(0.0, round(s.end - bar.n, 2)))
                yield s
        finally:
            bar.close()
        self.transcript = Transcript(join_segments(self._got, self.language), list(self._got), self.language,
                                     round(self._duration(), 3))

    def cancel(self) -> None:
        """Ask, from any thread, that transcription end before its next segment."""
        self._cancel.set()

    def close(self) -> None:
        close = getattr(self._segments, "close", None)
        if close is not None:
            close()

    def collect(self) -> Transcript:
        for _ in self:
            pass
        return self.transcript


@dataclass(frozen=True)
class SoundEvent:
    """A named sound heard in a clip (breaking glass, laughter, a piano), over one stretch of time."""

    label: str  # what is heard, as an answer names it: "breaking glass", "laughter", "piano"
    start: float  # seconds from the start of the audio
    end: float  # seconds, exclusive
    score: float  # how sure the detector is (0-1), the same for every stretch of one sound

    def to_dict(self) -> dict:
        return asdict(self)


def _progress_bar(total: float | None, enabled: bool):
    import sys

    from tqdm import tqdm

    if total:
        return tqdm(total=round(total, 2), unit="s", disable=not enabled, file=sys.stderr, leave=False, desc="transcribing",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")
    # A container that states no length: how far it has got, without a percentage.
    return tqdm(total=None, unit="s", disable=not enabled, file=sys.stderr, leave=False, desc="transcribing",
                bar_format="{desc}: {n:.1f} s [{elapsed}]")


# ---- the interface ---------------------------------------------------------------------------------------


class Backend(ABC):
    """Chat about audio and transcribe it. Subclasses implement `_answer`, `_answer_batch`, `_transcribe`
    and `default_tokenizer`; everything public is here, once."""

    generation_config: GenerationConfig

    # -- what a backend implements -----------------------------------------------------------------

    @abstractmethod
    def default_tokenizer(self):
        """The tokenizer to use when the caller gives none (structured messages)."""

    @abstractmethod
    def _answer(self, tokenizer, conversation: Conversation, cfg: GenerationConfig, cancel: threading.Event) -> Pieces:
        """Prepare the answer to `conversation` (decode and check its audio, build its prompt: errors are
        raised here, before any text) and return the generator that writes it. `cancel` is set (from any
        thread) when the answer is no longer wanted: a backend that computes between pieces stops there."""

    def _answer_batch(self, tokenizer, conversations: Sequence[Conversation], cfg: GenerationConfig) -> list[str]:
        """Answers to several conversations; by default one after another. Every conversation is prepared
        (and checked) before the first answer starts."""
        prepared = []
        try:
            for c in conversations:
                prepared.append(self._answer(tokenizer, c, cfg, threading.Event()))
            return ["".join(pieces) for pieces in prepared]
        finally:
            for pieces in prepared:
                pieces.close()

    @abstractmethod
    def _transcribe(self, tokenizer, source, request: TranscribeRequest,
                    cfg: GenerationConfig) -> tuple[str, Iterator[Segment], Callable[[], float], float | None]:
        """Check `request` and open `source`, then return (language of the text, segment iterator,
        duration() once read, total seconds if known up front). The audio is read as it is transcribed."""

    def _sound_events(self, audio: Audio) -> list[SoundEvent]:
        """The named sounds in `audio`, in any order. By default none can be named: an OptionError,
        raised before the audio is read."""
        raise OptionError("this model does not report sound events (the lite backend does: "
                          "qwen_audio.load(\"lite\"), or `qwen-audio serve --model lite`)")

    def concurrency(self) -> int:
        """How many answers are worth writing at once from threads of one process (batch runs and servers
        size their thread pools by it): by default the cores, at most 4."""
        return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))

    # -- options ---------------------------------------------------------------------------------------

    def options(self, generation_config: GenerationConfig | None = None, **overrides) -> GenerationConfig:
        """The options of one call: `generation_config` (default: the model's) with `overrides` applied."""
        cfg = self.generation_config if generation_config is None else generation_config
        if not isinstance(cfg, GenerationConfig):
            raise OptionError(f"generation_config must be a qwen_audio.GenerationConfig, got {type(cfg).__name__}")
        overrides = {k: v for k, v in overrides.items() if k not in _IGNORED_CHAT_KWARGS}
        return cfg.updated(**overrides)  # a copy even with no overrides: a later assignment to a field of the
        # model's config must not reach an answer already being written

    # -- the tutorial's API ----------------------------------------------------------------------------

    def chat(self, tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None,
             system: str = DEFAULT_SYSTEM, generation_config: GenerationConfig | None = None,
             **options) -> tuple[str, History]:
        """Answer `query` given `history`; returns (response, history + [(query, response)]).

        `<audio>path</audio>` tags in the strings name clips (use `tokenizer.from_list_format`).
        The caller's history is never changed. Keyword arguments override the generation options for
        this call (`do_sample=False`, `max_new_tokens=...`, `top_p`, `temperature`, `seed`, ...).
        """
        stream = self.chat_stream(tokenizer, query, history, system, generation_config, **options)
        for _ in stream:
            pass
        return stream.response, stream.history

    def chat_stream(self, tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None,
                    system: str = DEFAULT_SYSTEM, generation_config: GenerationConfig | None = None,
                    **options) -> ChatStream:
        """`chat` as text pieces while they are written: `for piece in stream`, then `stream.history`.
        Bad audio, a bad prompt or a bad option raises here, before any text."""
        started = time.perf_counter()
        cfg = self.options(generation_config, **options)
        history = copy_history(history)
        conversation = tutorial_conversation(query, history, system)
        cancel = threading.Event()
        pieces = self._answer(tokenizer if tokenizer is not None else self.default_tokenizer(), conversation, cfg,
                              cancel)
        return ChatStream(stop_at(pieces, cfg.stop) if cfg.stop else pieces,
                          lambda response: history + [(query, response)], started, cancel)

    def chat_batch(self, tokenizer, queries: Sequence[str], histories: Sequence | None = None,
                   system: str = DEFAULT_SYSTEM, generation_config: GenerationConfig | None = None,
                   **options) -> list[tuple[str, History]]:
        """Answer several conversations at once; each gets what `chat` would give it alone."""
        queries = list(queries)
        histories = [copy_history(h) for h in histories] if histories is not None else [[] for _ in queries]
        if len(histories) != len(queries):
            raise PromptError(f"{len(queries)} queries but {len(histories)} histories")
        cfg = self.options(generation_config, **options)
        conversations = [tutorial_conversation(q, h, system) for q, h in zip(queries, histories)]
        if not conversations:
            return []
        tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()
        responses = [cut_at_stop(r, cfg.stop) for r in self._answer_batch(tokenizer, conversations, cfg)]
        return [(r, h + [(q, r)]) for q, h, r in zip(queries, histories, responses)]

    # -- structured messages ---------------------------------------------------------------------------

    def respond(self, messages: Sequence[Message], generation_config: GenerationConfig | None = None,
                **options) -> ChatStream:
        """Answer structured messages (see `qwen_audio.messages`): audio only as `Audio` parts, text only
        text. The stream's `.history` is `messages` plus the assistant's answer."""
        started = time.perf_counter()
        cfg = self.options(generation_config, **options)
        messages = list(messages)
        conversation = structured_conversation(messages, DEFAULT_SYSTEM)
        for clip in conversation.clips():
            if clip.is_url():
                raise PromptError(f"audio {clip.label!r} is a URL: structured messages take paths, bytes or "
                                  "arrays; fetching is the caller's decision")
        cancel = threading.Event()
        pieces = self._answer(self.default_tokenizer(), conversation, cfg, cancel)
        return ChatStream(stop_at(pieces, cfg.stop) if cfg.stop else pieces,
                          lambda response: messages + [Message("assistant", response)], started, cancel)

    # -- transcription ---------------------------------------------------------------------------------

    def transcribe_stream(self, tokenizer, source, *, language: str | None = None, timestamps: bool = False,
                          task: str = "transcribe", target: str | None = None, progress: bool = False,
                          generation_config: GenerationConfig | None = None, **options) -> TranscriptStream:
        """Segments of a recording of any length as they are transcribed (`task="translate"`: into
        English). The file is read window by window, so memory stays bounded. Decoding is greedy unless
        `do_sample=True`. Errors in the request or the audio's start raise here, before any segment."""
        cfg = self.options(generation_config, **{"do_sample": False, **options})
        request = TranscribeRequest(language, task, target, bool(timestamps))
        tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()
        out_language, segments, duration, total = self._transcribe(tokenizer, source, request, cfg)
        return TranscriptStream(out_language, segments, duration, total, progress)

    # -- sound events --------------------------------------------------------------------------------

    def sound_events(self, audio) -> list[SoundEvent]:
        """The named sounds heard in `audio` (an `Audio`, or a path, bytes or array as `Audio` takes), each
        stretch of each sound as one SoundEvent, in time order (the strongest first among those that start
        together). A model that names no sounds raises OptionError before reading the audio; bad audio
        raises the audio errors; a URL is a PromptError (nothing is fetched)."""
        audio = audio if isinstance(audio, Audio) else Audio(audio)
        if audio.is_url():
            raise PromptError(f"audio {audio.label!r} is a URL: sound_events takes paths, bytes or arrays; "
                              "fetching is the caller's decision")
        return sorted(self._sound_events(audio), key=lambda e: (e.start, -e.score, e.end, e.label))

    def transcribe(self, tokenizer, source, *, language: str | None = None, timestamps: bool = False,
                   task: str = "transcribe", target: str | None = None, progress: bool = False,
                   generation_config: GenerationConfig | None = None, **options) -> Transcript:
        """The whole transcript of a recording of any length (see `transcribe_stream`)."""
        return self.transcribe_stream(tokenizer, source, language=language, timestamps=timestamps, task=task,
                                      target=target, progress=progress, generation_config=generation_config,
                                      **options).collect()
