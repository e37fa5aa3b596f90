"""Peak memory with a 10-hour recording: chat hears 30 s, transcription reads window by window.

    python benchmarks/long_audio.py [--hours 10] [--no-lite] [--full-decode]

Builds (once, in /tmp) a 16 kHz mono FLAC of `--hours` hours: a one-second gliding tone every
minute, silence between, so it stays a few MB like the issue's 7 MB 10-hour FLAC. Each case runs
in a fresh process that reports its peak resident memory above the same process before the call
(model loaded, a short clip answered once), so the figures are what the long file costs.
`--full-decode` also times the old way, decoding the whole file into memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import AUDIO, TINY, machine

SR = 16000


def build(path: Path, hours: float) -> Path:
    """Write the FLAC a minute at a time (never holding the whole recording)."""
    import av

    if path.is_file():
        return path
    t = np.arange(SR) / SR
    burst = (0.2 * np.sin(2 * np.pi * (200 + 100 * np.sin(2 * np.pi * 0.5 * t)) * t) * 32767).astype(np.int16)
    tmp = path.with_suffix(".part.flac")
    with av.open(str(tmp), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=SR, layout="mono")
        for _ in range(int(hours * 60)):
            pcm = np.concatenate([burst, np.zeros(59 * SR, np.int16)])
            for i in range(0, len(pcm), SR):
                frame = av.AudioFrame.from_ndarray(pcm[None, i:i + SR], format="s16", layout="mono")
                frame.sample_rate = SR
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.rename(path)
    return path


CASE = r"""
import json, sys, time, warnings
sys.path.insert(0, {bench!r})
from common import peak_rss_gib
warnings.simplefilter("ignore")
import qwen_audio
kind, path = sys.argv[1], sys.argv[2]
short = {short!r}
if kind.startswith("lite"):
    model, tok = qwen_audio.load("lite")
    question = "Recognize the speech"
else:
    model, tok = qwen_audio.load({tiny!r}, dtype="float32")
    question = "what is it?"
gen = dict(max_new_tokens=8) if kind.startswith("lite") else dict(do_sample=False, max_new_tokens=8)
model.chat(tok, tok.from_list_format([{{"audio": short}}, {{"text": question}}]), None, **gen)
if kind.endswith("transcribe"):  # warm the transcription path on the short clip too
    list(model.transcribe_stream(tok, short, max_new_tokens=8))
before = peak_rss_gib()
t0 = time.perf_counter()
if kind == "full-decode":
    heard = len(qwen_audio.load_audio(path)) / 16000
elif kind.endswith("chat"):
    model.chat(tok, tok.from_list_format([{{"audio": path}}, {{"text": question}}]), None, **gen)
    heard = 30.0
else:  # the whole recording, window by window
    heard = model.transcribe(tok, path, max_new_tokens=8).duration
seconds = time.perf_counter() - t0
after = peak_rss_gib()
print(json.dumps({{"extra_mb": (after - before) * 1024, "peak_mb": after * 1024, "seconds": seconds,
                  "heard_s": heard}}))
"""


def run(kind: str, path: Path) -> dict:
    code = CASE.format(short=str(AUDIO / "1272-128104-0000.flac"), tiny=str(TINY), bench=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code, kind, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=10.0)
    p.add_argument("--no-lite", action="store_true", help="skip the lite backend")
    p.add_argument("--full-decode", action="store_true", help="also decode the whole file at once (the old way)")
    args = p.parse_args()
    print(f"machine: {machine()}")
    path = Path(f"/tmp/qwen-audio-{args.hours:g}h.flac")
    t0 = time.perf_counter()
    build(path, args.hours)
    print(f"recording: {path} ({args.hours:g} h, {path.stat().st_size / 1e6:.1f} MB; built or found in "
          f"{time.perf_counter() - t0:.1f} s)")
    kinds = ["faithful-chat", "faithful-transcribe"] + ([] if args.no_lite else ["lite-chat", "lite-transcribe"])
    if args.full_decode:
        kinds.append("full-decode")
    print("\n| case | audio read | extra peak memory | peak resident | time |\n|---|---|---|---|---|")
    for kind in kinds:
        r = run(kind, path)
        what = {"faithful-chat": "faithful (tiny checkpoint): chat about it",
                "faithful-transcribe": "faithful (tiny checkpoint): transcribe all of it",
                "lite-chat": "lite: chat about it", "lite-transcribe": "lite: transcribe all of it",
                "full-decode": "decode the whole file at once (the old chat path)"}[kind]
        print(f"| {what} | {r['heard_s'] / 3600:.2f} h | {r['extra_mb']:.0f} MB | {r['peak_mb']:.0f} MB "
              f"| {r['seconds']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
