"""lite's open-answer LLM alone: time to the first piece and decode tokens/s, per model file.

    python benchmarks/lite_llm.py [--llms qwen2.5-0.5b,qwen2.5-1.5b] [--quantize none,int8,int4] [--new-tokens 64]

Each model answers the same three prompts (a short question, a ~150-token report-like prompt, a Chinese
one), greedy, through `SmolChat.answer` (what lite's open answers call). Printed per model: load seconds,
prompt tokens, seconds to the first piece, decode tokens/s (new tokens after the first, over the time after
the first piece), and the memory-read bound of decoding (bytes of weights per token / read bandwidth).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

PROMPTS = [
    [("user", "Write a short story about a lighthouse keeper who finds a message in a bottle.")],
    [("system", "You answer questions about audio clips from the facts given. Facts: clip 1 (12.4 s): glass "
                "breaking at 0.8-1.6 s, then silence; loudness peaks at 1.1 s; no speech. Clip 2 (5.9 s): a man "
                "speaking English: \"He hoped there would be stew for dinner, turnips and carrots and bruised "
                "potatoes and fat mutton pieces to be ladled out in thick peppered flour fattened sauce.\""),
     ("user", "What happened in the first clip, and what should I do about it? Then compare it with the second.")],
    [("user", "请用三句话描述一下下雨天的声音，并给出一个适合下雨天听的音乐建议。")],
]


def read_gbps() -> float:
    big = torch.ones(1 << 30, dtype=torch.uint8).view(torch.int64)
    big.sum()
    t = time.perf_counter()
    for _ in range(5):
        big.sum()
    return 5 * 8 * big.numel() / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llms", default="qwen2.5-0.5b")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--quantize", default="none", help="comma-separated: none (bfloat16/float32), int8, int4")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from qwen_audio.errors import ModelNotFoundError
    from qwen_audio.lite.llm import SmolChat, load_gguf
    from qwen_audio.lite.weights import resolve_llm
    from qwen_audio.options import GenerationConfig
    from qwen_audio.quantize import QuantLinear

    gbps = read_gbps()
    print(f"machine: {machine()}; memory read {gbps:.1f} GB/s")
    cfg = GenerationConfig(do_sample=False, max_new_tokens=args.new_tokens)
    print("| model | weights | load s | prompt tokens | first piece s | decode tok/s | bound tok/s |")
    print("|---|---|---|---|---|---|---|")
    for name, quantize in [(n, q) for n in args.llms.split(",") for q in args.quantize.split(",")]:
        try:
            path = resolve_llm(which=name)
        except ModelNotFoundError as e:
            print(f"| {name} | {e} |")
            continue
        t = time.perf_counter()
        chat = SmolChat(*load_gguf(path, quantize=None if quantize == "none" else quantize))
        load_s = time.perf_counter() - t
        # Bytes a decode step reads: every linear layer's weights (and scales), the output head included.
        per_token = sum(m.weight.nbytes for m in chat.model.modules() if isinstance(m, torch.nn.Linear))
        per_token += sum(m.weight.nbytes + m.scales.nbytes for m in chat.model.modules() if isinstance(m, QuantLinear))
        dtype = f"{quantize} ({str(chat.model.dtype)[6:]})" if quantize != "none" else str(chat.model.dtype)[6:]
        list(chat.answer(PROMPTS[0], GenerationConfig(do_sample=False, max_new_tokens=2)))  # warm up
        for messages in PROMPTS:
            t = time.perf_counter()
            first, pieces = None, chat.answer(messages, cfg)
            try:
                while True:
                    next(pieces)
                    first = first or time.perf_counter() - t
            except StopIteration as done:
                stats = done.value
            total = time.perf_counter() - t
            tps = (stats.new_tokens - 1) / max(1e-9, total - first)
            print(f"| {name} | {dtype} | {load_s:.1f} | {stats.prompt_tokens} | {first:.2f} | {tps:.1f} | "
                  f"{gbps * 1e9 / per_token:.0f} |", flush=True)


if __name__ == "__main__":
    main()
