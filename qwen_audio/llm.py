"""The QWen-7B v1 decoder with audio injection and an explicit KV cache (keys under `transformer.`, `lm_head`).

Rows of a batch may be left-padded: `pad[b]` leading columns of row b are not attended to, and its
rotary positions start at 0 after them, so a padded row computes what it would alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .audio import AudioLength
from .config import ModelConfig
from .encoder import AudioEncoder, attention_kernels
from .errors import PromptError


def ntk_alpha(n_tokens: int, seq_length: int) -> float:
    """Dynamic NTK factor chosen at prefill from the prompt length (1 up to `seq_length` tokens)."""
    context_value = math.log(n_tokens / seq_length, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


class KVCache:
    """Keys and values of every layer: n_layer x [B, n_head, capacity, head_dim], written in place.

    Columns are batch columns (including left padding); `update` writes columns [start, start + S)
    and returns the columns [0, start + S) that the new queries may see. On a CUDA device the capacity
    is rounded up to whole blocks of columns, so that later turns usually fit the same tensors and can
    replay the decode steps captured for them (`steps`, see `qwen_audio.cuda`).
    """

    CUDA_BLOCK = 256  # columns

    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (batch, n_head, self._round(capacity, torch.device(device)), head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.steps: dict = {}  # decode steps captured as CUDA graphs on these tensors, by (rows, alpha, padding)

    @classmethod
    def _round(cls, capacity: int, device: torch.device) -> int:
        return -(-capacity // cls.CUDA_BLOCK) * cls.CUDA_BLOCK if device.type == "cuda" else capacity

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.k) + sum(t.nbytes for t in self.v)

    def copy_prefix(self, other: "KVCache", n: int) -> None:
        """Take columns [0, n) of every layer from `other` (same shape but for capacity)."""
        for mine, theirs in zip(self.k + self.v, other.k + other.v):
            mine[:, :, :n] = theirs[:, :, :n]

    def grow(self, capacity: int) -> None:
        """Keep the contents, make room for `capacity` columns (no-op if there is room)."""
        if capacity <= self.capacity:
            return
        extra = self._round(capacity, self.k[0].device) - self.capacity
        self.k = [F.pad(t, (0, 0, 0, extra)) for t in self.k]
        self.v = [F.pad(t, (0, 0, 0, extra)) for t in self.v]
        self.steps.clear()  # they were captured on the old tensors

    def update(self, layer: int, start: int | torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(start, torch.Tensor):  # a captured step: its column is data ([1]); every column is seen
            self.k[layer].index_copy_(2, start, k)
            self.v[layer].index_copy_(2, start, v)
            return self.k[layer], self.v[layer]
        end = start + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, S, head_dim]; cos, sin: [B, 1, S, head_dim] float32. Computed in float32."""
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.c_attn = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.c_proj = nn.Linear(cfg.dim, cfg.dim, bias=not cfg.no_bias)

    def forward(self, x, rope, logn, mask, cache: KVCache | None, layer: int, start: int) -> torch.Tensor:
        """x: [B, S, dim]; logn: [B, 1, S, 1] or None; mask: [B, 1, S, K] bool, or None for a causal prompt
        with no cache before it (S == K, so flash attention applies). Returns [B, S, dim]."""
        b, s, d = x.shape
        q, k, v = (t.view(b, s, self.n_head, self.head_dim).transpose(1, 2) for t in self.c_attn(x).split(d, dim=2))
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)
        if logn is not None:  # LogN scaling of queries past the training length
            q = q * logn.type_as(q)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.c_proj(o.transpose(1, 2).reshape(b, s, d))

    def ragged(self, x: torch.Tensor, segments: list["Segment"], layer: int) -> torch.Tensor:
        """x: [T, dim], the segments' tokens one after another. The projections run over all T rows at
        once (one read of the weights for every sequence); attention runs per segment, on its own cache."""
        t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=1)
        out, at = [], 0
        for seg in segments:
            n = seg.length
            qs, ks, vs = (z[at:at + n].view(1, n, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
            qs, ks = apply_rotary(qs, *seg.rope), apply_rotary(ks, *seg.rope)
            ks, vs = seg.cache.update(layer, seg.start, ks, vs)
            if seg.logn is not None:
                qs = qs * seg.logn.type_as(qs)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=seg.mask, is_causal=seg.mask is None)
            out.append(o.transpose(1, 2).reshape(n, d))
            at += n
        return self.c_proj(torch.cat(out) if len(out) > 1 else out[0])


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        bias = not cfg.no_bias
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=bias)
        self.w2 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=bias)  # the gate
        self.c_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln_2 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, rope, logn, mask, cache, layer, start):
        x = x + self.attn(self.ln_1(x), rope, logn, mask, cache, layer, start)
        return x + self.mlp(self.ln_2(x))

    def ragged(self, x: torch.Tensor, segments: list["Segment"], layer: int) -> torch.Tensor:
        x = x + self.attn.ragged(self.ln_1(x), segments, layer)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = RMSNorm(cfg.dim, cfg.norm_eps)
        self.audio = AudioEncoder(cfg.audio)


def causal_mask(start: int, length: int, device: torch.device) -> torch.Tensor | None:
    """[1, 1, length, start + length] bool: queries at columns [start, start + length) see every key up to
    their own. None for a whole prompt on a GPU (nothing before it: causal flash attention instead)."""
    if device.type == "cuda" and start == 0 and length > 1:
        return None
    cols = torch.arange(start, start + length, device=device)
    return (torch.arange(start + length, device=device)[None, :] <= cols[:, None])[None, None]


@dataclass(eq=False)
class Segment:
    """The tokens of one sequence in a ragged step: `length` tokens at columns [start, start + length) of
    its own `cache`, with the rotary tables, LogN scale and mask of those positions (see `QwenAudioLM.segment`)."""

    cache: KVCache
    start: int
    length: int
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin [1, 1, length, head_dim] float32
    logn: torch.Tensor | None  # [1, 1, length, 1], or None before the training length
    mask: torch.Tensor | None  # [1, 1, length, start + length] bool: causal; None: a whole prompt on a GPU (flash)


class QwenAudioLM(nn.Module):
    """Token ids (+ audio features) -> next-token logits. Tensors in, tensors out: no I/O, no sampling."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    @property
    def device(self) -> torch.device:
        return self.transformer.ln_f.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (activations, caches): a norm's, since quantized weights are int8 or int4."""
        return self.transformer.ln_f.weight.dtype

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty cache for `batch` rows of `capacity` columns, in the weights' dtype and device."""
        c = self.config
        return KVCache(c.n_layer, batch, c.n_head, c.head_dim, capacity, self.dtype, self.device)

    def embed_audio(self, mels: torch.Tensor, lengths: list[AudioLength], t_max: int | None = None) -> list[torch.Tensor]:
        """Encode clips as one batch: mels [B, n_mels, 3000] -> per clip [span, dim] (see AudioEncoder.embed_audio)."""
        return self.transformer.audio.embed_audio(mels, lengths, t_max)

    def init_buffers(self) -> None:
        """Compute the buffers a checkpoint does not carry (after loading onto the meta-built model)."""
        self.transformer.audio.init_buffers()

    def nonfinite_weights(self) -> list[str]:
        """Names of the weights (and quantization scales) holding NaN or infinite values (a damaged checkpoint)."""
        tensors = [*self.named_parameters(), *self.named_buffers()]
        return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]

    def embed(self, tokens: torch.Tensor, audio: list[torch.Tensor] | None = None) -> torch.Tensor:
        """tokens: [B, S] -> [B, S, dim]. With `audio` (a prompt's first pass), each `<audio>`..`</audio>`
        span (row-major order) takes the next clip's [span, dim] features in place of its word embeddings;
        without (decode steps), every token is a word, as in the published code, even an `<audio>` the
        model wrote itself."""
        x = self.transformer.wte(tokens)
        if audio is None:
            return x
        start_id = self.config.audio.audio_start_id
        starts = (tokens == start_id).nonzero().tolist()
        ends = (tokens == start_id + 1).nonzero().tolist()
        if len(starts) != len(audio) or len(ends) != len(audio):
            raise PromptError(f"{len(starts)} <audio> and {len(ends)} </audio> tokens in the prompt but {len(audio)} clips given")
        for (row, a), (row_e, e), feats in zip(starts, ends, audio):
            if row != row_e or e - a + 1 != feats.shape[0]:
                raise PromptError(f"audio span [{a}, {e}] of row {row} does not fit features of length {feats.shape[0]}")
            x[row, a : e + 1] = feats.to(x.dtype)
        return x

    def rope(self, positions: torch.Tensor, alpha: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, S, head_dim] (float32) for positions [B, S] with each row's NTK alpha."""
        d = self.config.head_dim
        rows = []
        for b, a in enumerate(alpha):
            base = self.config.rope_base * a ** (d / (d - 2))
            inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, device=positions.device).float() / d))
            freqs = positions[b].float()[:, None] * inv_freq[None, :]
            rows.append(torch.cat((freqs, freqs), dim=-1))
        emb = torch.stack(rows)[:, None]
        return emb.cos(), emb.sin()

    def logn(self, positions: torch.Tensor, always: bool = False) -> torch.Tensor | None:
        """[B, 1, S, 1] query scale log_{seq_length}(p + 1) past the training length (1 before it), or None
        when no position is past it. `always`: never None, and no look at the positions from the host
        (a captured step cannot), which is exact since scaling by 1 changes nothing."""
        n = self.config.seq_length
        if not self.config.use_logn_attn or (not always and int(positions.max()) + 1 <= n):
            return None
        p1 = (positions + 1).double()
        scale = torch.where(p1 > n, torch.log(p1) / math.log(n), torch.ones_like(p1))
        return scale.float()[:, None, :, None]

    def segment(self, cache: KVCache, start: int, length: int, alpha: float) -> Segment:
        """What a ragged step needs to run `length` tokens of one sequence at columns [start, start + length)
        of `cache` (no padding: columns are positions) with NTK `alpha`."""
        positions = torch.arange(start, start + length, device=cache.k[0].device)[None]
        return Segment(cache, start, length, self.rope(positions, [alpha]), self.logn(positions),
                       causal_mask(start, length, positions.device))

    def step(self, x: torch.Tensor, segments: list[Segment], last: list[int]) -> torch.Tensor:
        """One ragged forward pass. x: [T, dim] input embeddings of every segment's tokens, in segment order
        (T = the sum of their lengths); `last`: the rows of x whose next-token logits are wanted.
        Returns logits [len(last), vocab] (float32). Each segment computes what `forward` computes for
        it alone, with its keys and values written into its own cache."""
        with attention_kernels(x.device):
            for i, block in enumerate(self.transformer.h):
                x = block.ragged(x, segments, i)
        return self.lm_head(self.transformer.ln_f(x[last])).float()

    def forward(
        self,
        tokens: torch.Tensor,
        start: int | torch.Tensor = 0,
        cache: KVCache | None = None,
        *,
        audio: list[torch.Tensor] | None = None,
        pad: torch.Tensor | None = None,
        alpha: list[float] | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """tokens: [B, S] at batch columns [start, start + S). Returns logits [B, S or 1, vocab] (float32).

        `start` as a tensor [1] (a decode step captured as a CUDA graph, see `qwen_audio.cuda`): the column
        is data, so keys span the cache's whole capacity, masked past the column; nothing syncs with the host.
        audio: the clips' features for a prompt's `<audio>` spans (None: no injection, as in decode steps);
        pad: [B] left-padding columns per row (default none); alpha: each row's NTK alpha (default 1).
        Without a cache, `start` must be 0 and the call sees only `tokens`.
        """
        b, s = tokens.shape
        device = tokens.device
        captured = isinstance(start, torch.Tensor)
        # A whole prompt on a GPU with no padding and nothing cached before it: causal flash attention.
        flash = device.type == "cuda" and not captured and start == 0 and pad is None
        pad = torch.zeros(b, dtype=torch.long, device=device) if pad is None else pad.to(device)
        alpha = alpha or [1.0] * b
        if captured:
            cols = start + torch.arange(s, device=device)
            keys = torch.arange(cache.capacity, device=device)
        else:
            cols = torch.arange(start, start + s, device=device)
            keys = torch.arange(start + s, device=device)
        positions = (cols[None, :] - pad[:, None]).clamp(min=0)  # [B, S]
        causal = keys[None, None, :] <= cols[None, :, None]
        # Padding columns are never attended to; a padding query sees only itself so it stays finite.
        mask = (causal & (keys[None, None, :] >= pad[:, None, None])) | (keys[None, None, :] == cols[None, :, None])
        mask = None if flash else mask[:, None]  # [B, 1, S, K]
        rope = self.rope(positions, alpha)
        logn = self.logn(positions, always=captured)
        x = self.embed(tokens, None if audio is None else list(audio))
        with attention_kernels(device):
            for i, block in enumerate(self.transformer.h):
                x = block(x, rope, logn, mask, cache, i, start)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.transformer.ln_f(x)).float()
