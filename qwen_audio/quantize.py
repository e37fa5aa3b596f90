"""Weight-only quantisation for CPUs: int8 per output channel, int4 in groups, with the kernels torch ships.

    model, tok = qwen_audio.load(path, quantize="int8")     # or "int4" (groups of 64), "int4-32", "int4-128"

A `QuantLinear` keeps its weight small. A few rows at a time (decoding) go through torch's packed kernels
(`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) in bfloat16, which read the small weight once; their
cost grows with the rows (int8's by a pass over the weight for every 4 rows). More rows (a prompt, an audio
clip) take other paths: int8 weights on a CPU with int8 dot products (VNNI, AMX) multiply int8 by int8
(`torch._int_mm`, each row of activations split into two int8 parts so that nothing is lost that bfloat16
would keep; in bfloat16 up to 192 rows, past which AMX bfloat16 is faster); otherwise the weight is converted
a block at a time to the compute dtype for the dense product (AMX in bfloat16, MKL in float32 where bfloat16
is emulated). See PACKED_ROWS for the measurements. `QuantEmbedding` keeps int8 rows.

Which layers: every linear of the LLM and of the audio encoder, and the word embedding (int8 rows). In int4
mode, layers whose shape the int4 kernel cannot take (out features not a multiple of 64, in features not a
multiple of the group) and the output head (its logits choose every token) are int8.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .cpu import cpu_flags
from .errors import OptionError, SlowPathWarning

# Which path, by rows (x.reshape(-1, K)), measured with benchmarks/quant_prefill.py and the same calls alone on
# a 2-core AMX Xeon (2 threads; the 11008 x 4096 layer, weights cycled through memory). In bfloat16, ms at 8 /
# 24 / 48 rows: packed kernels (~0.55 ms a row) int8 4.9 / 14.3 / 27.8, int4 4.5 / 13.2 / 26.9; int8 products
# 4.0 / 5.1 / 6.6 (14.6 at 128 rows, 18.2 at 192, 23.8 at 224); the dense product on the int8 weight converted
# 8.9 / 9.6 / 12.9 (16.0, 18.7, 20.4), on the int4 one dequantized 26.2 / 27.5 / 28.8 (29.5 at 56 rows); dense
# bfloat16 4.4 / 5.2 / 6.8 (11.4, 12.6, 13.7). Crossings: packed int8 / int8 products at 5-6 rows; int8
# products / converted weight at ~200 (in float32 never: its dense product is 4-5x slower); packed / dense
# int4 at ~56; packed / dense int8 (without int8 products) at ~16. In float32 held to AVX2: int4 at ~44, int8
# at ~22 rows; in float32 with AVX-512 (where ATen's packed kernels are twice as fast): int4 ~96, int8 ~50.
PACKED_ROWS = {8: 24, 4: 48}  # up to this many rows, the packed kernels (int8: where no int8 products)...
PACKED_ROWS_AVX512_FLOAT32 = {8: 48, 4: 96}  # ... and in float32 with ATen's AVX-512 kernels
INT8_MM_ROWS = (5, 192)  # int8 products: from over 5 rows; in bfloat16 up to 192 (then AMX bfloat16 is faster)
DEQUANT_ROWS = 1024  # weight rows dequantized at a time, into a buffer reused (no page faults). Not 512: oneDNN
# takes [384..1024 rows] x [K, 512] at half its speed on 2 threads (measured); 1024 and more have no such dip.
INT8_MM_COLS = 1024  # output columns per int8 product: its int32 sums stay in the cache
INT8_MM_CHUNK = 512  # rows of x per int8 product (as fast as all at once: bounds its float32 copy of x)
# The packed kernels take activations and scales in bfloat16: with float32 ones they run 8-20x slower,
# on AVX2 and AVX-512 alike (measured: int8 4.2 vs 37 ms, int4 3.3 vs 78 ms for 11008 x 4096, 1 thread).
PACKED_DTYPE = torch.bfloat16
INT4_BLOCK_N = 64  # int4 weights have a multiple of 64 rows: the CPU kernel's blocks are 64 or 32 (see `int4_block`)
_SPEC = re.compile(r"^int(?P<bits>8|4)(?:-(?P<group>32|64|128|256))?$")


@dataclass(frozen=True)
class Quantization:
    """How weights are stored: `bits` 8 (per output channel) or 4 (in groups of `group_size` inputs)."""

    bits: int = 8
    group_size: int = 64  # int4 only: inputs sharing one scale and zero point

    @classmethod
    def parse(cls, spec: "str | Quantization | None") -> "Quantization | None":
        """None, a Quantization, or "int8", "int4", "int4-32", "int4-64", "int4-128", "int4-256"."""
        if spec is None or isinstance(spec, Quantization):
            return spec
        m = _SPEC.match(str(spec)) if isinstance(spec, str) else None
        if m is None:
            raise OptionError(f"unknown quantize {spec!r}: use 'int8', 'int4', or 'int4-32' / -64 / -128 / -256")
        return cls(int(m["bits"]), int(m["group"] or 64))

    @property
    def name(self) -> str:
        return "int8" if self.bits == 8 else f"int4-{self.group_size}"


# ---- the numbers ------------------------------------------------------------------------------------------


CHUNK_ROWS = 4096  # rows quantized at a time: a 155947-row head never needs a float32 copy of itself


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (int8 [N, K], float32 scales [N]): symmetric, one scale per output row."""
    q = torch.empty(w.shape, dtype=torch.int8)
    scales = torch.empty(w.shape[0])
    for i in range(0, w.shape[0], CHUNK_ROWS):
        rows = w[i:i + CHUNK_ROWS].to(torch.float32, copy=True)  # the in-place steps below never touch `w`
        s = rows.abs().amax(dim=1).div_(127.0).clamp_(min=1e-12)
        q[i:i + CHUNK_ROWS] = rows.div_(s[:, None]).round_()  # |w / s| <= 127 by construction
        scales[i:i + CHUNK_ROWS] = s
    return q, scales


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (int32 codes 0..15 [N, K], float32 scales_and_zeros [K / group, N, 2]): asymmetric per group,
    w ~ (code - 8) * scale + zero, the convention of torch's int4 kernels."""
    n, k = w.shape
    g = w.to(torch.float32, copy=True).reshape(n, k // group_size, group_size)  # in-place below: not `w`
    lo, hi = torch.aminmax(g, dim=-1, keepdim=True)
    scales = hi.sub_(lo).div_(15.0).clamp_(min=1e-12)
    zeros = lo + 8.0 * scales
    codes = g.sub_(lo).div_(scales).round_().clamp_(0, 15).to(torch.int32).reshape(n, k)
    return codes, torch.stack([scales.squeeze(-1), zeros.squeeze(-1)], dim=-1).transpose(0, 1).contiguous()


def unpack_int4(packed: torch.Tensor, n: int, k: int, block: int | None = None) -> torch.Tensor:
    """The int32 codes [N, K] of a weight packed by `_convert_weight_to_int4pack_for_cpu`: blocks of `block`
    rows (the kernel's: 64 with AVX-512, 32 with AVX2; default: this CPU's, see `int4_block`), each k
    holding block / 2 bytes whose low nibbles are the block's first half of rows and high nibbles the second."""
    block = block or int4_block()
    blocks = packed.reshape(n // block, k, block // 2)
    codes = torch.cat([blocks & 0xF, blocks >> 4], dim=-1)  # [N / block, K, block]
    return codes.permute(0, 2, 1).reshape(n, k).to(torch.int32)


ALIGNMENT = 64  # bytes: the packed kernels read their weight with aligned vector loads


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when its data starts on a 64-byte boundary (a memory-mapped file keeps it paged in lazily),
    else an aligned copy: the packed kernels crash on a weight a checkpoint file left unaligned."""
    return t if t.data_ptr() % ALIGNMENT == 0 and t.is_contiguous() else t.clone(memory_format=torch.contiguous_format)


def nibbles(codes: torch.Tensor) -> torch.Tensor:
    """int32 codes 0..15 [N, K] -> uint8 [N, K / 2], two codes a byte (even k in the low nibble): the
    portable form saved checkpoints keep (the kernel's packing is its own and may change)."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)


def from_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `nibbles`: uint8 [N, K / 2] -> int32 codes [N, K]."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1).to(torch.int32)


_BLOCK: int | None | bool = False  # False: not checked yet


def int4_block() -> int | None:
    """Rows per block of this torch's CPU int4 packing on this CPU: it packs by the vector width it runs
    with (64 rows with AVX-512, 32 with AVX2). None when neither matches (a torch that packs otherwise).
    Found once, by packing random codes and reading them back."""
    global _BLOCK
    if _BLOCK is False:
        codes = torch.randint(0, 16, (2 * INT4_BLOCK_N, 96), dtype=torch.int32, device="cpu",
                              generator=torch.Generator().manual_seed(0))
        packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
        fits = packed.shape == (codes.shape[0], codes.shape[1] // 2)
        _BLOCK = next((b for b in (64, 32) if fits and torch.equal(unpack_int4(packed, *codes.shape, b), codes)), None)
    return _BLOCK


def int4_layout_is_known() -> bool:
    """Whether `unpack_int4` can read what this torch's int4 packing writes on this CPU."""
    return int4_block() is not None


def int4_fits(n: int, k: int, group_size: int) -> bool:
    """Whether the CPU int4 kernel takes a [N, K] weight in groups of `group_size`."""
    return n % INT4_BLOCK_N == 0 and k % group_size == 0 and int4_layout_is_known()


_INT8_MM: bool | None = None  # None: not checked yet


def int8_products() -> bool:
    """Whether `torch._int_mm` multiplies int8 matrices exactly and fast here. It needs int8 dot-product
    instructions (AVX512-VNNI, AVX-VNNI or AMX): without them oneDNN's kernel adds pairs of products in
    saturating int16 and returns wrong sums (seen with ONEDNN_MAX_CPU_ISA=AVX2 on a VNNI CPU). Checked once:
    the CPU's flags, then a product with the largest values against its exact result."""
    global _INT8_MM
    if _INT8_MM is None:
        ok = bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
        if ok:
            g = torch.Generator().manual_seed(0)
            a = torch.randint(-127, 128, (32, 512), dtype=torch.int8, generator=g)
            b = torch.randint(-127, 128, (512, 16), dtype=torch.int8, generator=g)
            a[:8], a[8:12], b[:, :4], b[:, 4:8] = 127, -127, 127, -127  # pairs of 127 * 127 saturate int16
            ok = torch.equal(torch._int_mm(a, b).double(), a.double() @ b.double())  # float64: exact here
        _INT8_MM = ok
    return _INT8_MM


def packed_rows(bits: int, dtype: torch.dtype) -> int:
    """Up to how many rows a layer of `bits` computing in `dtype` uses the packed kernel (see PACKED_ROWS)."""
    wide = dtype == torch.float32 and torch.backends.cpu.get_cpu_capability() == "AVX512"
    return (PACKED_ROWS_AVX512_FLOAT32 if wide else PACKED_ROWS)[bits]


# ---- modules ---------------------------------------------------------------------------------------------


class _Scratch(threading.local):
    """Per-thread dequantization buffers (answers run in several threads at once), by shape and dtype."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def get(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        key = (rows, cols, dtype)
        if key not in self.buffers:
            # A normal tensor even when first needed inside inference mode: the same thread writes into it
            # later outside it (an inference tensor cannot be written there).
            with torch.inference_mode(False):
                self.buffers[key] = torch.empty(rows, cols, dtype=dtype)
        return self.buffers[key]


_SCRATCH = _Scratch()


class QuantLinear(nn.Module):
    """A linear layer with an int8 or int4 weight. x [..., K] -> [..., N] in x's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int, group_size: int = 64):
        super().__init__()
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        if bits == 8:
            self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scales", torch.empty(out_features))
        else:
            self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
            self.register_buffer("scales", torch.empty(in_features // group_size, out_features, 2))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def set_weight(self, w: torch.Tensor, dtype: torch.dtype) -> None:
        """Quantize a [N, K] float weight in place of this layer's (scales in bfloat16, the kernels' type)."""
        if self.bits == 8:
            q, scales = quantize_int8(w)
            self.weight = q.to(w.device)
        else:
            codes, scales = quantize_int4(w, self.group_size)
            self.weight = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
        self.scales = scales.to(PACKED_DTYPE)

    def codes(self) -> torch.Tensor:
        """int4 layers: the int32 codes [N, K] of the weight."""
        return unpack_int4(self.weight, self.out_features, self.in_features)

    def set_saved(self, name: str, value: torch.Tensor, dtype: torch.dtype) -> None:
        """Take a tensor of a saved quantized checkpoint: `weight` (int8, or int4 as `nibbles`) or `scales`."""
        if name == "scales":
            self.scales = value.to(PACKED_DTYPE, copy=True)
        elif self.bits == 8:
            self.weight = aligned(value)
        else:
            self.weight = torch._convert_weight_to_int4pack_for_cpu(from_nibbles(value), 1)

    def dequantize_rows(self, start: int, out: torch.Tensor) -> torch.Tensor:
        """Write weight rows [start, start + len(out)) into `out` [n, K] (its dtype); int4: n and start are
        multiples of 64 (the kernel packs blocks of 64 or 32 rows)."""
        n = out.shape[0]
        if self.bits == 8:
            out.copy_(self.weight[start:start + n])
            return out.mul_(self.scales[start:start + n, None])
        out.copy_(unpack_int4(self.weight[start:start + n], n, self.in_features))
        sz = self.scales[:, start:start + n]  # [K / group, n, 2]: w = code * scale + (zero - 8 * scale)
        groups = out.view(n, -1, self.group_size)
        groups.mul_(sz[..., 0].t()[..., None]).add_((sz[..., 1] - 8 * sz[..., 0]).t()[..., None])
        return out

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight [N, K] in `dtype`."""
        w = torch.empty(self.out_features, self.in_features, dtype=dtype, device=self.weight.device)
        for start in range(0, self.out_features, DEQUANT_ROWS):
            self.dequantize_rows(start, w[start:start + DEQUANT_ROWS])
        return w

    def dequantize_t(self, start: int, out: torch.Tensor) -> torch.Tensor:
        """int4: weight rows [start, start + n) transposed into `out` [K, n] (contiguous; its dtype), as
        `dequantize_rows` computes them (in bfloat16 rounded once, not twice), 2.7x faster (8.5 -> 3.1 ms for
        1024 x 4096 in bfloat16, 1 thread): the packing's blocks hold, for each k, B / 2 bytes (low nibbles: the block's
        first B / 2 rows, high: the rest), so [K, n] needs no transposition and no int32 codes; scales and
        zeros are contiguous along n, and one fused multiply-add applies them."""
        k, n, block = self.in_features, out.shape[1], int4_block()
        packed = self.weight[start:start + n].view(n // block, k, block // 2)
        halves = out.view(k, n // block, 2, block // 2)
        halves[:, :, 0].copy_((packed & 0xF).transpose(0, 1))
        halves[:, :, 1].copy_((packed >> 4).transpose(0, 1))
        sz = self.scales[:, start:start + n]  # [K / group, n, 2]: w = code * scale + (zero - 8 * scale)
        scale = sz[..., 0].to(out.dtype).contiguous()[:, None]
        zero = (sz[..., 1] - 8 * sz[..., 0]).to(out.dtype)[:, None]
        groups = out.view(k // self.group_size, self.group_size, n)
        return torch.addcmul(zero, groups, scale, out=groups).view(k, n)

    def dense_product(self, rows: torch.Tensor) -> torch.Tensor:
        """rows [M, K] @ weight.T in rows' dtype, the weight dequantized a block at a time for the dense
        product. int8: converted exactly (|q| <= 127 fits bfloat16), scaled after the product (the scale is
        per output): one pass over the weight, not two. int4: `dequantize_t`."""
        m, k = rows.shape
        y = torch.empty(m, self.out_features, dtype=rows.dtype, device=rows.device)
        buffer = _SCRATCH.get(DEQUANT_ROWS, k, rows.dtype).view(-1)
        scales = self.scales.to(rows.dtype) if self.bits == 8 else None
        for start in range(0, self.out_features, DEQUANT_ROWS):
            end = min(start + DEQUANT_ROWS, self.out_features)
            if self.bits == 8:
                w = buffer[:(end - start) * k].view(end - start, k).copy_(self.weight[start:end])
                torch.mul(rows @ w.t(), scales[start:end], out=y[:, start:end])
            else:
                y[:, start:end] = rows @ self.dequantize_t(start, buffer[:(end - start) * k].view(k, end - start))
        return y

    def int8_product(self, rows: torch.Tensor) -> torch.Tensor:
        """int8: rows [M, K] @ weight.T in rows' dtype through int8 x int8 products with exact int32 sums
        (`torch._int_mm`; see `int8_products`). Each row is x = s * (q1 + q2 / 254), q1 and q2 int8 and s its
        largest |x| / 127: within s / 508 of x (~1 / 64500 of its largest value), finer than bfloat16's own
        rounding (1 / 512 of each value) unless the row's values span more than ~126x. Both parts go through
        one product of twice the rows; the scales apply after it."""
        m = rows.shape[0]
        y = torch.empty(m, self.out_features, dtype=rows.dtype, device=rows.device)
        w_scales = self.scales.float()
        for r in range(0, m, INT8_MM_CHUNK):
            x = rows[r:r + INT8_MM_CHUNK].to(torch.float32, copy=True)
            n = x.shape[0]
            s = x.abs().amax(1, keepdim=True).div_(127.0).clamp_(min=torch.finfo(torch.float32).tiny)
            q = torch.empty(2 * n, self.in_features, dtype=torch.int8, device=rows.device)
            coarse = x.div_(s).round()  # in [-127, 127]
            q[:n] = coarse
            q[n:] = x.sub_(coarse).mul_(254.0).round_()  # the rest, [-0.5, 0.5] steps of the first: [-127, 127]
            for start in range(0, self.out_features, INT8_MM_COLS):
                end = min(start + INT8_MM_COLS, self.out_features)
                sums = torch._int_mm(q, self.weight[start:end].t()).float()  # exact, then float32 (2^-24)
                both = torch.add(sums[:n], sums[n:], alpha=1 / 254.0).mul_(s)
                torch.mul(both, w_scales[start:end], out=y[r:r + n, start:end])
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        m = rows.shape[0]
        fewest, most = INT8_MM_ROWS
        if self.bits == 8 and m > fewest and (m <= most or x.dtype != torch.bfloat16) and int8_products():
            y = self.int8_product(rows)
        elif m > packed_rows(self.bits, x.dtype):
            y = self.dense_product(rows)
        elif self.bits == 8:
            y = torch._weight_int8pack_mm(rows.to(PACKED_DTYPE), self.weight, self.scales).to(x.dtype)
        else:
            y = torch._weight_int4pack_mm_for_cpu(rows.to(PACKED_DTYPE), self.weight, self.group_size,
                                                  self.scales).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "int8" if self.bits == 8 else f"int4, groups of {self.group_size}"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}"


class QuantEmbedding(nn.Module):
    """An embedding with int8 rows and one scale per row: ids [...] -> [..., dim] in `dtype`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype
        self.register_buffer("weight", torch.empty(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(num_embeddings))

    def set_weight(self, w: torch.Tensor, dtype: torch.dtype) -> None:
        self.weight, scales = quantize_int8(w)
        self.scales, self.dtype = scales.to(dtype), dtype

    def set_saved(self, name: str, value: torch.Tensor, dtype: torch.dtype) -> None:
        if name == "scales":
            self.scales, self.dtype = value.to(dtype, copy=True), dtype
        else:
            self.weight = value  # rows are gathered, not read by a packed kernel: any alignment will do

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids].to(self.dtype) * self.scales[ids][..., None].to(self.dtype)


def quantize_modules(model: nn.Module, q: Quantization, dtype: torch.dtype, embeddings: tuple[str, ...] = ("transformer.wte",),
                     head: str = "lm_head") -> list[str]:
    """Replace (on a meta-device model) every nn.Linear with a QuantLinear and the `embeddings` (the word
    embedding; v1's encoder bos/eos pair is read whole, and tiny) with QuantEmbeddings. The output `head`
    stays int8 in int4 mode. Returns the replaced modules' names."""
    if q.bits == 4 and not int4_layout_is_known():
        warnings.warn(f"this torch packs CPU int4 weights in a layout qwen_audio does not read (torch "
                      f"{torch.__version__}): {q.name} is stored as int8 instead", SlowPathWarning, stacklevel=3)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear):
                n, k = child.out_features, child.in_features
                int4 = q.bits == 4 and full != head and int4_fits(n, k, q.group_size)
                new = QuantLinear(k, n, child.bias is not None, 4 if int4 else 8, q.group_size)
            elif isinstance(child, nn.Embedding) and full in embeddings:
                new = QuantEmbedding(child.num_embeddings, child.embedding_dim, dtype)
            else:
                continue
            setattr(module, child_name, new)
            replaced.append(full)
    return replaced
