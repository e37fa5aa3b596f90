"""Load a checkpoint of the real Qwen-Audio-Chat shape (7.7 B parameters) in bfloat16 on this CPU.

    python benchmarks/load_7b.py [--folder /tmp/qwen-audio-7b-random] [--new-tokens 4]

The official weights cannot be fetched here, so the checkpoint is built once with random bfloat16
weights in the official layout (8 shards, 15.5 GB). The load runs in a fresh process that reports
its peak resident memory, the load time, and the speed of a short greedy answer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import TINY, machine, peak_rss_gib

from qwen_audio.config import PRESETS
from qwen_audio.llm import QwenAudioLM


def build(folder: Path, n_shards: int = 8) -> None:
    """Write the random checkpoint shard by shard, so building it never holds all weights at once."""
    from safetensors.torch import save_file

    if (folder / "config.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    cfg = PRESETS["qwen-audio-chat"]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in QwenAudioLM(cfg).state_dict().items()}
    keys, weight_map = sorted(shapes), {}
    g = torch.Generator().manual_seed(0)
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: (torch.randn(shapes[k], generator=g) * 0.02).to(torch.bfloat16) for k in keys[i::n_shards]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
        print(f"  wrote {name}", file=sys.stderr)
        del part
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    for f in ("generation_config.json", "qwen.tiktoken"):
        shutil.copy(TINY / f, folder / f)


def measure(folder: str, new_tokens: int) -> None:
    """Run in a fresh process: load, then answer one text question greedily."""
    import qwen_audio

    t = time.perf_counter()
    model, tok = qwen_audio.load(folder, dtype=torch.bfloat16, device="cpu")
    load_s = time.perf_counter() - t
    peak_load = peak_rss_gib()
    n_params = sum(p.numel() for p in model.parameters())
    stream = model.chat_stream(tok, "Hello, who are you?", None, do_sample=False, max_new_tokens=new_tokens)
    t = time.perf_counter()
    it = iter(stream)
    first = next(it, "")
    first_s = time.perf_counter() - t
    rest = "".join(it)
    total_s = time.perf_counter() - t
    peak = peak_rss_gib()
    print(json.dumps({"params_b": n_params / 1e9, "weights_gb": n_params * 2 / 1e9, "load_s": load_s,
                      "peak_rss_after_load_gb": peak_load, "peak_rss_gb": peak, "prompt_tokens": stream.stats.prompt_tokens,
                      "first_piece_s": first_s, "new_tokens": stream.stats.new_tokens, "answer_s": total_s,
                      "answer_len": len(first + rest)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default="/tmp/qwen-audio-7b-random")
    ap.add_argument("--new-tokens", type=int, default=4)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args.folder, args.new_tokens)
    t = time.perf_counter()
    build(Path(args.folder))
    print(f"machine: {machine()}; checkpoint ready in {time.perf_counter() - t:.0f} s", flush=True)
    out = subprocess.run([sys.executable, __file__, "--measure", "--folder", args.folder, "--new-tokens", str(args.new_tokens)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"model: {r['params_b']:.2f} B parameters, bfloat16 weights {r['weights_gb']:.1f} GB")
    print(f"load: {r['load_s']:.1f} s, peak resident memory {r['peak_rss_after_load_gb']:.1f} GiB "
          f"({r['peak_rss_after_load_gb'] / (r['weights_gb'] / 1.074):.2f}x the weights)")
    decode = (r["answer_s"] - r["first_piece_s"]) / max(r["new_tokens"] - 2, 1)
    print(f"answer: {r['prompt_tokens']}-token prompt, first text after {r['first_piece_s']:.1f} s, "
          f"{r['new_tokens']} tokens in {r['answer_s']:.1f} s (~{decode:.1f} s per decode step); "
          f"peak resident memory {r['peak_rss_gb']:.1f} GiB")


if __name__ == "__main__":
    main()
