"""Prompts on int8 and int4 weights against bfloat16 ones: the real model's linear layers, many rows at a time.

    python benchmarks/quant_prefill.py [--dtype float32] [--avx2] [--rows 64,256,512,2048] [--rounds 5]

For each of the LLM's layer shapes (c_attn 4096 -> 12288, attn c_proj 4096 -> 4096, w1 / w2 4096 -> 11008,
mlp c_proj 11008 -> 4096) and each row count: ms per call of the dense product on the compute dtype's weight,
of `QuantLinear` as it was before (the weight dequantized a block at a time for the dense product; int4 under
96 rows through the packed kernel) and as it is now, each against the dense one; then the new path's error
against the exact product with the dequantized weight (max |error| / max |exact|, 1 - cosine). Then the output
head (155947 rows, int8 in both modes) at 64 and 256 rows. Then, where the lite Qwen2.5-0.5B GGUF is
installed, the int8 activation schemes on its real activations (outliers included): each linear input of
a ~300-token prompt, one int8 part per row (what a plain int8 x int8 product would use) against the two parts
`QuantLinear.int8_product` uses.

Weights are random normal (std 0.02), quantized through `QuantLinear.set_weight`. Every variant has four
copies of each layer, taken in turn, and the variants alternate, so the weights come from memory as in a
model; each number is the best of `--rounds`. `--avx2` runs the same as an AVX2-only CPU would (torch,
oneDNN and MKL held to AVX2; use it with --dtype float32, as bfloat16 is emulated there).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from common import machine
from torch.nn import functional as F

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
SHAPES = (("c_attn", 12288, 4096), ("attn.c_proj", 4096, 4096), ("w1/w2", 11008, 4096), ("mlp.c_proj", 4096, 11008))
HEAD = ("lm_head", 155947, 4096)
COPIES = 4
# The prompt whose activations `real_activations` takes: prose and code, as a chat about audio would have.
PROMPT = """Qwen-Audio listens to a clip and answers questions about it. Ask what the speaker says, which
language it is, when a word is spoken, or what sound is heard in the background: the model reads the audio
as a sequence of embeddings, one for every forty milliseconds, and writes its answer token by token. On a
CPU the weights can be stored as eight-bit or four-bit integers, which makes the model four or eight times
smaller than in float32 and reading it for each new token faster, since decoding is bound by memory.

    def transcribe(path: str, language: str = "en") -> str:
        model, tok = qwen_audio.load("Qwen/Qwen-Audio-Chat", quantize="int8")
        query = tok.from_list_format([{"audio": path}, {"text": f"Transcribe this ({language})."}])
        answer, history = model.chat(tok, query, None, do_sample=False, max_new_tokens=256)
        return answer

A prompt, by contrast, is computed many rows at a time, so there the matrix units of the processor matter:
AMX multiplies tiles of bfloat16 or int8 numbers, VNNI adds products of int8 pairs, and the question is
which of them gives the same answer sooner. The first sentence of a long recording, the speaker's name,
numbers such as 3.14159 or 2048, and punctuation all pass through the same layers."""


def old_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """`QuantLinear.forward` before this benchmark's change: packed kernels up to 32 (int8) / 96 (int4) rows,
    else the weight dequantized 1024 rows at a time (`dequantize_rows`) for the dense product."""
    rows = x.reshape(-1, layer.in_features)
    if rows.shape[0] <= {8: 32, 4: 96}[layer.bits]:
        if layer.bits == 8:
            return torch._weight_int8pack_mm(rows.to(torch.bfloat16), layer.weight, layer.scales).to(x.dtype)
        return torch._weight_int4pack_mm_for_cpu(rows.to(torch.bfloat16), layer.weight, layer.group_size,
                                                 layer.scales).to(x.dtype)
    from qwen_audio.quantize import _SCRATCH

    y = torch.empty(rows.shape[0], layer.out_features, dtype=x.dtype)
    buffer = _SCRATCH.get(1024, layer.in_features, x.dtype)  # as it was: a buffer reused
    for start in range(0, layer.out_features, 1024):
        w = layer.dequantize_rows(start, buffer[:min(1024, layer.out_features - start)])
        y[:, start:start + w.shape[0]] = rows @ w.t()
    return y


def copies(layer, n: int) -> list:
    """`layer` and n - 1 copies of it with weights of their own."""
    from qwen_audio.quantize import QuantLinear

    out = [layer]
    for _ in range(n - 1):
        c = QuantLinear(layer.in_features, layer.out_features, False, layer.bits, layer.group_size)
        c.weight, c.scales = layer.weight.clone(), layer.scales.clone()
        out.append(c)
    return out


def best_ms(variants: dict, rounds: int) -> dict:
    """Best-of-`rounds` ms per call of each variant: a list of calls taken in turn, variants alternating."""
    best = {k: float("inf") for k in variants}
    with torch.inference_mode():
        for calls in variants.values():
            calls[0]()
        for r in range(rounds):
            for k, calls in variants.items():
                f = calls[r % len(calls)]
                t = time.perf_counter()
                f()
                best[k] = min(best[k], 1000 * (time.perf_counter() - t))
    return best


def error(y: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """(max |y - exact| / max |exact|, 1 - cosine), in float64."""
    a, b = y.double().flatten(), exact.double().flatten()
    return float((a - b).abs().max() / b.abs().max()), float(1 - a @ b / (a.norm() * b.norm()))


def layer_table(dtype: torch.dtype, rows: list[int], rounds: int) -> None:
    from qwen_audio.quantize import QuantLinear

    print(f"\n| layer | rows | {dtype_name(dtype)} ms | int8 old | int8 new | int8 old / new vs dense | int4 old | "
          "int4 new | int4 old / new vs dense | int8 new error (max, 1 - cosine) | int4 new error (max, 1 - cosine) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name, n, k in SHAPES:
        w = torch.randn(n, k, generator=g) * 0.02
        dense = [w.to(dtype, copy=True) for _ in range(COPIES)]
        quant = {}
        for bits in (8, 4):
            layer = QuantLinear(k, n, False, bits, 64)
            layer.set_weight(w, dtype)
            quant[bits] = copies(layer, COPIES)
        exact_w = {bits: q[0].dequantize(torch.float32) for bits, q in quant.items()}
        for m in rows:
            x = (torch.randn(m, k, generator=g)).to(dtype)
            variants = {"dense": [lambda d=d, x=x: F.linear(x, d) for d in dense]}
            for bits in (8, 4):
                variants[f"old{bits}"] = [lambda q=q, x=x: old_forward(q, x) for q in quant[bits]]
                variants[f"new{bits}"] = [lambda q=q, x=x: q(x) for q in quant[bits]]
            ms = best_ms(variants, rounds)
            errs = {}
            with torch.inference_mode():
                for bits in (8, 4):
                    errs[bits] = error(quant[bits][0](x), x.float() @ exact_w[bits].t())
            d = ms["dense"]
            print(f"| {name} {k}->{n} | {m} | {d:.1f} | {ms['old8']:.1f} | {ms['new8']:.1f} | "
                  f"{d / ms['old8']:.2f}x / {d / ms['new8']:.2f}x | {ms['old4']:.1f} | {ms['new4']:.1f} | "
                  f"{d / ms['old4']:.2f}x / {d / ms['new4']:.2f}x | {errs[8][0]:.1e}, {errs[8][1]:.0e} | "
                  f"{errs[4][0]:.1e}, {errs[4][1]:.0e} |", flush=True)
        del dense, quant, exact_w


def head_table(dtype: torch.dtype, rounds: int) -> None:
    from qwen_audio.quantize import QuantLinear

    name, n, k = HEAD
    g = torch.Generator().manual_seed(1)
    w = torch.randn(n, k, generator=g) * 0.02
    layer = QuantLinear(k, n, False, 8)
    layer.set_weight(w, dtype)
    dense = w.to(dtype)
    del w
    for m in (64, 256):
        x = torch.randn(m, k, generator=g).to(dtype)
        ms = best_ms({"dense": [lambda x=x: F.linear(x, dense)], "old": [lambda x=x: old_forward(layer, x)],
                      "new": [lambda x=x: layer(x)]}, max(2, rounds // 2))
        print(f"{name} {k}->{n} (int8), {m} rows: {dtype_name(dtype)} {ms['dense']:.0f} ms, int8 old {ms['old']:.0f} ms "
              f"({ms['dense'] / ms['old']:.2f}x), new {ms['new']:.0f} ms ({ms['dense'] / ms['new']:.2f}x)", flush=True)


def real_activations() -> None:
    """The two int8 activation schemes on a real model's activations (the lite Qwen2.5-0.5B, if installed)."""
    from qwen_audio.quantize import QuantLinear

    try:
        from qwen_audio.lite.llm import load_gguf
        from qwen_audio.lite.weights import resolve_llm

        path = resolve_llm(None, "qwen2.5-0.5b")
    except Exception as e:  # not installed (or no gguf reader): the section is skipped, saying why
        print(f"\nreal activations: skipped ({type(e).__name__}: {e})")
        return
    model, tok = load_gguf(path, dtype=torch.float32)
    inputs = {}

    def keep(name):
        return lambda module, args: inputs.__setitem__(name, (args[0].reshape(-1, args[0].shape[-1]).clone(), module))

    for i, layer in enumerate(model.model.layers):
        for part, linear in (("q_proj", layer.self_attn.q_proj), ("o_proj", layer.self_attn.o_proj),
                             ("gate_proj", layer.mlp.gate_proj), ("down_proj", layer.mlp.down_proj)):
            linear.register_forward_pre_hook(keep(f"{i}.{part}"))
    ids = tok.encode(PROMPT)[:300]
    with torch.inference_mode():
        model(torch.tensor([ids]))
    rows: dict[str, list] = {}
    for key, (x, module) in inputs.items():
        layer = QuantLinear(module.in_features, module.out_features, False, 8)
        layer.set_weight(module.weight.detach(), torch.float32)
        wq = layer.dequantize(torch.float64)
        exact = x.double() @ wq.t()
        s = x.abs().amax(1, keepdim=True) / 127
        one = ((x / s).round() * s).double() @ wq.t()  # one int8 part per row
        with torch.inference_mode():
            two = layer.int8_product(x)  # two parts, float32 compute
            bf16 = layer.dense_product(x.bfloat16())  # the dense product on bfloat16 activations, for scale
        ratio = float((x.abs().amax(1) / x.pow(2).mean(1).sqrt()).max())
        rows.setdefault(key.split(".")[1], []).append([ratio, *error(one, exact), *error(two, exact), *error(bf16, exact)])
    print(f"\nreal activations: Qwen2.5-0.5B (lite GGUF), a {len(ids)}-token prompt, every linear's input, int8 "
          f"weights; the worst of its {len(model.model.layers)} layers; error against the exact product with the int8 weight")
    print("| linear | largest max/rms of a row | one int8 part (max, 1 - cosine) | two parts, int8_product "
          "(max, 1 - cosine) | bfloat16 activations, dense_product (max, 1 - cosine) |")
    print("|---|---|---|---|---|")
    for kind, r in rows.items():
        c = list(zip(*r))
        print(f"| {kind} | {max(c[0]):.0f} | {max(c[1]):.1e}, {max(c[2]):.0e} | {max(c[3]):.1e}, {max(c[4]):.0e} | "
              f"{max(c[5]):.1e}, {max(c[6]):.0e} |")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--rows", default="64,256,512,2048")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--avx2", action="store_true", help="hold torch, oneDNN and MKL to AVX2, as an AVX2-only CPU")
    p.add_argument("--no-head", action="store_true")
    p.add_argument("--no-real", action="store_true")
    args = p.parse_args()
    if args.avx2 and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})
    torch.set_num_threads(args.threads)
    from qwen_audio.cpu import describe
    from qwen_audio.quantize import int8_products

    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    print(f"machine: {machine()}; {describe()}; int8 products (torch._int_mm exact): {int8_products()}"
          + ("; held to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS)" if args.avx2 else ""))
    layer_table(dtype, [int(r) for r in args.rows.split(",")], args.rounds)
    if not args.no_head:
        print()
        head_table(dtype, args.rounds)
    if not args.no_real:
        real_activations()
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
