"""A small Llama decoder (SmolLM2-135M-Instruct) read from GGUF; stateless, with a cache per answer.

The GGUF file (Q4_1 / Q8_0 blocks) is read with the `gguf` package and dequantised to float32
once at load (~540 MB). The architecture is the plain Llama of the file's metadata: RMSNorm,
rotary attention with grouped K/V heads, SwiGLU, tied embeddings. llama.cpp's converter stores
Q and K rows permuted for the interleaved (GPT-J style) rotation, so that is the rotation here.

The module holds weights only: every answer allocates its own `KVCache` (prompt + new tokens) and
passes it to `forward`, so answers in threads, or several streams read in turns, never share state
and need no lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Generator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..backend import StopAnswer, TurnStats
from ..errors import CheckpointError
from ..generate import make_generator, next_token
from ..options import GenerationConfig

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
MIN_NEW_TOKENS = 64  # an over-long prompt loses its start so that at least this many tokens can follow


@dataclass(frozen=True)
class LlamaArgs:
    """Dimensions, read from the GGUF metadata (`llama.*` keys)."""

    n_vocab: int = 49152
    n_state: int = 576  # embedding width
    n_layer: int = 30
    n_head: int = 9
    n_kv_head: int = 3  # K/V heads shared by n_head // n_kv_head query heads each
    n_ff: int = 1536  # SwiGLU hidden width
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    context_length: int = 8192  # positions the model was trained on: prompt + answer fit in these

    @property
    def head_dim(self) -> int:
        return self.n_state // self.n_head


@dataclass(frozen=True)
class KVCache:
    """Keys and values of one answer, all layers: k, v [n_layer, 1, n_kv_head, capacity, head_dim]."""

    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    @torch.inference_mode()
    def empty(cls, args: LlamaArgs, capacity: int) -> "KVCache":
        shape = (args.n_layer, 1, args.n_kv_head, capacity, args.head_dim)
        return cls(torch.zeros(shape), torch.zeros(shape))

    @property
    def capacity(self) -> int:
        return self.k.shape[3]


def rope_table(args: LlamaArgs) -> torch.Tensor:
    """Complex rotations [context_length, head_dim // 2] for interleaved pairs (x[2i], x[2i+1])."""
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, args.head_dim, 2, dtype=torch.float64) / args.head_dim))
    angles = torch.outer(torch.arange(args.context_length, dtype=torch.float64), freqs)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x [1, H, T, D] rotated by rot [T, D // 2]."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


class Block(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        hd = args.head_dim
        self.args = args
        self.attn_norm = nn.RMSNorm(args.n_state, eps=args.norm_eps)
        self.wq = nn.Linear(args.n_state, args.n_head * hd, bias=False)
        self.wk = nn.Linear(args.n_state, args.n_kv_head * hd, bias=False)
        self.wv = nn.Linear(args.n_state, args.n_kv_head * hd, bias=False)
        self.wo = nn.Linear(args.n_head * hd, args.n_state, bias=False)
        self.ffn_norm = nn.RMSNorm(args.n_state, eps=args.norm_eps)
        self.w_gate = nn.Linear(args.n_state, args.n_ff, bias=False)
        self.w_up = nn.Linear(args.n_state, args.n_ff, bias=False)
        self.w_down = nn.Linear(args.n_ff, args.n_state, bias=False)

    def forward(self, x: torch.Tensor, rot: torch.Tensor, start: int, k_cache: torch.Tensor,
                v_cache: torch.Tensor) -> torch.Tensor:
        """x [1, T, n_state] at positions [start, start + T) -> [1, T, n_state]. Writes this layer's keys
        and values into k_cache, v_cache [1, n_kv_head, capacity, head_dim] at those positions."""
        a, T, hd = self.args, x.shape[1], self.args.head_dim
        end = start + T
        h = self.attn_norm(x)
        q = self.wq(h).view(1, T, a.n_head, hd).transpose(1, 2)
        k = self.wk(h).view(1, T, a.n_kv_head, hd).transpose(1, 2)
        v = self.wv(h).view(1, T, a.n_kv_head, hd).transpose(1, 2)
        q, k = apply_rope(q, rot), apply_rope(k, rot)
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        rep = a.n_head // a.n_kv_head
        k, v = k_cache[:, :, :end].repeat_interleave(rep, dim=1), v_cache[:, :, :end].repeat_interleave(rep, dim=1)
        # Causal within the new positions; every cached position before them is visible. One new
        # position sees everything, so decoding steps need no mask.
        mask = None
        if T > 1:
            mask = torch.arange(end)[None, :] <= torch.arange(start, end)[:, None]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.wo(o.transpose(1, 2).reshape(1, T, -1))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Llama(nn.Module):
    """The decoder. Weights and the rotation table only: the keys and values live in a `KVCache`."""

    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.n_vocab, args.n_state)
        self.blocks = nn.ModuleList(Block(args) for _ in range(args.n_layer))
        self.norm = nn.RMSNorm(args.n_state, eps=args.norm_eps)
        self.register_buffer("rot", rope_table(args), persistent=False)

    def new_cache(self, capacity: int) -> KVCache:
        """A cache for one answer of at most `capacity` positions (prompt + new tokens)."""
        return KVCache.empty(self.args, capacity)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        """tokens [1, T] at positions [start, start + T) -> logits of the last position [1, n_vocab]."""
        end = start + tokens.shape[1]
        if end > cache.capacity:
            raise ValueError(f"positions up to {end} do not fit a cache of {cache.capacity}")
        x = self.embed(tokens)
        rot = self.rot[start:end]
        for i, block in enumerate(self.blocks):
            x = block(x, rot, start, cache.k[i], cache.v[i])
        return F.linear(self.norm(x[:, -1]), self.embed.weight)  # tied output projection


# GGUF tensor name -> parameter name, per block and for the whole model.
_BLOCK_KEYS = {
    "attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo",
    "ffn_norm": "ffn_norm", "ffn_gate": "w_gate", "ffn_up": "w_up", "ffn_down": "w_down",
}
_TOP_KEYS = {"token_embd.weight": "embed.weight", "output_norm.weight": "norm.weight"}


def _param_name(gguf_name: str) -> str | None:
    if gguf_name in _TOP_KEYS:
        return _TOP_KEYS[gguf_name]
    parts = gguf_name.split(".")  # blk.{i}.{key}.weight
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_KEYS:
        return f"blocks.{parts[1]}.{_BLOCK_KEYS[parts[2]]}.{parts[3]}"
    return None


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


class BpeTokenizer:
    """SmolLM2's byte-level BPE, rebuilt from the GGUF vocabulary and merges with `tokenizers`.

    Two encoders over one vocabulary: `encode` (content) recognises no special token, so text that
    spells `<|im_end|>` is encoded as the characters it is; control tokens enter a prompt only as
    the ids of `special_id`. `decode` drops control tokens.
    """

    def __init__(self, tokens: list[str], merges: list[str], special: list[str]):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.content = self._build(merges)
        self.full = self._build(merges)
        self.full.add_special_tokens(special)  # only so that decoding knows which ids to skip
        self.special = frozenset(special)

    def _build(self, merges: list[str]):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.BPE(vocab=dict(self.vocab), merges=[tuple(m.split(" ", 1)) for m in merges]))
        # SmolLM2's pre-tokenizer: every digit on its own, then GPT-2's byte-level split.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        tok.decoder = decoders.ByteLevel()
        return tok

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as plain text: no special token is recognised in it."""
        return self.content.encode(text, add_special_tokens=False).ids

    def special_id(self, token: str) -> int:
        if token not in self.special:
            raise CheckpointError(f"the LLM's vocabulary has no control token {token}")
        return self.vocab[token]

    def decode(self, ids: Sequence[int]) -> str:
        return self.full.decode(list(ids), skip_special_tokens=True)


def load_gguf(path: str | os.PathLike) -> tuple[Llama, BpeTokenizer]:
    """Build the model and tokenizer from a llama-architecture GGUF file; every tensor is checked."""
    import gguf

    reader = gguf.GGUFReader(os.fspath(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: architecture {arch!r}, expected 'llama'")
    g = lambda k, d: _field(reader, f"llama.{k}", d)  # noqa: E731
    tokens = _field(reader, "tokenizer.ggml.tokens")
    args = LlamaArgs(
        n_vocab=len(tokens), n_state=int(g("embedding_length", 576)), n_layer=int(g("block_count", 30)),
        n_head=int(g("attention.head_count", 9)), n_kv_head=int(g("attention.head_count_kv", 3)),
        n_ff=int(g("feed_forward_length", 1536)), rope_theta=float(g("rope.freq_base", 10000.0)),
        norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)), context_length=int(g("context_length", 8192)),
    )
    with torch.device("meta"):
        model = Llama(args)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    for t in reader.tensors:
        name = _param_name(t.name)
        if name is None:
            raise CheckpointError(f"{path}: unexpected tensor {t.name}")
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        state[name] = torch.from_numpy(np.ascontiguousarray(w.reshape(expected[name])))
    missing = set(expected) - set(state)
    if missing:
        raise CheckpointError(f"{path}: missing tensors {sorted(missing)[:5]}")
    model.load_state_dict(state, assign=True, strict=True)
    model.rot = rope_table(args)  # not in the file: built for real now that the model leaves the meta device
    types = _field(reader, "tokenizer.ggml.token_type")
    special = [tok for tok, kind in zip(tokens, types) if kind == 3]  # 3: control tokens
    tokenizer = BpeTokenizer(tokens, _field(reader, "tokenizer.ggml.merges"), special)
    return model.eval(), tokenizer


class SmolChat:
    """Chat with SmolLM2 in its ChatML format: `answer(messages, cfg)` writes the reply in pieces."""

    def __init__(self, model: Llama, tokenizer: BpeTokenizer):
        self.model, self.tok = model, tokenizer
        self.im_start, self.im_end = tokenizer.special_id(IM_START), tokenizer.special_id(IM_END)
        self.stop = {self.im_end, tokenizer.special_id(END_OF_TEXT)}

    def prompt(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        """messages: (role, content) pairs -> ids ending with the assistant header. The ChatML markers
        are ids inserted here; roles and contents are encoded as plain text."""
        ids: list[int] = []
        nl = self.tok.encode("\n")
        for role, content in messages:
            ids += [self.im_start, *self.tok.encode(f"{role}\n{content}"), self.im_end, *nl]
        return ids + [self.im_start, *self.tok.encode("assistant\n")]

    def answer(self, messages: Sequence[tuple[str, str]], cfg: GenerationConfig) -> Generator[str, None, TurnStats]:
        """The reply's text in pieces (whole characters), then its TurnStats as the generator's value.

        Stops at <|im_end|> / <|endoftext|> or after `cfg.max_new_tokens` (capped at what the context
        leaves). An over-long prompt keeps its end. Greedy unless `cfg.do_sample`.
        """
        ids = self.prompt(messages)
        window = self.model.args.context_length
        if len(ids) > window - MIN_NEW_TOKENS:
            ids = ids[-(window - MIN_NEW_TOKENS):]
        steps = min(cfg.max_new_tokens, window - len(ids))
        return self._write(ids, steps, cfg)

    def _write(self, ids: list[int], steps: int, cfg: GenerationConfig) -> Generator[str, None, TurnStats]:
        cache = self.model.new_cache(len(ids) + steps)
        generator = make_generator(cfg.seed)
        logits = self.model(torch.tensor([ids]), 0, cache)
        out: list[int] = []
        emitted, reason, n = "", "length", 0
        try:
            for step in range(steps):
                # The repetition penalty looks at the answer's own tokens (the prompt quotes transcripts).
                token = int(next_token(logits, torch.tensor([out], dtype=torch.long), cfg, generator)[0])
                n += 1
                if token in self.stop:
                    reason = "stop"
                    break
                out.append(token)
                text = self.tok.decode(out)
                if len(text) > len(emitted) and not text.endswith("\ufffd"):  # whole characters only
                    yield text[len(emitted):]
                    emitted = text
                if step + 1 < steps:
                    logits = self.model(torch.tensor([[token]]), len(ids) + step, cache)
            tail = self.tok.decode(out)[len(emitted):]
            if tail:
                yield tail
        except StopAnswer:  # a stop string was written
            reason = "stop"
        return TurnStats(len(ids), 0, n, reason)
