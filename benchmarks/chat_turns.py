"""Turn latency of a two-turn conversation, cached (ours) and recomputed each turn (the published way).

    python benchmarks/chat_turns.py [--size small|tiny|7b] [--new-tokens 16] [--interleaved]

The published code re-decodes and re-encodes every clip and recomputes the whole prompt each turn;
ours reuses decoded clips, encoder features and the prompt's keys/values when they are exact.
"small" is a random checkpoint of 0.19 B parameters with the real vocabulary (built once under
/tmp); "tiny" is the shared fixture. Greedy answers are identical in both modes (checked here).

`--interleaved` also runs two conversations in turns on one model (A1, B1, A2, B2: two users of one
server) and times each one's turn 2 with the engine's pool and with one cache slot (the previous
design, where B's turn 1 displaced A's keys and values).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import AUDIO, TINY, machine, random_checkpoint

import qwen_audio
from qwen_audio.config import AudioConfig, ModelConfig
from qwen_audio.engine import Engine, EngineConfig

SMALL = ModelConfig(dim=512, n_layer=8, n_head=8, head_dim=64, ffn_dim=1408,
                    audio=AudioConfig(n_state=384, n_head=6, n_layer=4, output_dim=512))


def conversation(tok):
    return [
        tok.from_list_format([{"audio": str(AUDIO / "1272-128104-0000.flac")}, {"text": "what is that sound?"}]),
        tok.from_list_format([{"text": 'Find the start time and end time of the word "middle classes"'}]),
    ]


def run(model, tok, cached: bool, new_tokens: int) -> tuple[list[tuple[float, float]], list[str]]:
    """[(seconds to the first text, seconds for the whole answer)] per turn, and the answers."""
    # The published code decodes and encodes every clip and computes the whole prompt each turn: an
    # engine that keeps nothing does the same.
    keep_nothing = EngineConfig(feature_bytes=0, clip_bytes=0, reuse=False)
    model.engine = Engine(model, EngineConfig() if cached else keep_nothing)
    times, answers, history = [], [], None
    for query in conversation(tok):
        t = time.perf_counter()
        stream = model.chat_stream(tok, query, history, do_sample=False, max_new_tokens=new_tokens)
        pieces = iter(stream)
        next(pieces, "")
        first_s = time.perf_counter() - t
        "".join(pieces)
        times.append((first_s, time.perf_counter() - t))
        answers.append(stream.response)
        history = stream.history
    return times, answers


def interleaved(model, tok, kv_bytes: int, new_tokens: int) -> tuple[list[float], list[int]]:
    """A1, B1, A2, B2 on one engine with `kv_bytes` for prefixes: (turn 2 first-text seconds, reused tokens)
    for A and B."""
    model.engine = Engine(model, EngineConfig(kv_bytes=kv_bytes))
    gen = dict(do_sample=False, max_new_tokens=new_tokens)
    clips = [str(AUDIO / "1272-128104-0000.flac"), str(AUDIO / "1089_134686_000007_000004.wav")]
    histories = [model.chat(tok, tok.from_list_format([{"audio": c}, {"text": "what is that sound?"}]), None, **gen)[1]
                 for c in clips]
    seconds, reused = [], []
    for h in histories:
        t = time.perf_counter()
        stream = model.chat_stream(tok, "What is the speaker's emotion?", h, **gen)
        pieces = iter(stream)
        next(pieces, "")
        seconds.append(time.perf_counter() - t)
        "".join(pieces)
        reused.append(stream.stats.reused_tokens)
    return seconds, reused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["small", "tiny", "7b"], default="small",
                    help="7b: the real shape in bfloat16, from benchmarks/load_7b.py's checkpoint")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interleaved", action="store_true", help="also time two conversations run in turns")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    dtype = torch.bfloat16 if args.size == "7b" else torch.float32
    if args.size == "7b":
        folder = Path(tempfile.gettempdir()) / "qwen-audio-7b-random"
        if not (folder / "config.json").is_file():
            raise SystemExit(f"{folder} not found: run benchmarks/load_7b.py first (it builds the checkpoint)")
    elif args.size == "tiny":
        folder = TINY
    else:
        folder = random_checkpoint(Path(tempfile.gettempdir()) / "qwen-audio-bench-small", SMALL)
    model, tok = qwen_audio.load(folder, dtype=dtype, device="cpu")
    n_params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"machine: {machine()}")
    print(f"model: {args.size} ({n_params:.2f} B parameters, {str(dtype)[6:]}), greedy, {args.new_tokens} new tokens per turn")
    if args.repeats > 1:
        run(model, tok, True, args.new_tokens)  # warm-up
    results = {}
    for cached in (False, True):
        runs = [run(model, tok, cached, args.new_tokens) for _ in range(args.repeats)]
        med = [[statistics.median(r[0][turn][k] for r in runs) for k in range(2)] for turn in range(2)]
        results[cached] = (med, runs[0][1])
    assert results[True][1] == results[False][1], "cached and recomputed answers differ"
    print(f"{'':<28}{'turn 1 first text / all':>26}{'turn 2 first text / all':>26}")
    for cached, name in ((False, "recomputed (published way)"), (True, "cached (qwen-audio)")):
        (f1, a1), (f2, a2) = results[cached][0]
        print(f"{name:<28}{f1:>14.3f}s /{a1:>7.3f}s{f2:>14.3f}s /{a2:>7.3f}s")
    (uf, ua), (cf, ca) = results[False][0][1], results[True][0][1]
    print(f"turn 2: first text {uf / cf:.1f}x sooner, whole answer {ua / ca:.1f}x faster; answers identical: yes")
    if args.interleaved:
        one_slot = 400 * model.engine.column_bytes()  # room for one of these conversations, not two
        print("\ntwo conversations in turns (A1, B1, A2, B2): turn 2 first text, prompt tokens reused")
        for name, budget in (("one cache slot (before)", one_slot), ("prefix pool (qwen-audio)", EngineConfig.kv_bytes)):
            runs = [interleaved(model, tok, budget, args.new_tokens) for _ in range(args.repeats)]
            (a, b), reused = [statistics.median(r[0][i] for r in runs) for i in range(2)], runs[0][1]
            print(f"{name:<28} A {a:.3f}s ({reused[0]} reused)   B {b:.3f}s ({reused[1]} reused)")


if __name__ == "__main__":
    main()
