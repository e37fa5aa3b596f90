"""int8 weights at a decoding batch's few rows: each path `QuantLinear` can take, against bfloat16.

    python benchmarks/int8_rows.py [--rows 1,4,6,8,16] [--rounds 5]

For the output head (155947 x 4096) and an FFN weight (11008 x 4096), ms per call at each row count of: torch's
packed int8 kernel (`_weight_int8pack_mm`, what `QuantLinear` uses up to 5 rows), the exact int8 products
(`QuantLinear.int8_product`, from 6 rows), the same products alone (`torch._int_mm` on the two-part rows, the
scales left out), the weight converted a block at a time for the dense product, and the dense bfloat16 product.
Why int8 batches less well than bfloat16: the packed kernel makes a pass over the weight for every 4 rows, and
the int8 products go through oneDNN's s8 gemm, which packs its weight operand on every call (ONEDNN_VERBOSE=1
shows `gemm_api`). Each number is the best of `--rounds`; random weights; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from qwen_audio.quantize import INT8_MM_COLS, QuantLinear  # noqa: E402

SHAPES = (("lm_head", 155947, 4096), ("w1/w2", 11008, 4096))


def best_ms(f, rounds: int) -> float:
    f()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def raw_products(layer: QuantLinear, x: torch.Tensor) -> None:
    """`int8_product`'s int8 x int8 products alone, on the two-part rows (values do not matter for time)."""
    q = torch.ones(2 * x.shape[0], layer.in_features, dtype=torch.int8)
    for start in range(0, layer.out_features, INT8_MM_COLS):
        torch._int_mm(q, layer.weight[start:start + INT8_MM_COLS].t())


def paths_ms(layer: QuantLinear, dense: torch.Tensor, x: torch.Tensor, rounds: int) -> list[float]:
    """ms of each path for rows `x` [M, K], in the table's column order."""
    with torch.no_grad():
        return [best_ms(f, rounds) for f in (
            lambda: torch._weight_int8pack_mm(x, layer.weight, layer.scales),
            lambda: layer.int8_product(x),
            lambda: raw_products(layer, x),
            lambda: layer.dense_product(x),
            lambda: x @ dense.t())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,4,6,8,16")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    torch.manual_seed(0)
    print("| weight | rows | packed int8 | int8 products | products alone | converted, dense | bf16 dense |")
    print("|---|---|---|---|---|---|---|")
    for name, n, k in SHAPES:
        w = torch.randn(n, k) * 0.02
        layer = QuantLinear(k, n, False, 8)
        layer.set_weight(w, torch.bfloat16)
        dense = w.to(torch.bfloat16)
        del w
        for m in (int(r) for r in args.rows.split(",")):
            ms = paths_ms(layer, dense, torch.randn(m, k, dtype=torch.bfloat16), args.rounds)
            print(f"| {name} {n} x {k} | {m} | " + " | ".join(f"{v:.1f}" for v in ms) + " |", flush=True)


if __name__ == "__main__":
    main()
