"""Load test of `qwen-audio serve`: requests/s and time to first token at 1, 4 and 16 concurrent clients.

    python benchmarks/serve_bench.py [--models lite,small] [--levels 1,4,16] [--max-active N]
                                     [--requests-per-client N] [--max-tokens 32]

For each model the real server runs as a subprocess (`qwen-audio serve --model M --port FREE --quiet`);
the script waits for /health, runs the load, then stops it (SIGTERM) and shows anything it wrote to stderr.
"lite" is the embedded backend; "small" is a random checkpoint of 0.19 B parameters with the real
vocabulary (`chat_turns.SMALL`, built once under the temp folder), served in float32.

At each concurrency C, C client threads send streaming chat requests back to back until the level's
requests are used up (2*C+4 in all, or C * --requests-per-client). Each request carries one tutorial
clip (the clips take turns, so answers that went to the wrong client would show) and a question. The
clip is sent as a base64 16 kHz WAV with a chunk tagging the request: the samples are the clip's, the
bytes are new to the server, so its caches keyed by the audio's bytes (lite's transcripts, the
engine's decoded clips, features and prompt keys/values) do not answer in place of the model
(`--cached` sends the same bytes every time instead, to measure the cached path). The questions: for
lite a transcription ("Recognize the speech") and, in a row of its own, an open question that goes to
its small LLM; for the small checkpoint a question answered greedily (temperature 0).
Each row starts with one untimed warm-up request per clip.

Per request: seconds to the first content chunk (TTFT), seconds to [DONE], and whether it succeeded,
got 429 or failed. requests/s = successful requests / the level's wall time. /health is polled during
the load for the most answers active and waiting at once. The small checkpoint's answers at every
level are compared with its answers at concurrency 1 (greedy: they must be equal, clip by clip).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import AUDIO, machine, random_checkpoint

from qwen_audio.audio import SAMPLE_RATE, load_audio

CLIPS = ["1272-128104-0000.flac", "你没事吧-轻松.wav", "glass-breaking-151256.mp3"]
TRANSCRIBE_Q = "Recognize the speech"
OPEN_Q = "Write one sentence about this audio."
SMALL_Q = "What does the speaker say?"
NONCE = secrets.token_hex(4)  # this run's tags: a server never saw these bytes
SMALL_FOLDER = Path(tempfile.gettempdir()) / "qwen-audio-bench-small"


@dataclass
class Result:
    clip: str
    status: str = "failed"  # ok | 429 | failed
    ttft_s: float | None = None
    total_s: float | None = None
    answer: str = ""
    error: str = ""


@dataclass
class Level:
    concurrency: int
    results: list[Result]
    wall_s: float
    max_active: int = 0
    max_queued: int = 0
    answers: dict[str, set[str]] = field(default_factory=dict)


# ---- the server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script() -> str:
    exe = Path(sys.executable).parent / "qwen-audio"
    if not exe.is_file():
        sys.exit(f"serve_bench: {exe} is missing: pip install -e '.[server]' in this environment")
    return str(exe)


class Server:
    """`qwen-audio serve` in a subprocess, its stderr kept in a temp file."""

    def __init__(self, model: str, extra: list[str]):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-bench-", suffix=".log", delete=False)
        self.argv = [console_script(), "serve", "--model", model, "--port", str(self.port), "--quiet", *extra]
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout_s: float = 900.0) -> float:
        t = time.perf_counter()
        while time.perf_counter() - t < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status, _ = get(self.port, "/health", timeout=2.0)
                if status == 200:
                    return time.perf_counter() - t
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"the server did not answer /health within {timeout_s:g} s:\n{self.output()}")

    def stop(self, timeout_s: float = 120.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def close(self) -> None:
        self.log.close()
        os.unlink(self.log.name)


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


# ---- the clients ------------------------------------------------------------------------------------


_PCM: dict[str, bytes] = {}


def pcm16(clip: str) -> bytes:
    """The clip as the model hears it: 16 kHz mono 16-bit samples (decoding quantises to 16 bits already)."""
    if clip not in _PCM:
        samples = load_audio(str(AUDIO / clip))
        _PCM[clip] = np.clip(np.round(samples.astype(np.float64) * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return _PCM[clip]


def tagged_wav(clip: str, tag: str) -> bytes:
    """The clip as a WAV file with `tag` in a chunk of its own: other bytes (so no cache keyed by the bytes
    hits), the same samples (so greedy answers must be the same)."""
    pcm = pcm16(clip)
    note = tag.encode().ljust(32)[:32]
    chunks = (b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16)
              + b"bnch" + struct.pack("<I", len(note)) + note + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def body(clip: str, tag: str, question: str, max_tokens: int, greedy: bool) -> bytes:
    data = base64.b64encode(tagged_wav(clip, tag)).decode()
    content = [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}, {"type": "text", "text": question}]
    req = {"messages": [{"role": "user", "content": content}], "stream": True, "max_tokens": max_tokens}
    if greedy:
        req["temperature"] = 0
    return json.dumps(req).encode()


def one_request(port: int, clip: str, payload: bytes, timeout_s: float = 900.0) -> Result:
    """A streaming chat request: TTFT is the first chunk with non-empty content."""
    res = Result(clip)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    t = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            text = r.read().decode(errors="replace")
            res.status = "429" if r.status == 429 else "failed"
            res.error = f"HTTP {r.status} (Retry-After {r.getheader('Retry-After')}): {text[:200]}"
            return res
        pieces, done = [], False
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                res.error = f"error event: {json.dumps(event['error'])[:200]}"
                break
            for choice in event.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    if res.ttft_s is None:
                        res.ttft_s = time.perf_counter() - t
                    pieces.append(piece)
        res.total_s = time.perf_counter() - t
        res.answer = "".join(pieces)
        if done and not res.error:
            res.status = "ok"
        elif not res.error:
            res.error = "the stream ended without [DONE]"
    except (OSError, http.client.HTTPException, ValueError) as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return res


def run_level(port: int, concurrency: int, total: int, question: str, max_tokens: int, greedy: bool,
              tag: str | None) -> Level:
    """`total` requests from `concurrency` threads; request i sends clip i mod 3, its bytes tagged with `tag`
    and i (unique bytes: no cache keyed by them hits), or the same bytes every time when `tag` is None."""
    payloads = [body(CLIPS[i % len(CLIPS)], "cached" if tag is None else f"{tag}-{i}", question, max_tokens, greedy)
                for i in range(total)]
    results: list[Result | None] = [None] * total
    counter, lock = iter(range(total)), threading.Lock()
    stop_poll = threading.Event()
    seen = {"active": 0, "queued": 0}

    def client():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            clip = CLIPS[i % len(CLIPS)]
            results[i] = one_request(port, clip, payloads[i])

    def poll():
        while not stop_poll.is_set():
            try:
                _, h = get(port, "/health", timeout=5.0)
                seen["active"] = max(seen["active"], h.get("active", 0))
                seen["queued"] = max(seen["queued"], h.get("queued", 0))
            except (OSError, ValueError):
                pass
            stop_poll.wait(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    stop_poll.set()
    poller.join()
    done = [r for r in results if r is not None]
    level = Level(concurrency, done, wall, seen["active"], seen["queued"])
    for r in done:
        if r.status == "ok":
            level.answers.setdefault(r.clip, set()).add(r.answer)
    return level


# ---- the report -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank, as load tools report it)."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s), max(1, math.ceil(q / 100 * len(s)))) - 1]


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_table(title: str, levels: list[Level]) -> None:
    print(f"\n  {title}")
    print("  clients  ok/429/fail   req/s   TTFT p50   p90    p99  | total p50  | wall s  most active/queued")
    for lv in levels:
        ok = [r for r in lv.results if r.status == "ok"]
        n429 = sum(r.status == "429" for r in lv.results)
        nfail = sum(r.status == "failed" for r in lv.results)
        ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
        total = [r.total_s for r in ok if r.total_s is not None]
        print(f"  {lv.concurrency:7d}  {len(ok):3d}/{n429:3d}/{nfail:<4d}  {len(ok) / lv.wall_s:6.2f}   "
              f"{fmt(pct(ttft, 50)):>7}  {fmt(pct(ttft, 90)):>6} {fmt(pct(ttft, 99)):>6}  | {fmt(pct(total, 50)):>9}  "
              f"| {lv.wall_s:6.1f}  {lv.max_active}/{lv.max_queued}")
        no_text = sum(r.ttft_s is None for r in ok)
        if no_text:
            print(f"           ({no_text} successful answers had no text: no TTFT for them)")
        errors = sorted({r.error for r in lv.results if r.status != "ok"})
        for e in errors[:5]:
            print(f"           ! {e}")


def check_same(levels: list[Level]) -> bool:
    """Every answer at every level equals the concurrency-1 answer for its clip."""
    ref = next((lv for lv in levels if lv.concurrency == 1), None)
    if ref is None:
        print("  answers: no concurrency-1 level to compare with")
        return True
    good = True
    for clip in CLIPS:
        base = ref.answers.get(clip, set())
        if len(base) != 1:
            print(f"  answers: {clip}: {len(base)} different answers at concurrency 1: {sorted(base)!r:.300}")
            good = False
            continue
        (want,) = base
        for lv in levels:
            got = lv.answers.get(clip, set())
            bad = got - {want}
            if bad:
                good = False
                print(f"  answers: {clip} at {lv.concurrency} clients differs from concurrency 1:\n"
                      f"    want {want!r:.200}\n    got  {sorted(bad)!r:.400}")
    distinct = len({a for lv in levels for s in lv.answers.values() for a in s})
    print(f"  answers: {'every answer equals its concurrency-1 answer' if good else 'MISMATCH'} "
          f"({distinct} distinct answers for {len(CLIPS)} clips)")
    return good


def bench_model(name: str, args: argparse.Namespace) -> bool:
    if name == "lite":
        model, extra, rows = "lite", [], [("transcription: " + TRANSCRIBE_Q, TRANSCRIBE_Q, False),
                                          ("open question (LLM): " + OPEN_Q, OPEN_Q, False)]
    elif name == "small":
        from chat_turns import SMALL

        t = time.perf_counter()
        fresh = not (SMALL_FOLDER / "config.json").is_file()
        model = str(random_checkpoint(SMALL_FOLDER, SMALL))
        if fresh:
            print(f"built the small random checkpoint in {time.perf_counter() - t:.1f} s: {model}")
        extra, rows = ["--dtype", "float32"], [("greedy (temperature 0): " + SMALL_Q, SMALL_Q, True)]
    else:
        model, extra, rows = name, [], [(TRANSCRIBE_Q, TRANSCRIBE_Q, False)]
    if args.max_active is not None:
        extra += ["--max-active", str(args.max_active)]
    if args.max_queue is not None:
        extra += ["--max-queue", str(args.max_queue)]
    server = Server(model, extra)
    good = True
    try:
        ready = server.wait_healthy()
        print(f"\n== {name}: {' '.join(server.argv[1:])}")
        audio = "the same each time (--cached)" if args.cached else "unique per request"
        print(f"   server ready in {ready:.1f} s; max-active {args.max_active or '8 (default)'}, "
              f"max-queue {args.max_queue or '32 (default)'}, max_tokens {args.max_tokens}, "
              f"clips in turn: {', '.join(CLIPS)}; audio bytes {audio}")
        for row, (title, question, greedy) in enumerate(rows):
            t = time.perf_counter()
            for c in CLIPS:  # warm-up (untimed): the lite LLM loads on its first open question
                tag = "cached" if args.cached else f"{NONCE}-warm-{row}-{c}"
                w = one_request(server.port, c, body(c, tag, question, args.max_tokens, greedy))
                if w.status != "ok":
                    print(f"   warm-up {c}: {w.status} {w.error}")
            print(f"   warm-up ({len(CLIPS)} requests, one at a time): {time.perf_counter() - t:.1f} s")
            levels = []
            for c in args.levels:
                total = c * args.requests_per_client if args.requests_per_client else 2 * c + 4
                tag = None if args.cached else f"{NONCE}-{row}-{c}"
                levels.append(run_level(server.port, c, total, question, args.max_tokens, greedy, tag))
                print(f"   ... {c} clients: {time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.2f}", flush=True)
            print_table(title, levels)
            if greedy:
                good &= check_same(levels)
            else:  # informational: sampled or rule-based answers need not repeat
                print("  answers per clip (distinct): " + ", ".join(
                    f"{c}: {len({a for lv in levels for a in lv.answers.get(c, ())})}" for c in CLIPS))
            for clip in CLIPS:
                sample = next((r.answer for lv in levels for r in lv.results if r.clip == clip and r.status == "ok"), None)
                print(f"    e.g. {clip}: {sample!r:.120}")
    finally:
        code = server.stop()
        out = server.output().strip()
        print(f"   server stopped (exit {code}); its output: {'(none)' if not out else ''}")
        for line in out.splitlines()[-40:]:
            print(f"   | {line}")
        server.close()
    return good


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="lite,small", help="comma-separated: lite, small, or a checkpoint (default: %(default)s)")
    p.add_argument("--levels", default="1,4,16", help="concurrent clients, comma-separated (default: %(default)s)")
    p.add_argument("--max-active", type=int, help="passed to the server (default: the server's)")
    p.add_argument("--max-queue", type=int, help="passed to the server (default: the server's)")
    p.add_argument("--requests-per-client", type=int, help="requests per level = C * this (default: 2*C+4 in all)")
    p.add_argument("--cached", action="store_true",
                   help="send the same bytes for a clip every time (the server's caches answer), not unique ones")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each request (default: %(default)s)")
    args = p.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    started = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"load average at start (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")
    good = True
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        good &= bench_model(name, args)
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"took {time.perf_counter() - started:.0f} s")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
