"""Voice activity: which parts of a clip are speech, with the silero VAD bundled in faster-whisper.

Silence, music and noise come back as no regions, so the backend says "no speech" instead of
letting Whisper hallucinate words into them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE


@dataclass(frozen=True)
class VadConfig:
    """Silero settings; the defaults keep short words and split at pauses of 0.3 s or more."""

    threshold: float = 0.5  # speech probability above which a 32 ms window is speech
    min_speech_ms: int = 150  # shorter bursts (clicks, a cough) are dropped
    min_silence_ms: int = 300  # pauses shorter than this do not split a region
    pad_ms: int = 100  # margin kept around each region so word edges are not cut

    def options(self):
        from faster_whisper.vad import VadOptions

        return VadOptions(
            threshold=self.threshold,
            min_speech_duration_ms=self.min_speech_ms,
            min_silence_duration_ms=self.min_silence_ms,
            speech_pad_ms=self.pad_ms,
        )


def speech_chunks(samples: np.ndarray, config: VadConfig = VadConfig()) -> list[dict]:
    """Silero's chunks, [{"start": sample, "end": sample}, ...], of float32 [n] 16 kHz audio."""
    from faster_whisper.vad import get_speech_timestamps

    return get_speech_timestamps(np.asarray(samples, dtype=np.float32), config.options(), SAMPLE_RATE)


def speech_regions(samples: np.ndarray, config: VadConfig = VadConfig()) -> list[tuple[float, float]]:
    """Speech regions of `samples` (float32 [n] at 16 kHz) as (start, end) pairs in seconds."""
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in speech_chunks(samples, config)]


def speech_only(samples: np.ndarray, chunks: list[dict], max_samples: int | None = None) -> np.ndarray:
    """The speech chunks joined end to end, as faster-whisper's `vad_filter` feeds them to Whisper;
    only the first `max_samples` of speech when given (the chunks after those are not joined)."""
    from faster_whisper.vad import collect_chunks

    if max_samples is not None:
        kept, total = [], 0
        for c in chunks:
            if total >= max_samples:
                break
            kept.append(c)
            total += c["end"] - c["start"]
        chunks = kept
    speech = np.concatenate(collect_chunks(np.asarray(samples, dtype=np.float32), chunks)[0])
    return speech if max_samples is None else speech[:max_samples]
