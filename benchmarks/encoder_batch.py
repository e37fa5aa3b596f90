"""The audio encoder under concurrent requests: each request's clip encoded on its own thread (the engine
before), one request at a time, or batched across waiting requests (`engine.batcher.Batcher`, the engine now).

    python benchmarks/encoder_batch.py [--layers 4] [--seconds 5,10,30] [--clients 1,4,8] [--dtype bf16] [--repeats 3]

The encoder is Qwen-Audio's shape (width 1280, 20 heads, FFN 5120, output 4096) with `--layers` of its 32
layers and random weights. Each client is a thread that, released together with the others, asks for the
features of its own clip of `--seconds` (all the same length, so all padded alike: what the engine batches);
printed are clips/s over the wall time and the median time a client waited (the best of `--repeats` runs),
after how well one pass uses the cores (one thread against all). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from common import machine

from qwen_audio.audio import audio_length
from qwen_audio.config import AudioConfig
from qwen_audio.encoder import AudioEncoder
from qwen_audio.engine.batcher import Batcher

DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}


def encoder(layers: int, dtype: torch.dtype) -> AudioEncoder:
    enc = AudioEncoder(AudioConfig(n_layer=layers)).to(dtype).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.02)
    enc.init_buffers()
    return enc


def run(enc: AudioEncoder, mode: str, clients: int, seconds: float) -> tuple[float, float]:
    """(clips/s, median seconds from the start to a client's features)."""
    length = audio_length(int(seconds * 16000))
    mels = [torch.randn(80, 3000) for _ in range(clients)]

    @torch.inference_mode()
    def encode(t_max, items):
        return enc.embed_audio(torch.stack([m for m, _ in items]), [n for _, n in items], t_max)

    batcher = Batcher(encode, max_items=16 if mode == "batched" else 1)
    start, waits = threading.Barrier(clients + 1), []

    def client(i: int) -> None:
        start.wait()
        t = time.perf_counter()
        if mode == "threads":
            encode(length.after_cnn, [(mels[i], length)])
        else:
            batcher(length.after_cnn, [(mels[i], length)])
        waits.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return clients / (time.perf_counter() - t0), statistics.median(waits)


def one_pass(enc: AudioEncoder, seconds: float = 10.0) -> None:
    """How well one pass uses the cores: a clip's pass on one thread and on all of them (best of 3)."""
    length, mel, threads = audio_length(int(seconds * 16000)), torch.randn(1, 80, 3000), torch.get_num_threads()
    times = {}
    with torch.inference_mode():
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                enc.embed_audio(mel, [length])
                best = min(best, time.perf_counter() - t)
            times[n] = best
    torch.set_num_threads(threads)
    print(f"one pass over a {seconds:g} s clip: {times[1]:.3f} s on 1 thread, {times[threads]:.3f} s on {threads} "
          f"({times[1] / times[threads] / threads:.0%} of {threads}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seconds", default="5,10,30")
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(machine())
    enc = encoder(a.layers, DTYPES[a.dtype])
    run(enc, "batched", 1, 5.0)  # warm-up
    one_pass(enc)
    print(f"\nencoder: width 1280, {a.layers} of 32 layers, {a.dtype}; clips/s (median wait, s)\n")
    clients = [int(c) for c in a.clients.split(",")]
    print("| clip | mode | " + " | ".join(f"{c} clients" for c in clients) + " |")
    print("|---|---|" + "---|" * len(clients))
    for seconds in [float(s) for s in a.seconds.split(",")]:
        for mode in ("threads", "one at a time", "batched"):
            cells = []
            for c in clients:
                rate, wait = max(run(enc, mode, c, seconds) for _ in range(a.repeats))  # the best of the repeats
                cells.append(f"{rate:.2f} ({wait:.2f})")
            print(f"| {seconds:g} s | {mode} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
