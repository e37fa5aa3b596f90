"""The engine's scheduler at the real width: output tokens/s as clients are added, and a short request's
first text while a long prompt is being read.

    python benchmarks/scheduler_bench.py [--layers 4] [--modes bf16,int8] [--clients 1,4,8,16] [--new-tokens 32]

The model is the 7B's shape (width 4096, 32 heads, FFN 11008, the real vocabulary and tokenizer) with
`--layers` decoder layers and random weights, built once under /tmp. Each client is a thread asking its
own question (greedy, `--new-tokens` tokens); output tokens/s is all clients' tokens over the wall time.
The same load with `max_batch=1` (one answer per forward pass, as before the scheduler) is the baseline.

Then: a long prompt (`--long-tokens` tokens of text) is submitted, and while it is being read a short
question is asked; its time to first text is compared with the same question alone and with one step's
time (the step budget, `step_tokens` prompt tokens per forward pass).

Then, in the first mode, memory: `--memory-clients` clients at once on a key/value budget of
`--budget-answers` whole answers (prompt plus `--max-new` columns), each answer allowed `--max-new` tokens
and stopped after `--new-tokens` (as a stop string or a closed stream stops it). Caches reserved whole at
admission (`grow_tokens` = `--max-new`, the scheduler's old admission) against caches that grow as answers
write (the default `grow_tokens`); then answers read to `--max-new` on the same budget, where growing
caches must preempt: answers at once, preemptions, output tokens/s, and how many answers equal the ones
written with room for all (and for how many tokens they agree: batches of other sizes round bfloat16 sums
differently, which flips near-ties of random weights).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
from common import machine, random_checkpoint

import qwen_audio
from qwen_audio.config import PRESETS
from qwen_audio.engine import Engine, EngineConfig
from qwen_audio.messages import tutorial_conversation
from qwen_audio.tokenizer import DEFAULT_SYSTEM


def build(layers: int) -> Path:
    base = PRESETS["qwen-audio-chat"]
    cfg = replace(base, n_layer=layers, audio=replace(base.audio, n_layer=1))
    return random_checkpoint(Path(tempfile.gettempdir()) / f"qwen-audio-width-{layers}-layers", cfg)


def ask(model, tok, question: str, new_tokens: int) -> tuple[int, float | None, float]:
    """(tokens written, seconds to first text, seconds in all) of one greedy answer."""
    stream = model.chat_stream(tok, question, None, do_sample=False, max_new_tokens=new_tokens)
    for _ in stream:
        pass
    return stream.stats.new_tokens, stream.stats.first_text_s, stream.stats.total_s


def load_level(model, tok, clients: int, new_tokens: int) -> float:
    """Output tokens/s of `clients` threads each asking one question at the same time."""
    counts = [0] * clients

    def client(i: int) -> None:
        counts[i] = ask(model, tok, f"Client {i}: write a long story about the number {i * 7919}.", new_tokens)[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(counts) / (time.perf_counter() - t)


def long_and_short(model, tok, long_tokens: int, new_tokens: int) -> dict:
    """A short question's first text alone, and while a prompt of `long_tokens` tokens is being read."""
    model.engine.prefixes.clear()
    short = "Say hello."
    ask(model, tok, short, 4)  # warm
    model.engine.prefixes.clear()
    alone = ask(model, tok, short, 4)[1]
    model.engine.prefixes.clear()
    long_text = " ".join(f"w{i % 97}" for i in range(long_tokens // 2))
    n_long = len(tok.encode(long_text))
    done = {}

    def long_client() -> None:
        done["long"] = ask(model, tok, long_text, new_tokens)

    th = threading.Thread(target=long_client)
    steps0 = model.engine.scheduler.steps
    th.start()
    while model.engine.scheduler.steps < steps0 + 2:  # the long prompt is being read
        time.sleep(0.01)
    during = ask(model, tok, short, 4)[1]
    th.join()
    long_first = done["long"][1]
    steps = model.engine.scheduler.steps - steps0
    return {"alone": alone, "during": during, "long_first": long_first, "long_prompt": n_long,
            "step_s": long_first / max(1, -(-n_long // model.engine.config.step_tokens)), "steps": steps}


def memory_level(model, tok, clients: int, read: int, max_new: int, grow: int, kv_columns: int) -> dict:
    """`clients` answers at once on a budget of `kv_columns` cache columns, each stopped after `read` tokens."""
    model.engine = engine = Engine(model, EngineConfig(kv_bytes=kv_columns * model.engine.column_bytes(),
                                                       grow_tokens=grow))
    cfg = model.options(do_sample=False, max_new_tokens=max_new)
    prepared = [engine.prepare(tok, tutorial_conversation(f"Client {i}: tell a story about {i * 7919}.", [],
                                                          DEFAULT_SYSTEM), cfg) for i in range(clients)]
    answers, firsts = [None] * clients, [0.0] * clients
    t = time.perf_counter()

    def client(i: int) -> None:
        tokens, out = engine.tokens(prepared[i], cfg, set()), []
        for token in tokens:
            if not out:
                firsts[i] = time.perf_counter() - t
            out.append(token)
            if len(out) == read:
                break
        tokens.close()
        answers[i] = out

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {"answers": answers, "tokens_s": sum(map(len, answers)) / wall, "peak": engine.scheduler.peak_running,
            "preemptions": engine.scheduler.preemptions, "first_p50": sorted(firsts)[clients // 2],
            "prompt": max(len(p.ids) for p in prepared)}


def common(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share before they first differ."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def memory(model, tok, clients: int, stop_after: int, max_new: int, budget_answers: int) -> None:
    prompt = memory_level(model, tok, clients, 1, 1, 1, 1 << 16)["prompt"]  # warm, and the longest prompt
    columns = budget_answers * (prompt + max_new)
    print(f"\nmemory: {clients} clients at once, a budget of {columns} cache columns ({budget_answers} whole answers "
          f"of a prompt of up to {prompt} tokens and {max_new} new tokens), greedy")
    print("| answers | caches | answers at once (peak) | preemptions | output tokens/s | first token p50 s | "
          "answers equal to room for all, tokens before the first difference (median) |")
    print("|---|---|---|---|---|---|---|")
    for read in (stop_after, max_new):
        roomy = memory_level(model, tok, clients, read, max_new, max_new, clients * (prompt + max_new))["answers"]
        for name, grow in (("reserved whole at admission", max_new), ("growing", EngineConfig.grow_tokens)):
            r = memory_level(model, tok, clients, read, max_new, grow, columns)
            same = sum(a == b for a, b in zip(r["answers"], roomy))
            agree = sorted(common(a, b) for a, b in zip(r["answers"], roomy))[clients // 2]
            print(f"| stopped after {read} | {name} (grow_tokens={grow}) | {r['peak']} | {r['preemptions']} | "
                  f"{r['tokens_s']:.1f} | {r['first_p50']:.2f} | {same}/{clients}, {agree} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--modes", default="bf16,int8")
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--long-tokens", type=int, default=4096)
    ap.add_argument("--step-tokens", type=int, default=EngineConfig.step_tokens)
    ap.add_argument("--memory-clients", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--budget-answers", type=int, default=4)
    args = ap.parse_args()
    folder = build(args.layers)
    levels = [int(c) for c in args.clients.split(",")]
    print(f"machine: {machine()}")
    print(f"model: the 7B's width, {args.layers} decoder layers, random weights; {args.new_tokens} new tokens a "
          f"client; step budget {args.step_tokens} tokens")
    for i, mode in enumerate(args.modes.split(",")):
        quantize = None if mode == "bf16" else mode
        model, tok = qwen_audio.load(folder, dtype=torch.bfloat16, quantize=quantize)
        if i == 0 and args.memory_clients:
            memory(model, tok, args.memory_clients, args.new_tokens, args.max_new, args.budget_answers)
        rows = []
        for max_batch in (1, 16):
            model.engine = Engine(model, EngineConfig(max_batch=max_batch, step_tokens=args.step_tokens))
            load_level(model, tok, 1, 4)  # warm
            rows.append([load_level(model, tok, c, args.new_tokens) for c in levels])
        print(f"\n{mode}: output tokens/s by clients")
        print("| clients | " + " | ".join(str(c) for c in levels) + " |")
        print("|---|" + "---|" * len(levels))
        print("| one answer per step (max_batch=1) | " + " | ".join(f"{x:.1f}" for x in rows[0]) + " |")
        print("| scheduler (max_batch=16) | " + " | ".join(f"{x:.1f}" for x in rows[1]) + " |")
        print("| scheduler / 1 client | " + " | ".join(f"{x / rows[1][0]:.2f}x" for x in rows[1]) + " |")
        r = long_and_short(model, tok, args.long_tokens, 8)
        print(f"{mode}: a short question's first text: alone {r['alone']:.2f} s; while a {r['long_prompt']}-token "
              f"prompt is read {r['during']:.2f} s (a prompt step takes {r['step_s']:.2f} s; the long prompt's "
              f"first text {r['long_first']:.1f} s)")
        del model


if __name__ == "__main__":
    main()
