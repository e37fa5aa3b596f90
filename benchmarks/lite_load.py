"""lite under background load: a first answer's time while other processes keep the cores busy.

    python benchmarks/lite_load.py [--busy 0 2] [--threads 2 1 0] [--tokens 32] [--after]

For each number of busy background processes (pure Python loops, one core each) and each `cpu_threads`
setting (0 = lite's default: the cores free when it loads), a fresh process loads lite, answers a
transcription of the tutorial's 5.9 s English clip (Whisper, YAMNet, alignment) and then an open question
on the glass clip (the LLM's load and `--tokens` new tokens), and prints the seconds of each. Each run gets
`--limit` seconds (a run past it prints ">limit"). With `--after`, the machine gets busy only after lite has
loaded and answered once on idle cores (the LLM loaded): then a new clip's open question is timed, with the
threads fixed at load (`cpu_threads` 2) or sized again per answer (0). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import AUDIO, machine  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from qwen_audio.lite import load_lite
threads, tokens, audio = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model, tok = load_lite(cpu_threads=threads, llm="qwen2.5-0.5b")
out = {"load": time.perf_counter() - t0, "threads": model.cpu_threads}
t = time.perf_counter()
model.chat(tok, tok.from_list_format([{"audio": f"{audio}/1272-128104-0000.flac"}, {"text": "What does the speaker say?"}]),
           history=None)
out["transcript"] = time.perf_counter() - t
t = time.perf_counter()
model.chat(tok, tok.from_list_format([{"audio": f"{audio}/glass-breaking-151256.mp3"},
                                      {"text": "What is that sound? What should I do?"}]),
           history=None, max_new_tokens=tokens)
out["open"] = time.perf_counter() - t
print(json.dumps(out))
"""

CHILD_AFTER = r"""
import json, sys, time
import torch
from qwen_audio.lite import load_lite
threads, tokens, audio = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model, tok = load_lite(cpu_threads=threads, llm="qwen2.5-0.5b")
ask = lambda clip, q: model.chat(tok, tok.from_list_format([{"audio": f"{audio}/{clip}"}, {"text": q}]), history=None,
                                 max_new_tokens=tokens)
ask("glass-breaking-151256.mp3", "What is that sound? What should I do?")  # the LLM loads on idle cores
out = {"threads_at_load": torch.get_num_threads()}
print("ready", flush=True)
sys.stdin.readline()  # the parent has made the machine busy
t = time.perf_counter()
ask("1272-128104-0000.flac", "Who might say this? Answer in one sentence.")
out.update(open=time.perf_counter() - t, threads=torch.get_num_threads())
print(json.dumps(out), flush=True)
"""


def busy_processes(n: int) -> list[subprocess.Popen]:
    """`n` processes that each keep a core busy (pure Python loops); `stop` ends them."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(processes: list[subprocess.Popen]) -> None:
    for h in processes:
        h.kill()
        h.wait()


def run(busy: int, threads: int, tokens: int, limit: float) -> str:
    hogs = busy_processes(busy)
    try:
        time.sleep(2.0 if busy else 0.0)  # let the load show in /proc/stat before lite sizes its threads
        t = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(tokens), str(AUDIO)],
                                  capture_output=True, text=True, timeout=limit, cwd=Path(__file__).parents[1])
        except subprocess.TimeoutExpired:
            return f"busy {busy} | cpu_threads {threads} | >{limit:.0f} s"
        if done.returncode:
            return f"busy {busy} | cpu_threads {threads} | failed: {done.stderr.strip().splitlines()[-1:]}"
        r = json.loads(done.stdout.strip().splitlines()[-1])
        return (f"busy {busy} | cpu_threads {threads} (used {r['threads']}) | load {r['load']:.1f} s | "
                f"transcript {r['transcript']:.1f} s | open answer {r['open']:.1f} s | whole {time.perf_counter() - t:.1f} s")
    finally:
        stop(hogs)


def run_after(busy: int, threads: int, tokens: int, limit: float) -> str:
    """lite loads and answers on idle cores, then `busy` hogs start and a new clip's open question is timed."""
    child = subprocess.Popen([sys.executable, "-c", CHILD_AFTER, str(threads), str(tokens), str(AUDIO)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parents[1])
    hogs = []
    try:
        if child.stdout.readline().strip() != "ready":
            return f"busy {busy} after load | cpu_threads {threads} | failed: {child.stderr.read().strip()[-300:]}"
        hogs = busy_processes(busy)
        time.sleep(2.0)
        child.stdin.write("go\n")
        child.stdin.flush()
        try:
            line, _ = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            return f"busy {busy} after load | cpu_threads {threads} | >{limit:.0f} s"
        r = json.loads(line.strip().splitlines()[-1])
        return (f"busy {busy} after load | cpu_threads {threads} | pool at load {r['threads_at_load']}, "
                f"for the answer {r['threads']} | open answer {r['open']:.1f} s")
    finally:
        stop([*hogs, child])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1, 0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--limit", type=float, default=300.0)
    ap.add_argument("--after", action="store_true", help="make the machine busy after lite loads (see above)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    for busy in args.busy:
        for threads in args.threads:
            print((run_after if args.after else run)(busy, threads, args.tokens, args.limit), flush=True)


if __name__ == "__main__":
    main()
