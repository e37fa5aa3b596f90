"""Benchmark of the lite backend: load time, answer latency, English WER, word-grounding error.

    python benchmarks/lite_bench.py [--fixtures DIR] [--no-synth] [--llm]

Figures printed (nothing is asserted):
  * machine: CPU count and model name;
  * load time of `load_lite()` (Whisper; the LLM loads on the first open question);
  * latency of a transcription answer for each tutorial clip and for a 10 s clip;
  * long-form `model.transcribe`: the tutorial's English clips joined with short pauses into about two
    minutes of speech (windows cut at pauses), its time, real-time factor and WER;
  * English WER on the tutorial's English clips and on espeak-ng sentences (when espeak-ng exists);
  * word-boundary error against known boundaries, for Whisper's cross-attention times ("raw"), the
    energy snapping alone ("energy"), and the backend's final times ("final": forced alignment with
    pocketsphinx for English when it is installed, then a light snap): words synthesised one by one
    with espeak-ng and joined with known pauses or touching; whole espeak-ng sentences (connected
    speech, true word boundaries from libespeak-ng's word and phoneme events); a real LibriSpeech
    clip against its published Montreal Forced Aligner word alignment; and the tutorial's three
    grounded spans (the published model's answers, themselves ~50 ms off).
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

from qwen_audio.audio import SAMPLE_RATE, load_audio, save_wav  # noqa: E402

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
# Montreal Forced Aligner word alignment of LibriSpeech dev-clean 1272-128104-0000, as published in
# CorentinJ/librispeech-alignments (word, start s, end s): a reference for real connected speech.
MFA_CLIP = "1272-128104-0000.flac"
_MFA_WORDS = "mister quilter is the apostle of the middle classes and we are glad to welcome his gospel".split()
_MFA_ENDS = [0.80, 1.27, 1.40, 1.52, 2.15, 2.27, 2.35, 2.62, 3.27, 3.45, 3.60, 3.67, 4.07, 4.20, 4.60, 4.84, 5.51]
_MFA_STARTS = [0.50] + _MFA_ENDS[:8] + [3.30] + _MFA_ENDS[9:-1]  # 30 ms of silence after "classes"
MFA_SPANS = list(zip(_MFA_WORDS, _MFA_STARTS, _MFA_ENDS))
# Voices and speeds for the connected-speech set (espeak-ng variants: other formants and rhythm).
CONNECTED_VOICES = [("en-us", 150), ("en-us+m3", 175), ("en-gb", 160)]
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


class _EspeakEvent:
    """ctypes layout of espeak_EVENT (speak_lib.h) and the synchronous-synthesis entry points."""

    @staticmethod
    def load():
        import ctypes
        import ctypes.util

        class EventId(ctypes.Union):
            _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

        class Event(ctypes.Structure):
            _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                        ("user_data", ctypes.c_void_p), ("id", EventId)]

        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        lib = ctypes.CDLL(name)
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                         ctypes.POINTER(Event))
        # AUDIO_OUTPUT_SYNCHRONOUS, phoneme events on, don't exit on error
        rate = lib.espeak_Initialize(2, 0, None, 0x0001 | 0x8000)
        return lib, callback_type, rate


_ESPEAK = None


def espeak_connected(sentence: str, voice: str = "en-us", speed: int = 150):
    """A whole sentence spoken by espeak-ng (connected speech), with its true word boundaries.

    libespeak-ng reports, as it synthesises, the exact sample where each word starts (word events)
    and where each phoneme starts (phoneme events, pauses named "_..."). A word ends where the next
    word starts, or where a pause after it starts. Word starts include a stop's closure, as phonetic
    labelling conventions do. Returns (samples float32 [n] at 16 kHz, [(word, start s, end s)]).
    """
    global _ESPEAK
    if _ESPEAK is None:
        _ESPEAK = _EspeakEvent.load()
    lib, callback_type, rate = _ESPEAK
    chunks, words, pauses = [], [], []

    def on_audio(wav, n, events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            e = events[i]
            if e.type == 1:  # espeakEVENT_WORD
                words.append((e.text_position, e.length, e.sample))
            elif e.type == 7 and e.id.string.startswith(b"_"):  # a pause phoneme
                pauses.append(e.sample)
            i += 1
        return 0

    keep = callback_type(on_audio)
    lib.espeak_SetSynthCallback(keep)
    lib.espeak_SetVoiceByName(voice.encode())
    lib.espeak_SetParameter(1, speed, 0)  # espeakRATE
    text = sentence.encode()
    lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, 0, None, None)
    lib.espeak_Synchronize()
    x = np.concatenate(chunks).astype(np.float32) / 32768.0
    spans = []
    for k, (pos, length, start) in enumerate(words):
        nxt = words[k + 1][2] if k + 1 < len(words) else len(x)
        end = min([p for p in pauses if start < p < nxt] + [nxt])
        spans.append((text[pos - 1: pos - 1 + length].decode(), start / rate, end / rate))
    return load_audio((x, rate)), spans


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


def versions(samples: np.ndarray, tr) -> dict:
    """A transcript's word times three ways: Whisper's, energy snapping alone (the backend without
    pocketsphinx, or for other languages), and the backend's final times."""
    from qwen_audio.lite.align import refine_words

    return {"raw": list(tr.raw_words), "energy": refine_words(samples, list(tr.raw_words)), "final": list(tr.words)}


def report(errs: dict) -> str:
    """Mean / median |error| and share within 50 ms, for each version."""
    parts = []
    for k, e in errs.items():
        e = np.asarray(e)
        parts.append(f"{k} mean {1000 * e.mean():.0f} ms, median {1000 * np.median(e):.0f} ms, "
                     f"within 50 ms {np.mean(e <= .05):.0%}")
    return "; ".join(parts)


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
    aligner = asr.phonetic_aligner()
    print("English word times: " + ("forced alignment (pocketsphinx) + energy snap" if aligner is not None
                                    else "energy snapping only (pip install pocketsphinx for forced alignment)"))

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

        print("\n== tutorial groundings: Whisper raw, energy snapping only, final (seconds) ==")
        errs = {}
        for name, phrase, s, e in TUTORIAL_SPANS:
            x = load_audio(str(audio_dir / name))
            tr = asr.transcribe(x)
            got = {k: span_of(ws, phrase) for k, ws in versions(x, tr).items()}
            if None in got.values():
                print(f"{phrase!r}: not found in {tr.text!r}")
                continue
            for k, (a, b) in got.items():
                errs.setdefault(k, []).extend([abs(a - s), abs(b - e)])
            shown = "  ".join(f"{k} {a:.2f}-{b:.2f}" for k, (a, b) in got.items())
            print(f"{phrase:16s} tutorial {s:.2f}-{e:.2f}  {shown}")
        if errs:
            print(f"tutorial spans, {len(errs['raw'])} boundaries: " + report(errs))

        print("\n== word boundaries, real connected speech: LibriSpeech 1272-128104-0000 vs its MFA alignment ==")
        x = load_audio(str(audio_dir / MFA_CLIP))
        tr = asr.transcribe(x)
        errs = {k: boundary_errors(MFA_SPANS, ws) for k, ws in versions(x, tr).items()}
        print(f"{len(errs['raw'])} boundaries: " + report(errs))

    print("\n== 10 s clip latency ==")
    if audio_dir.is_dir():
        x = load_audio(str(audio_dir / "1089_134686_000007_000004.wav"))
        x = np.concatenate([x, np.zeros(max(0, 10 * SAMPLE_RATE - len(x)), np.float32)])[: 10 * SAMPLE_RATE]
        times = []
        with tempfile.TemporaryDirectory() as d:
            for i in range(3):  # a new file each time, so the transcript cache is not hit
                path = save_wav(Path(d) / f"ten_{i}.wav", x)
                asr.forget()
                t = time.perf_counter()
                model.chat(tok, tok.from_list_format([{"audio": path}, {"text": "what does it say?"}]))
                times.append(time.perf_counter() - t)
        print(f"10.0 s clip (9 s of speech), transcription answer: median {np.median(times):.2f} s over 3 runs, "
              f"max {max(times):.2f} s")

    if audio_dir.is_dir():
        print("\n== long-form transcription (model.transcribe, windows cut at pauses) ==")
        pause = np.zeros(int(0.5 * SAMPLE_RATE), np.float32)
        parts, refs = [], []
        for _ in range(8):
            for name, ref in ENGLISH.items():
                parts += [load_audio(str(audio_dir / name)), pause]
                refs.append(ref)
        x = np.concatenate(parts)
        t = time.perf_counter()
        transcript = model.transcribe(tok, (x, SAMPLE_RATE), language="en", timestamps=True)
        dt = time.perf_counter() - t
        e, m = wer(" ".join(refs), transcript.text)
        print(f"{len(x) / SAMPLE_RATE:.1f} s of speech in {dt:.2f} s (real-time factor {dt * SAMPLE_RATE / len(x):.3f}), "
              f"{len(transcript.segments)} segments, WER {e}/{m} ({100 * e / m:.1f}%)")

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
                errs = {}
                for s in SENTENCES:
                    x, spans = synth_words(s, folder, rng, gaps)
                    for k, ws in versions(x, asr.transcribe(x)).items():
                        errs.setdefault(k, []).extend(boundary_errors(spans, ws))
                print(f"{len(errs['raw'])} boundaries: " + report(errs))

        print("\n== word boundaries, connected speech: whole espeak-ng sentences, "
              f"{len(CONNECTED_VOICES)} voices (true boundaries from libespeak-ng events) ==")
        errs, pad = {}, np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
        try:
            for voice, speed in CONNECTED_VOICES:
                for s in SENTENCES:
                    x, spans = espeak_connected(s, voice, speed)
                    x = np.concatenate([pad, x, pad])
                    spans = [(w, a + 0.3, b + 0.3) for w, a, b in spans]
                    for k, ws in versions(x, asr.transcribe(x)).items():
                        errs.setdefault(k, []).extend(boundary_errors(spans, ws))
            print(f"{len(errs['raw'])} boundaries: " + report(errs))
        except OSError as e:
            print(f"(libespeak-ng not loadable: {e})")
    elif not args.no_synth:
        print("\n(espeak-ng not installed: synthetic WER and boundary figures skipped; apt-get install espeak-ng)")

    if args.llm and audio_dir.is_dir():
        import torch

        print(f"\n== open question through SmolLM2 (torch threads: {torch.get_num_threads()}) ==")
        q = tok.from_list_format([{"audio": str(audio_dir / "1272-128104-0000.flac")},
                                  {"text": "based on this audio, write a story"}])
        for label in ("first open question (includes the LLM load)", "second"):
            stream = model.chat_stream(tok, q)
            resp = "".join(stream)
            s = stream.stats
            print(f"{label}: {s.total_s:.2f} s; first text {s.first_text_s:.2f} s; prompt {s.prompt_tokens} tokens, "
                  f"{s.new_tokens} new ({s.stop_reason})")
        llm_s = s.total_s - s.first_text_s  # the summary line comes first; the rest is the LLM
        print(f"LLM: {s.new_tokens / llm_s:.1f} tokens/s including the prompt's prefill; {resp[:200]!r}")


if __name__ == "__main__":
    main()
