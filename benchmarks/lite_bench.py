"""Benchmark of the lite backend: load time, answer latency, English WER, word-grounding error.

    python benchmarks/lite_bench.py [--fixtures DIR] [--no-synth] [--llm]

Figures printed (nothing is asserted):
  * machine: CPU count and model name;
  * load time of `load_lite()` (Whisper; the LLM loads on the first open question);
  * latency of a transcription answer for each tutorial clip and for a 10 s clip;
  * English WER on the tutorial's English clips and on espeak-ng sentences (when espeak-ng exists);
  * word-boundary error against known boundaries: words synthesised one by one with espeak-ng and
    joined with known pauses, before (Whisper's cross-attention timing) and after refinement;
    and the tutorial's three grounded spans, before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen_audio.audio import SAMPLE_RATE, load_audio  # noqa: E402

# Known text of the tutorial's English clips (LibriSpeech / LibriTTS labels).
ENGLISH = {
    "1272-128104-0000.flac": "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL",
    "1089_134686_000007_000004.wav": "The music came nearer and he recalled the words, the words of Shelley's "
    "fragment upon the moon wandering companionless, pale for weariness.",
}
# The tutorial's groundings: (clip, word, start s, end s), from the published model's answers.
TUTORIAL_SPANS = [
    ("1272-128104-0000.flac", "middle classes", 2.33, 3.26),
    ("1089_134686_000007_000004.wav", "companionless", 6.28, 7.15),
    ("1089_134686_000007_000004.wav", "shelley's", 3.79, 4.33),
]
# Sentences for synthetic speech (plain words, so espeak pronounces them as written).
SENTENCES = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "please call stella and ask her to bring these things with her from the store",
    "we will meet at the station before the train leaves for the city",
    "a small garden grows behind the old house where my family lived",
    "the weather today is cold and windy with rain expected in the evening",
    "she opened the window and listened to the birds singing in the morning",
    "our teacher explained the problem again so that everyone could understand it",
    "they walked along the beach and collected shells until the sun went down",
    "the museum will open a new exhibition about ancient ships next month",
    "he forgot his keys on the kitchen table and had to return home",
]

_NUMBERS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, common abbreviations spelled out (for WER)."""
    words = re.sub(r"[^\w' ]+", " ", text.lower()).split()
    return [_NUMBERS.get(w, w) for w in words]


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance, reference length) over normalised words."""
    r, h = normalise(ref), normalise(hyp)
    d = np.arange(len(h) + 1)
    for i, rw in enumerate(r, 1):
        prev, d[0] = d.copy(), i
        for j, hw in enumerate(h, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (rw != hw))
    return int(d[len(h)]), len(r)


def write_wav(path: Path, x: np.ndarray) -> str:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return str(path)


def machine() -> str:
    name = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs, {name}; load average {load:.2f} at start (other work slows every figure)"


def espeak(text: str, folder: Path, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """Synthesise `text` with espeak-ng; float32 [n] at 16 kHz."""
    out = folder / "tts.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                   capture_output=True)
    return load_audio(str(out))


def trim(x: np.ndarray, rel: float = 0.02) -> np.ndarray:
    """Cut leading and trailing near-silence (below `rel` of the peak) off a synthesised word."""
    loud = np.flatnonzero(np.abs(x) > rel * np.abs(x).max())
    return x[loud[0]: loud[-1] + 1] if len(loud) else x


def synth_words(sentence: str, folder: Path, rng: np.random.Generator, gaps=(0.06, 0.35)):
    """Words synthesised one by one, joined with random pauses of gaps[0]-gaps[1] seconds.

    Returns (samples float32 [n], [(word, start s, end s)]): the boundaries are exact by construction.
    """
    pieces, spans, t = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)], [], 0.3
    for word in sentence.split():
        x = trim(espeak(word, folder))
        spans.append((word, t, t + len(x) / SAMPLE_RATE))
        gap = rng.uniform(*gaps)
        pieces += [x, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        t += len(x) / SAMPLE_RATE + int(gap * SAMPLE_RATE) / SAMPLE_RATE
    return np.concatenate(pieces), spans


def boundary_errors(spans, words) -> list[float]:
    """|error| of start and end for each reference word that Whisper recognised (difflib pairing)."""
    import difflib

    ref = [w for w, _, _ in spans]
    hyp = [" ".join(normalise(w.text)) for w in words]
    errs = []
    for block in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            _, s, e = spans[block.a + k]
            w = words[block.b + k]
            errs += [abs(w.start - s), abs(w.end - e)]
    return errs


def span_of(words, phrase: str):
    """(start, end) of the first run of `words` that spells `phrase`, else None."""
    target = normalise(phrase)
    texts = [normalise(w.text) for w in words]
    for i in range(len(words)):
        got, k = [], i
        while k < len(words) and len(got) < len(target):
            got += texts[k]
            k += 1
        if got == target:
            return words[i].start, words[k - 1].end
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=os.environ.get("QWEN_AUDIO_FIXTURES", str(ROOT.parent / "shared")))
    ap.add_argument("--no-synth", action="store_true", help="skip the espeak-ng measurements")
    ap.add_argument("--llm", action="store_true", help="also time one open question through SmolLM2")
    args = ap.parse_args()
    audio_dir = Path(args.fixtures) / "audio"
    print(f"machine: {machine()}")

    t0 = time.perf_counter()
    from qwen_audio.lite import load_lite, weights

    model, tok = load_lite()
    print(f"load_lite (imports + Whisper): {time.perf_counter() - t0:.2f} s")
    with tempfile.TemporaryDirectory() as d:  # the first run on a machine joins the weight halves
        old = os.environ.get("QWEN_AUDIO_CACHE")
        os.environ["QWEN_AUDIO_CACHE"] = d
        t = time.perf_counter()
        weights.resolve_whisper(allow_download=False)
        print(f"first-run join of the Whisper halves into the cache: {time.perf_counter() - t:.2f} s")
        if old is None:
            del os.environ["QWEN_AUDIO_CACHE"]
        else:
            os.environ["QWEN_AUDIO_CACHE"] = old
    asr = model.asr

    # Warm-up: the first CTranslate2 call allocates its buffers.
    if audio_dir.is_dir():
        asr.transcribe(load_audio(str(audio_dir / "1272-128104-0000.flac")))

    if audio_dir.is_dir():
        print("\n== answer latency (transcription question, model loaded) ==")
        for clip in sorted(audio_dir.iterdir()):
            if clip.suffix not in (".wav", ".flac", ".mp3"):
                continue
            q = tok.from_list_format([{"audio": str(clip)}, {"text": "Recognize the speech"}])
            asr.forget()  # no reuse of an earlier encoder pass: every answer is timed cold
            t = time.perf_counter()
            resp, _ = model.chat(tok, q, history=None)
            dt = time.perf_counter() - t
            dur = len(load_audio(str(clip))) / SAMPLE_RATE
            print(f"{clip.name:40s} {dur:6.2f} s audio  {dt:5.2f} s  {resp[:90]!r}")

        print("\n== English WER, tutorial clips ==")
        errs = n = 0
        for name, ref in ENGLISH.items():
            tr = asr.transcribe(load_audio(str(audio_dir / name)))
            e, m = wer(ref, tr.text)
            errs, n = errs + e, n + m
            print(f"{name:40s} WER {e}/{m}  {tr.text!r}")
        print(f"tutorial English WER: {100 * errs / max(n, 1):.1f}%")

        print("\n== tutorial groundings: Whisper raw vs refined (seconds) ==")
        before, after = [], []
        for name, phrase, s, e in TUTORIAL_SPANS:
            tr = asr.transcribe(load_audio(str(audio_dir / name)))
            raw, ref = span_of(tr.raw_words, phrase), span_of(tr.words, phrase)
            if raw is None or ref is None:
                print(f"{phrase!r}: not found in {tr.text!r}")
                continue
            before += [abs(raw[0] - s), abs(raw[1] - e)]
            after += [abs(ref[0] - s), abs(ref[1] - e)]
            print(f"{phrase:16s} tutorial {s:.2f}-{e:.2f}  raw {raw[0]:.2f}-{raw[1]:.2f}  refined {ref[0]:.2f}-{ref[1]:.2f}")
        if before:
            print(f"tutorial spans mean boundary error: raw {1000 * np.mean(before):.0f} ms, "
                  f"refined {1000 * np.mean(after):.0f} ms  ({len(before)} boundaries)")

    print("\n== 10 s clip latency ==")
    if audio_dir.is_dir():
        x = load_audio(str(audio_dir / "1089_134686_000007_000004.wav"))
        x = np.concatenate([x, np.zeros(max(0, 10 * SAMPLE_RATE - len(x)), np.float32)])[: 10 * SAMPLE_RATE]
        times = []
        with tempfile.TemporaryDirectory() as d:
            for i in range(3):  # a new file each time, so the transcript cache is not hit
                path = write_wav(Path(d) / f"ten_{i}.wav", x)
                asr.forget()
                t = time.perf_counter()
                model.chat(tok, tok.from_list_format([{"audio": path}, {"text": "what does it say?"}]))
                times.append(time.perf_counter() - t)
        print(f"10.0 s clip (9 s of speech), transcription answer: median {np.median(times):.2f} s over 3 runs, "
              f"max {max(times):.2f} s")

    if not args.no_synth and shutil.which("espeak-ng"):
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d)
            print("\n== English WER, espeak-ng sentences ==")
            errs = n = 0
            for s in SENTENCES:
                tr = asr.transcribe(espeak(s, folder))
                e, m = wer(s, tr.text)
                errs, n = errs + e, n + m
                if e:
                    print(f"  {e}/{m}: {tr.text!r}")
            print(f"espeak-ng WER: {100 * errs / n:.1f}% over {n} words")

            for title, gaps in (("pauses of 60-350 ms", (0.06, 0.35)), ("touching: gaps of 0-30 ms", (0.0, 0.03))):
                print(f"\n== word boundaries, isolated espeak-ng words joined with {title} ==")
                before, after = [], []
                for s in SENTENCES:
                    x, spans = synth_words(s, folder, rng, gaps)
                    tr = asr.transcribe(x)
                    before += boundary_errors(spans, tr.raw_words)
                    after += boundary_errors(spans, tr.words)
                b, a = np.array(before), np.array(after)
                print(f"{len(a)} boundaries: mean error raw {1000 * b.mean():.0f} ms -> refined {1000 * a.mean():.0f} ms; "
                      f"median {1000 * np.median(b):.0f} -> {1000 * np.median(a):.0f} ms; "
                      f"within 50 ms {np.mean(b <= .05):.0%} -> {np.mean(a <= .05):.0%}")
    elif not args.no_synth:
        print("\n(espeak-ng not installed: synthetic WER and boundary figures skipped; apt-get install espeak-ng)")

    if args.llm and audio_dir.is_dir():
        print("\n== open question through SmolLM2 ==")
        q = tok.from_list_format([{"audio": str(audio_dir / "1272-128104-0000.flac")},
                                  {"text": "based on this audio, write a story"}])
        t = time.perf_counter()
        resp, _ = model.chat(tok, q)
        print(f"first open question (includes LLM load): {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        resp, _ = model.chat(tok, q)
        print(f"second: {time.perf_counter() - t:.2f} s, {len(resp)} chars: {resp[:300]!r}")


if __name__ == "__main__":
    main()
