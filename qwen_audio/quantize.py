"""Weight-only quantisation for CPUs: int8 per output channel, int4 in groups, with the kernels torch ships.

    model, tok = qwen_audio.load(path, quantize="int8")     # or "int4" (groups of 64), "int4-32", "int4-128"

A `QuantLinear` keeps its weight small. A few rows at a time (decoding) go through torch's packed kernels
(`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) in bfloat16, which read the small weight once; many
rows (a prompt, an audio clip) dequantize the weight to the model's compute dtype and use the dense matrix
product, which is much faster there (AMX in bfloat16, or MKL in float32 where bfloat16 is emulated).
`QuantEmbedding` keeps int8 rows.

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

from .errors import OptionError, SlowPathWarning

# Up to this many rows the packed kernel is faster than dequantizing: it costs ~0.6 ms a row for an
# 11008 x 4096 weight, dequantizing ~20 ms (int8) or ~50 ms (int4) once (measured on AMX, 2 threads).
PACKED_ROWS = {8: 32, 4: 96}
DEQUANT_ROWS = 1024  # output rows dequantized at a time, into a buffer reused (in the cache, no page faults)
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


# ---- modules ---------------------------------------------------------------------------------------------


class _Scratch(threading.local):
    """Per-thread dequantization buffers (answers run in several threads at once), by shape and dtype."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def get(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        key = (rows, cols, dtype)
        if key not in self.buffers:
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] > PACKED_ROWS[self.bits]:
            # Many rows (a prompt, a clip): dequantize a block of weight rows at a time into a reused
            # buffer and use the dense product (AMX in bfloat16, MKL in float32).
            y = torch.empty(rows.shape[0], self.out_features, dtype=x.dtype, device=x.device)
            buffer = _SCRATCH.get(DEQUANT_ROWS, self.in_features, x.dtype)
            for start in range(0, self.out_features, DEQUANT_ROWS):
                w = self.dequantize_rows(start, buffer[:min(DEQUANT_ROWS, self.out_features - start)])
                y[:, start:start + w.shape[0]] = rows @ w.t()
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


EMBEDDINGS = ("transformer.wte",)  # the word embedding; the encoder's bos/eos pair is read whole, and tiny


def quantize_modules(model: nn.Module, q: Quantization, dtype: torch.dtype) -> list[str]:
    """Replace (on a meta-device model) every nn.Linear with a QuantLinear and the word embedding with a
    QuantEmbedding. Returns the replaced modules' names."""
    if q.bits == 4 and not int4_layout_is_known():
        warnings.warn(f"this torch packs CPU int4 weights in a layout qwen_audio does not read (torch "
                      f"{torch.__version__}): {q.name} is stored as int8 instead", SlowPathWarning, stacklevel=3)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear):
                n, k = child.out_features, child.in_features
                int4 = q.bits == 4 and full != "lm_head" and int4_fits(n, k, q.group_size)
                new = QuantLinear(k, n, child.bias is not None, 4 if int4 else 8, q.group_size)
            elif isinstance(child, nn.Embedding) and full in EMBEDDINGS:
                new = QuantEmbedding(child.num_embeddings, child.embedding_dim, dtype)
            else:
                continue
            setattr(module, child_name, new)
            replaced.append(full)
    return replaced
