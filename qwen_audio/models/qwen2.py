"""The Qwen2 decoder (Qwen2-Audio's language model, and Qwen2.5's), with the engine's interface.

Weights keep transformers' names (`model.layers.N.self_attn.q_proj`, ..., `lm_head`), so a checkpoint's
tensors load as they are. The model answers the calls the engine's scheduler makes of a decoder:
`embed(tokens)`, `new_cache(batch, capacity)`, `segment(cache, start, length, alpha)` and
`step(x, segments, last)`, plus `forward(tokens, start, cache)` for one batch.

Differences from the QWen (v1) decoder: grouped-query attention (`n_kv_head` key/value heads, each
shared by n_head / n_kv_head query heads; the cache holds only those), biases on q, k and v only (none
with `attention_bias=False`: the Llama architecture, which lite's SmolLM2 has), a
configurable RoPE base and no dynamic NTK or LogN scaling. As in transformers, the rotary tables are
computed in float32 and applied in the activations' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..llm import KVCache, RMSNorm, Segment, _rotate_half, causal_mask


@dataclass(frozen=True)
class Qwen2Config:
    """The decoder's dimensions, as transformers' Qwen2 config.json names them (see `from_dict`)."""

    vocab_size: int = 151936
    dim: int = 3584  # hidden_size
    n_layer: int = 28  # num_hidden_layers
    n_head: int = 28  # num_attention_heads
    n_kv_head: int = 4  # num_key_value_heads: each serves n_head / n_kv_head query heads
    ffn_dim: int = 18944  # intermediate_size
    rope_theta: float = 1_000_000.0
    norm_eps: float = 1e-6  # rms_norm_eps
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    attention_bias: bool = True  # biases on q, k and v (Qwen2's); False for Llama-architecture models (SmolLM2)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "Qwen2Config":
        """Read a Qwen2 `config.json` (or Qwen2-Audio's `text_config`) as transformers 4 and 5 write it:
        the RoPE base is `rope_theta` (4.x) or `rope_parameters.rope_theta` (5)."""
        def need(name: str):
            if name not in d:
                raise CheckpointError(f"{source}: no {name!r}")
            return d[name]

        rope = d.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default" or d.get("rope_scaling"):
            raise CheckpointError(f"{source}: RoPE scaling {rope or d.get('rope_scaling')} is not supported")
        if d.get("use_sliding_window"):
            raise CheckpointError(f"{source}: sliding-window attention is not supported")
        heads = int(need("num_attention_heads"))
        cfg = cls(vocab_size=int(need("vocab_size")), dim=int(need("hidden_size")), n_layer=int(need("num_hidden_layers")),
                  n_head=heads, n_kv_head=int(d.get("num_key_value_heads", heads)),
                  ffn_dim=int(need("intermediate_size")),
                  rope_theta=float(rope.get("rope_theta", d.get("rope_theta", cls.rope_theta))),
                  norm_eps=float(d.get("rms_norm_eps", cls.norm_eps)),
                  max_position_embeddings=int(d.get("max_position_embeddings", cls.max_position_embeddings)),
                  tie_word_embeddings=bool(d.get("tie_word_embeddings", False)))
        if cfg.dim % cfg.n_head or cfg.n_head % cfg.n_kv_head:
            raise CheckpointError(f"{source}: hidden_size {cfg.dim}, {cfg.n_head} heads and {cfg.n_kv_head} "
                                  "key/value heads do not divide")
        return cfg


class Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_head * cfg.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_head * cfg.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_head * cfg.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, segments: list[Segment], layer: int) -> torch.Tensor:
        """x: [T, dim], the segments' tokens one after another -> [T, dim]. Projections over all rows at
        once; attention per segment on its own cache (keys and values of the n_kv_head heads)."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        out, at = [], 0
        for seg in segments:
            n = seg.length
            qs = q[at:at + n].view(1, n, self.n_head, self.head_dim).transpose(1, 2)
            ks, vs = (z[at:at + n].view(1, n, self.n_kv_head, self.head_dim).transpose(1, 2) for z in (k, v))
            cos, sin = seg.rope
            qs, ks = qs * cos + _rotate_half(qs) * sin, ks * cos + _rotate_half(ks) * sin
            ks, vs = seg.cache.update(layer, seg.start, ks, vs)
            # No mask: one new token sees every key (a decode step), or a whole prompt is causal on its own.
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=seg.mask, is_causal=seg.mask is None and n > 1,
                                               enable_gqa=self.n_kv_head != self.n_head)
            out.append(o.transpose(1, 2).reshape(n, -1))
            at += n
        return self.o_proj(torch.cat(out) if len(out) > 1 else out[0])


class MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, segments: list[Segment], layer: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), segments, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Qwen2LM(nn.Module):
    """Token ids (or their embeddings) -> next-token logits. Tensors in, tensors out: no I/O, no sampling."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty cache of the key/value heads for `batch` rows of `capacity` columns."""
        c = self.config
        return KVCache(c.n_layer, batch, c.n_kv_head, c.head_dim, capacity, self.dtype, self.device)

    def embed(self, tokens: torch.Tensor, audio: list[torch.Tensor] | None = None) -> torch.Tensor:
        """tokens: [B, S] -> [B, S, dim]. A text-only decoder: `audio` (the engine's clips) must be empty."""
        if audio:
            raise ValueError("this decoder takes no audio features")
        return self.model.embed_tokens(tokens)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [1, 1, S, head_dim] (float32) for positions [S]."""
        d = self.config.head_dim
        inv_freq = 1.0 / (self.config.rope_theta ** (torch.arange(0, d, 2, device=positions.device).float() / d))
        freqs = positions.float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[None, None]
        return emb.cos(), emb.sin()

    def segment(self, cache: KVCache, start: int, length: int, alpha: float = 1.0) -> Segment:
        """What `step` needs to run `length` tokens of one sequence at columns [start, start + length) of
        `cache` (columns are positions). `alpha` is accepted for the engine's sake and must be 1."""
        if alpha != 1.0:
            raise ValueError("Qwen2 has no dynamic NTK scaling: alpha must be 1")
        cols = torch.arange(start, start + length, device=cache.k[0].device)
        cos, sin = self.rope(cols)  # computed in float32, applied in the activations' dtype (as transformers)
        mask = None if length == 1 else causal_mask(start, length, cols.device)
        return Segment(cache, start, length, (cos.to(self.dtype), sin.to(self.dtype)), None, mask)

    def step(self, x: torch.Tensor, segments: list[Segment], last: list[int]) -> torch.Tensor:
        """One ragged forward pass: x [T, dim] (every segment's input embeddings, in order) -> logits
        [len(last), vocab] (float32) at the rows `last` of x."""
        for i, layer in enumerate(self.model.layers):
            x = layer(x, segments, i)
        return self.lm_head(self.model.norm(x[last])).float()

    def forward(self, tokens: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """tokens: [1, S] at columns [start, start + S) of `cache` (a fresh one when None) -> logits [1, S, vocab]."""
        s = tokens.shape[1]
        cache = self.new_cache(1, start + s) if cache is None else cache
        return self.step(self.embed(tokens)[0], [self.segment(cache, start, s)], list(range(s)))[None]


def load_state(model: Qwen2LM, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Put transformers-named tensors into `model`: every key and shape checked, none left over (a tied
    output head may be absent)."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight")
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or extra or wrong:
        raise CheckpointError(f"{source}: does not fit the Qwen2 decoder: missing {missing[:3]}, unexpected "
                              f"{extra[:3]}, wrong shape {wrong[:3]}")
    model.load_state_dict(state, strict=False)
