"""Voice cues measured in the signal: pitch, loudness, speaking rate; no emotion is inferred here.

`measure_voice(samples, regions, words, language)` -> `VoiceCues` over the speech regions only.
Pitch is a YIN-style estimate (difference function, cumulative-mean normalised, threshold 0.15)
on 40 ms frames every 10 ms, 65-500 Hz; its spread is the interquartile range in semitones.
Loudness is the RMS level of the speech in dBFS. The speaking rate is words per second of
speech, or characters per second for Chinese and Japanese (about one syllable each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..audio import SAMPLE_RATE

FRAME = 640  # 40 ms analysis frame: two periods of a 50 Hz voice fit
STEP = 160  # 10 ms between pitch frames
F0_MIN, F0_MAX = 65.0, 500.0  # Hz: adult and child speaking voices
YIN_THRESHOLD = 0.2  # a dip of the normalised difference below this is a period (YIN paper: 0.1-0.2)
SYLLABIC = ("zh", "ja", "yue")  # languages whose written characters are about one syllable each


@dataclass(frozen=True)
class VoiceCues:
    """What was measured in the speech of one clip (None where there was too little voiced speech)."""

    pitch_hz: float | None  # median fundamental frequency of voiced frames
    pitch_iqr_st: float | None  # interquartile range of the pitch, semitones: how much it varies
    loudness_dbfs: float  # RMS level of the speech regions, dB relative to full scale
    rate: float | None  # words (or characters for zh/ja) per second of speech
    rate_unit: str  # "words/s" or "characters/s"
    speech_s: float  # seconds of speech measured
    voiced_frac: float  # share of 10 ms speech frames with a pitch


def yin_pitch(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """F0 in Hz per 10 ms frame of float32 [n] audio (NaN where unvoiced), YIN's steps 1-4 vectorised."""
    tau_min, tau_max = int(sr / F0_MAX), int(sr / F0_MIN)
    w = FRAME - tau_max  # the integration window: frame = window + the longest lag
    if len(x) < FRAME:
        return np.zeros(0)
    n = 1 + (len(x) - FRAME) // STEP
    frames = np.lib.stride_tricks.as_strided(x, (n, FRAME), (x.strides[0] * STEP, x.strides[0])).astype(np.float64)
    # Difference function d(tau) = sum_j (x_j - x_{j+tau})^2 over j < w, through FFT correlation.
    size = 1 << int(np.ceil(np.log2(FRAME + w)))
    a = np.fft.rfft(frames[:, :w], size)
    b = np.fft.rfft(frames, size)
    corr = np.fft.irfft(np.conj(a) * b, size)[:, :tau_max + 1]  # sum_j x_j x_{j+tau}
    sq = np.cumsum(frames ** 2, axis=1)
    energy0 = sq[:, w - 1]
    shifted = np.concatenate([sq[:, w - 1:w + tau_max], ], axis=1)
    prev = np.concatenate([np.zeros((n, 1)), sq[:, :tau_max]], axis=1)
    energy_tau = shifted - prev  # sum_{j<w} x_{j+tau}^2
    d = energy0[:, None] + energy_tau - 2 * corr
    d[:, 0] = 0
    cum = np.cumsum(d[:, 1:], axis=1) / np.arange(1, tau_max + 1)
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] / np.maximum(cum, 1e-12)
    f0 = np.full(n, np.nan)
    for i in range(n):
        row = dn[i, tau_min:]
        below = np.nonzero(row < YIN_THRESHOLD)[0]
        if not len(below):
            continue
        t = below[0]
        while t + 1 < len(row) and row[t + 1] < row[t]:  # walk down to the dip's bottom
            t += 1
        tau = t + tau_min
        if 1 <= tau < tau_max:  # parabolic interpolation between neighbours
            y0, y1, y2 = dn[i, tau - 1], dn[i, tau], dn[i, tau + 1]
            den = y0 - 2 * y1 + y2
            tau = tau + (0.5 * (y0 - y2) / den if abs(den) > 1e-12 else 0.0)
        f0[i] = sr / tau
    quiet = energy0 < 1e-6 * w  # frames below ~-60 dBFS have no pitch worth reporting
    f0[quiet] = np.nan
    return f0


def measure_voice(samples: np.ndarray, regions: Sequence[tuple[float, float]], words: Sequence = (),
                  language: str | None = None, text: str = "") -> VoiceCues | None:
    """Cues of the speech in float32 [n] 16 kHz `samples`; `regions` are speech (start, end) seconds.

    None when there is no speech region.
    """
    if not regions:
        return None
    parts = [samples[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)] for a, b in regions]
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    speech = np.concatenate(parts).astype(np.float32)
    speech_s = len(speech) / SAMPLE_RATE
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
    loudness = 20 * np.log10(max(rms, 1e-9))
    f0 = np.concatenate([yin_pitch(p) for p in parts if len(p) >= FRAME] or [np.zeros(0)])
    voiced = f0[np.isfinite(f0)]
    n_frames = max(1, len(f0))
    pitch = iqr = None
    if len(voiced) >= 10:
        # Octave errors of YIN are rare but land far out: keep frames within an octave of the median.
        med = np.median(voiced)
        voiced = voiced[(voiced > med / 2) & (voiced < med * 2)]
        pitch = float(np.median(voiced))
        st = 12 * np.log2(voiced / pitch)
        iqr = float(np.percentile(st, 75) - np.percentile(st, 25))
    syllabic = language in SYLLABIC
    if syllabic:
        count = sum(1 for c in text if c.isalnum())
    else:
        count = len(words) if words else len(text.split())
    rate = count / speech_s if count and speech_s > 0.3 else None
    return VoiceCues(pitch, iqr, round(float(loudness), 1), None if rate is None else round(rate, 2),
                     "characters/s" if syllabic else "words/s", round(speech_s, 2), round(len(voiced) / n_frames, 2))
