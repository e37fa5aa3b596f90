"""The real model's shape on this CPU in bfloat16, int8 and int4: speed against the memory bound, memory, quality.

    python benchmarks/cpu_quant.py [--modes bf16,int8,int4] [--new-tokens 8] [--avx2]

Uses the 16.8 GB random checkpoint of the real shape that `benchmarks/load_7b.py` builds. Prints, from one run:
the machine's memory-read bandwidth and its matrix-vector rates (4096 x 11008, weights far larger than the
caches) in float32, bfloat16, int8 and int4; then per mode, each in a fresh process: load time and peak
resident memory, decode tokens/s and its share of the bandwidth bound (bytes of weights read per token /
bandwidth), prefill tokens/s, the audio encoder on a 30 s clip, time to first text of the tutorial's first
question and of a cached turn 2; and the quantized modes' next-token logits against bfloat16 (cosine, top-1
agreement) over teacher-forced positions. `--avx2` runs the same on this machine as an AVX2-only CPU
(torch and oneDNN held to AVX2, bfloat16 treated as emulated).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import AUDIO, machine

FOLDER = Path(tempfile.gettempdir()) / "qwen-audio-7b-random"
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "QWEN_AUDIO_NATIVE_BF16": "0"}


def timed(f, repeats: int) -> float:
    f()
    t = time.perf_counter()
    for _ in range(repeats):
        f()
    return (time.perf_counter() - t) / repeats


def cycled_ms(layers: list, x: torch.Tensor, rounds: int = 3) -> float:
    """ms per call of `layers[i](x)`, taking the layers in turn (so each call reads its weight from memory)."""
    with torch.inference_mode():
        for layer in layers:
            layer(x)
        t = time.perf_counter()
        for _ in range(rounds):
            for layer in layers:
                layer(x)
    return 1000 * (time.perf_counter() - t) / (rounds * len(layers))


def kernels() -> dict:
    """GB/s read, and ms per 4096 x 11008 matrix-vector product per storage type, cycling through weights
    that together are far larger than the caches (as decoding reads a model)."""
    from qwen_audio.quantize import QuantLinear

    big = torch.ones(1 << 30, dtype=torch.uint8)  # 1 GiB
    words = big.view(torch.int64)
    read_gbs = big.numel() / timed(lambda: words.sum(), 5) / 1e9
    n, k, copies = 11008, 4096, 12
    out = {"read_GBps": read_gbs}
    g = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=g) * 0.02
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        layers = []
        for _ in range(copies):
            layer = torch.nn.Linear(k, n, bias=False, dtype=dtype)
            layer.weight.data.copy_(w)
            layers.append(layer)
        out[f"{name}_ms"] = cycled_ms(layers, torch.randn(1, k, dtype=dtype))
    for name, bits in (("int8", 8), ("int4", 4)):
        for act in (torch.bfloat16, torch.float32):
            layers = []
            for _ in range(copies):
                layer = QuantLinear(k, n, False, bits, 64)
                layer.set_weight(w, act)
                layers.append(layer)
            out[f"{name}_{'bf16' if act == torch.bfloat16 else 'fp32'}_act_ms"] = cycled_ms(layers, torch.randn(1, k, dtype=act))
    return out


# The per-mode measurement, in a fresh process so that its peak memory is its own.
CASE = r"""
import json, sys, time, warnings
import numpy as np, torch
sys.path.insert(0, {bench!r})
from common import peak_rss_gib
import qwen_audio
from qwen_audio.audio import load_clip
warnings.simplefilter("ignore")
mode, folder, new_tokens, logits_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t = time.perf_counter()
kw = {{"dtype": torch.bfloat16}} if mode == "bf16" else {{"quantize": mode}}
model, tok = qwen_audio.load(folder, device="cpu", **kw)
load_s, load_peak = time.perf_counter() - t, peak_rss_gib()
r = {{"mode": mode, "compute_dtype": str(model.dtype)[6:], "load_s": load_s, "load_peak_gib": load_peak}}
# Next-token logits of 64 teacher-forced positions, for the quality comparison.
ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog near the river bank, and then " * 4)[:64]])
with torch.inference_mode():
    np.save(logits_out, model(ids)[0].float().numpy())
# Decode speed: a short text prompt, greedy.
stream = model.chat_stream(tok, "Hello, who are you?", None, do_sample=False, max_new_tokens=new_tokens + 1)
times, last = [], time.perf_counter()
for piece in stream:
    now = time.perf_counter(); times.append(now - last); last = now
steps = stream.stats.new_tokens
r["decode_s_per_token"] = (stream.stats.total_s - stream.stats.first_text_s) / max(1, len(times) - 1)
# Prefill: 256 text tokens at once.
ids = torch.tensor([tok.encode("word " * 400)[:256]])
cache = model.new_cache(1, 257)
with torch.inference_mode():
    t = time.perf_counter(); model(ids, 0, cache, last_only=True); r["prefill_tokens_per_s"] = 256 / (time.perf_counter() - t)
# The audio encoder on a 30 s clip.
clip = load_clip({music!r}, max_samples=480000)
with torch.inference_mode():
    mel = clip.mel()[None]
    model.embed_audio(mel, [clip.length])
    t = time.perf_counter(); model.embed_audio(mel, [clip.length]); r["encoder_s_30s"] = time.perf_counter() - t
# The tutorial's first question, then its grounding follow-up (a cached turn 2): time to first text.
q = tok.from_list_format([{{"audio": {flac!r}}}, {{"text": "what is that sound?"}}])
s1 = model.chat_stream(tok, q, None, do_sample=False, max_new_tokens=4); list(s1)
s2 = model.chat_stream(tok, 'Find the start time and end time of the word "middle classes"', s1.history,
                       do_sample=False, max_new_tokens=4); list(s2)
r.update(turn1_first_text_s=s1.stats.first_text_s, turn1_prompt=s1.stats.prompt_tokens,
         turn2_first_text_s=s2.stats.first_text_s, turn2_reused=s2.stats.reused_tokens, peak_gib=peak_rss_gib())
print(json.dumps(r))
"""


SAVED = r"""
import sys, time
sys.path.insert(0, {bench!r})
from common import peak_rss_gib
import qwen_audio
src, dst, step = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if step == "save":
    model, _ = qwen_audio.load(src, quantize="int8")
    model.save_quantized(dst)
else:
    model, tok = qwen_audio.load(dst)
    model.chat(tok, "Hello", None, do_sample=False, max_new_tokens=2)
print(time.perf_counter() - t, peak_rss_gib())
"""


def saved_int8() -> tuple[float, float, float]:
    """(seconds to quantize and save, seconds to load the saved int8 folder and answer, its peak GiB)."""
    dst = Path(tempfile.gettempdir()) / "qwen-audio-7b-random-int8"
    code = SAVED.format(bench=str(Path(__file__).parent))
    runs = []
    for step in ("save", "load"):
        out = subprocess.run([sys.executable, "-c", code, str(FOLDER), str(dst), step], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"saved int8 ({step}) failed:\n{out.stderr[-3000:]}")
        runs.append([float(x) for x in out.stdout.split()])
    return runs[0][0], runs[1][0], runs[1][1]


def goldens_int8() -> tuple[int, int]:
    """How many of the published greedy answers on the tiny checkpoint its int8 form gives word for word."""
    from common import TINY

    import qwen_audio

    goldens = json.loads((TINY / "goldens.json").read_text())
    model, tok = qwen_audio.load(TINY, dtype=torch.float32, quantize="int8")
    same = total = 0
    for c in goldens["chat"]:
        history = []
        for turn in c["turns"]:
            items = [{"audio": str(AUDIO / it["audio"])} if "audio" in it else it for it in turn["items"]]
            query = tok.from_list_format(items)
            response, _ = model.chat(tok, query, history, do_sample=False, max_new_tokens=12)
            same, total = same + (response == turn["greedy_response"]), total + 1
            history.append((query, turn["greedy_response"]))
    return same, total


def weight_bytes_per_token(mode: str) -> float:
    """Bytes of weights one decode step reads: every LLM linear and the output head (embedding rows: ~0)."""
    from qwen_audio.config import ModelConfig

    cfg = ModelConfig.from_json(FOLDER / "config.json")
    layer = cfg.dim * 3 * cfg.dim + cfg.dim * cfg.dim + 3 * cfg.dim * cfg.ffn_dim
    linears, head = cfg.n_layer * layer, cfg.vocab_size * cfg.dim
    if mode == "bf16":
        return 2 * (linears + head)
    if mode == "int8":
        return linears + head
    group = int(mode.split("-")[1]) if "-" in mode else 64  # "int4" or "int4-32", "int4-128"
    return linears * (0.5 + 4 / group) + head  # int4: two bf16 numbers a group; the head int8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="bf16,int8,int4")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--avx2", action="store_true", help="hold torch and oneDNN to AVX2, as an AVX2-only CPU")
    args = p.parse_args()
    if args.avx2 and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})
    if not (FOLDER / "config.json").is_file():
        raise SystemExit(f"{FOLDER} not found: run benchmarks/load_7b.py first (it builds the checkpoint)")
    from qwen_audio.cpu import describe, native_bf16

    print(f"machine: {machine()}; {describe()}; bf16 native: {native_bf16()}"
          + ("; held to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)" if args.avx2 else ""))
    k = kernels()
    print(f"memory read: {k['read_GBps']:.1f} GB/s; 4096x11008 matrix-vector product, ms (weights from memory): "
          f"fp32 {k['fp32_ms']:.2f}, bf16 {k['bf16_ms']:.2f}, int8 {k['int8_bf16_act_ms']:.2f} (from float32 inputs "
          f"{k['int8_fp32_act_ms']:.2f}), int4 {k['int4_bf16_act_ms']:.2f} ({k['int4_fp32_act_ms']:.2f})", flush=True)
    code = CASE.format(bench=str(Path(__file__).parent), music=str(AUDIO / "music.wav"),
                       flac=str(AUDIO / "1272-128104-0000.flac"))
    results, logits = {}, {}
    tmp = Path(tempfile.mkdtemp())
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, "-c", code, mode, str(FOLDER), str(args.new_tokens), str(tmp / f"{mode}.npy")],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        logits[mode] = np.load(tmp / f"{mode}.npy")
        print(f"  {mode} done: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results[mode].items()})}",
              flush=True)
    print("\n| mode | compute | load s | peak GiB | decode tok/s | % of bound | vs bf16 | prefill tok/s | "
          "encoder s / 30 s | turn 1 first text s | turn 2 first text s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = results.get("bf16", {}).get("decode_s_per_token")
    for mode, r in results.items():
        tps = 1 / r["decode_s_per_token"]
        bound = k["read_GBps"] * 1e9 / weight_bytes_per_token(mode)
        vs = f"{base / r['decode_s_per_token']:.2f}x" if base else "-"
        print(f"| {mode} | {r['compute_dtype']} | {r['load_s']:.1f} | {r['peak_gib']:.1f} | {tps:.2f} "
              f"| {100 * tps / bound:.0f} % | {vs} | {r['prefill_tokens_per_s']:.0f} | {r['encoder_s_30s']:.2f} "
              f"| {r['turn1_first_text_s']:.2f} | {r['turn2_first_text_s']:.2f} |")
    if "bf16" in logits:
        ref = logits["bf16"]
        for mode in logits:
            if mode == "bf16":
                continue
            a, b = logits[mode], ref
            cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            agree = (a.argmax(-1) == b.argmax(-1)).mean()
            print(f"quality {mode} vs bf16 over {len(a)} teacher-forced positions: logits cosine min {cos.min():.4f} "
                  f"mean {cos.mean():.4f}; top-1 agreement {100 * agree:.0f} %")
    same, total = goldens_int8()
    print(f"greedy answers of the shared goldens (tiny checkpoint, float32 compute) unchanged in int8: {same}/{total}")
    if "int8" in results:
        save_s, load_s, peak = saved_int8()
        print(f"int8 saved once (quantize + write): {save_s:.0f} s; the saved folder loads and answers in {load_s:.1f} s, "
              f"peak {peak:.1f} GiB")


if __name__ == "__main__":
    main()
