"""Speech recognition and translation with Whisper base through faster-whisper (CTranslate2, int8).

`WhisperASR.transcribe(samples, task)` returns a `Hearing` (what Whisper heard in one clip of at
most about 30 s): language, text, and per-word timings already refined (see `align.py`):
force-aligned for English when pocketsphinx is installed, else snapped to pauses in the signal's
energy. Recordings of any length are cut into such clips by `longform.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import N_SAMPLES, SAMPLE_RATE
from ..backend import NO_SPACE_LANGUAGES
from .align import PhoneticAligner, align_words
from .vad import VadConfig, speech_chunks, speech_only

# English names of the languages Whisper detects most often; anything else shows its ISO code.
LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "yue": "Cantonese", "de": "German", "es": "Spanish",
    "ru": "Russian", "ko": "Korean", "fr": "French", "ja": "Japanese", "pt": "Portuguese",
    "tr": "Turkish", "pl": "Polish", "ca": "Catalan", "nl": "Dutch", "ar": "Arabic", "sv": "Swedish",
    "it": "Italian", "id": "Indonesian", "hi": "Hindi", "fi": "Finnish", "vi": "Vietnamese",
    "he": "Hebrew", "uk": "Ukrainian", "el": "Greek", "ms": "Malay", "cs": "Czech", "ro": "Romanian",
    "da": "Danish", "hu": "Hungarian", "ta": "Tamil", "no": "Norwegian", "th": "Thai", "ur": "Urdu",
    "hr": "Croatian", "bg": "Bulgarian", "lt": "Lithuanian", "la": "Latin", "cy": "Welsh",
    "sk": "Slovak", "fa": "Persian", "lv": "Latvian", "bn": "Bengali", "sr": "Serbian",
    "sl": "Slovenian", "et": "Estonian", "tl": "Tagalog", "is": "Icelandic", "sw": "Swahili",
}
# Whisper writes Chinese in traditional characters about as often as simplified; a simplified
# prompt steers it to the script the tutorial answers in.
_ZH_PROMPT = "以下是普通话的句子。"
UNBELIEVED = 0.1  # a segment none of whose words Whisper gives this probability is dropped as a hallucination


def language_name(code: str | None) -> str:
    return LANGUAGE_NAMES.get(code or "", code or "unknown")


@dataclass(frozen=True)
class Word:
    """One recognised word; times in seconds from the start of the clip."""

    text: str  # as Whisper wrote it, leading space and punctuation stripped
    start: float
    end: float
    prob: float  # Whisper's mean token probability for the word


@dataclass(frozen=True)
class Hearing:
    """What Whisper heard in one clip (the public transcript of a recording is `backend.Transcript`)."""

    task: str  # "transcribe" or "translate" (text is then English)
    text: str  # the whole text, "" when there is no speech
    language: str | None  # ISO code detected on the speech, None when there is no speech
    language_prob: float
    words: tuple[Word, ...] = ()
    regions: tuple[tuple[float, float], ...] = ()  # VAD speech regions, seconds
    duration: float = 0.0  # seconds of audio in the clip
    raw_words: tuple[Word, ...] = field(default=(), repr=False)  # Whisper's timings before refining
    segments: tuple[tuple[int, int], ...] = field(default=(), repr=False)  # [first, last) word of each Whisper segment

    @property
    def has_speech(self) -> bool:
        return bool(self.text.strip())


class WhisperASR:
    """Whisper base on the CPU. `folder` holds a CTranslate2 model (see `weights.resolve_whisper`)."""

    def __init__(self, folder: str | os.PathLike, *, cpu_threads: int = 0, compute_type: str = "int8",
                 beam_size: int = 1, vad: VadConfig = VadConfig()):
        self.folder = Path(folder)
        # int8 weights: ~2x faster than float32 on CPU with no measurable WER change for base.
        # Two workers of half the threads each: a request's own time is the same (VAD, the decode loop and the
        # alignment are mostly sequential), and two requests at once no longer share one pool. 2-core VM, 8
        # clips: 0.98 clips/s alone and 0.78 from 4 clients with one worker of 2 threads; 0.96 and 1.07 with two
        # of 1 (CTranslate2's `inter_threads`: requests beyond the workers wait their turn).
        threads = cpu_threads or (os.cpu_count() or 1)
        workers = min(2, threads)
        self.model = _memo_model_class()(os.fspath(folder), device="cpu", compute_type=compute_type,
                                         cpu_threads=max(1, threads // workers), num_workers=workers)
        self.beam_size = beam_size  # greedy: beam 5 was ~25% slower and not more accurate here
        self.vad = vad
        self._aligner = False  # not made yet (see phonetic_aligner)

    def forget(self) -> None:
        """Drop the remembered encoder output (benchmarks use it to time a cold encode)."""
        self.model._memo = None

    def _run(self, samples: np.ndarray, task: str, language: str | None, prompt: str | None, greedy: bool):
        segments, info = self.model.transcribe(
            samples,
            task=task,
            language=language,
            beam_size=self.beam_size,
            word_timestamps=True,
            vad_filter=True,
            vad_parameters=self.vad.options(),
            # Each segment decoded on its own: no run-away repetition carried across segments.
            condition_on_previous_text=False,
            initial_prompt=prompt,
            # Not greedy: a segment whose text is too repetitive or unlikely is decoded again at rising
            # temperatures (faster-whisper's schedule), which samples, so its text varies run to run.
            **({"temperature": 0.0} if greedy else {}),
        )
        return segments, info

    def transcribe(self, samples: np.ndarray, task: str = "transcribe", language: str | None = None, *,
                   greedy: bool = False) -> Hearing:
        """Recognise (task="transcribe") or translate to English (task="translate") float32 [n] 16 kHz
        audio of at most about 30 s (longer speech is decoded, but the language is told by its first 30 s).
        `language` None: detected on the speech. `greedy`: temperature 0 only, never the fallback."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)  # silero's ONNX graph takes float32 only
        duration = len(samples) / SAMPLE_RATE
        chunks = speech_chunks(samples, self.vad)
        regions = tuple((c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks)
        if not regions:
            return Hearing(task, "", None, 0.0, regions=(), duration=duration)
        if language is None:
            language, language_prob = self.detect_language(samples, chunks)
        else:
            language_prob = 1.0
        prompt = _ZH_PROMPT if language == "zh" and task == "transcribe" else None
        segments, _ = self._run(samples, task, language, prompt, greedy)
        raw = []
        texts = []
        groups = []
        for seg in segments:
            if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:
                continue  # Whisper's own "this was not speech" rule, kept for segments VAD let through
            if seg.words and max(w.probability for w in seg.words) < UNBELIEVED:
                continue  # a lone "you" written into a pause (word probability 0.03, no-speech 0.59)
            texts.append(seg.text.strip())
            for w in seg.words or ():
                word = w.word.strip()
                if word:
                    raw.append(Word(word, float(w.start), float(w.end), float(w.probability)))
            groups.append((groups[-1][1] if groups else 0, len(raw)))
        text = _join(texts, language)
        # English speech is force-aligned (pocketsphinx, when installed); other languages and
        # translations (whose words were not spoken) get the energy refinement only.
        aligner = self.phonetic_aligner() if language == "en" and task == "transcribe" and raw else None
        words = align_words(samples, raw, groups, aligner)
        return Hearing(task, text, language, float(language_prob), tuple(words), regions, duration, tuple(raw),
                       tuple(groups))

    def phonetic_aligner(self):
        """The English forced aligner (pocketsphinx), made on first use; None when not installed."""
        if self._aligner is False:
            self._aligner = PhoneticAligner.create()
        return self._aligner

    def detect_language(self, samples: np.ndarray, chunks: list[dict]) -> tuple[str, float]:
        """(ISO code, probability) from the first 30 s of speech: no more is joined or featurised.

        The last mel frame is dropped because `generate_segments` drops it too: for speech of up to
        30 s the encoder input is then byte-identical, and the decoding pass reuses this encoder
        output (see the memo).
        """
        features = self.model.feature_extractor(speech_only(samples, chunks, N_SAMPLES))
        language, prob, _ = self.model.detect_language(features=features[..., :-1])
        return language, float(prob)


def _memo_model_class():
    """WhisperModel whose `encode` remembers its last input and output.

    Language detection and decoding both encode the first 30 s window; the encoder is most of
    the cost of a short clip on a CPU. Identical features (same bytes) reuse the last output.
    """
    import hashlib

    from faster_whisper import WhisperModel

    class MemoWhisperModel(WhisperModel):
        _memo: tuple[bytes, object] | None = None

        def encode(self, features):
            key = hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()
            memo = self._memo  # read once: another thread may replace it
            if memo is not None and memo[0] == key:
                return memo[1]
            out = super().encode(features)
            self._memo = (key, out)
            return out

    return MemoWhisperModel


def _join(texts: list[str], language: str | None) -> str:
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    return sep.join(t for t in texts if t).strip()
