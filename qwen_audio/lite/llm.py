"""A small decoder-only LLM read from GGUF (SmolLM2 Llama, Qwen2.5 qwen2); stateless, a cache per answer.

The GGUF file is read with the `gguf` package and its blocks (Q4_1 / Q8_0 / Q5_0 / Q4_K / Q6_K)
dequantised once at load, to float32, or to bfloat16 where the CPU multiplies bfloat16 natively
(AMX or AVX512-BF16: half the memory and ~6x the prefill speed; elsewhere bfloat16 would be
emulated and slow). Two architectures, both from the file's metadata:

* `llama` (SmolLM2): RMSNorm, rotary attention with grouped K/V heads, SwiGLU, tied embeddings.
  llama.cpp's converter stores Q and K rows permuted for the interleaved (GPT-J style) rotation,
  so that is the rotation here.
* `qwen2` (Qwen2.5): the same blocks plus biases on Q, K and V; Q and K are stored unpermuted, so
  the rotation is over halves (GPT-NeoX style); an output matrix of its own when the file has one.

The module holds weights only: every answer allocates its own `KVCache` (prompt + new tokens) and
passes it to `forward`, so answers in threads, or several streams read in turns, never share state
and need no lock.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Generator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..backend import PieceFilter, StopAnswer, TurnStats, filtered
from ..errors import CheckpointError
from ..generate import make_generator, next_token
from ..models.bpe import BpeTokenizer
from ..options import GenerationConfig

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
MIN_NEW_TOKENS = 64  # an over-long prompt loses its start so that at least this many tokens can follow
# Prompt tokens at most (its end is kept): the prompts of open answers are 70-160 tokens (reports, the last
# turns, the question), and a prompt is computed in one pass the server cannot stop (8,000 tokens: ~140 s).
MAX_PROMPT_TOKENS = 1024
MAX_CONTEXT = 8192  # positions a cache may span here, whatever the file allows (a 32k table is 64 MB)


@dataclass(frozen=True)
class LlamaArgs:
    """Dimensions and variant, read from the GGUF metadata (`llama.*` or `qwen2.*` keys)."""

    n_vocab: int = 49152
    n_state: int = 576  # embedding width
    n_layer: int = 30
    n_head: int = 9
    n_kv_head: int = 3  # K/V heads shared by n_head // n_kv_head query heads each
    n_ff: int = 1536  # SwiGLU hidden width
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    context_length: int = 8192  # positions a prompt + answer may span (the file's, at most MAX_CONTEXT)
    qkv_bias: bool = False  # biases on the Q, K, V projections (qwen2)
    rope_halves: bool = False  # rotate (x[i], x[i + D/2]) pairs (qwen2) instead of (x[2i], x[2i+1]) (llama)
    tied: bool = True  # the output projection is the embedding matrix

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
    """Complex rotations [context_length, head_dim // 2], one per rotated pair of each head."""
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, args.head_dim, 2, dtype=torch.float64) / args.head_dim))
    angles = torch.outer(torch.arange(args.context_length, dtype=torch.float64), freqs)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, rot: torch.Tensor, halves: bool = False) -> torch.Tensor:
    """x [1, H, T, D] rotated by rot [T, D // 2]: pairs (x[2i], x[2i+1]), or (x[i], x[i + D/2]) if `halves`."""
    if halves:
        a, b = x.float().chunk(2, dim=-1)
        y = torch.complex(a, b) * rot
        return torch.cat([y.real, y.imag], dim=-1).type_as(x)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`layer(x)` in the weights' dtype (bfloat16 weights multiply bfloat16 activations); float32 out."""
    w = layer.weight
    if w.dtype == x.dtype:
        return layer(x)
    b = layer.bias.to(w.dtype) if layer.bias is not None else None
    return F.linear(x.to(w.dtype), w, b).float()


class Block(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        hd = args.head_dim
        self.args = args
        self.attn_norm = nn.RMSNorm(args.n_state, eps=args.norm_eps)
        self.wq = nn.Linear(args.n_state, args.n_head * hd, bias=args.qkv_bias)
        self.wk = nn.Linear(args.n_state, args.n_kv_head * hd, bias=args.qkv_bias)
        self.wv = nn.Linear(args.n_state, args.n_kv_head * hd, bias=args.qkv_bias)
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
        q = linear(h, self.wq).view(1, T, a.n_head, hd).transpose(1, 2)
        k = linear(h, self.wk).view(1, T, a.n_kv_head, hd).transpose(1, 2)
        v = linear(h, self.wv).view(1, T, a.n_kv_head, hd).transpose(1, 2)
        q, k = apply_rope(q, rot, a.rope_halves), apply_rope(k, rot, a.rope_halves)
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
        x = x + linear(o.transpose(1, 2).reshape(1, T, -1), self.wo)
        h = self.ffn_norm(x)
        return x + linear(F.silu(linear(h, self.w_gate)) * linear(h, self.w_up), self.w_down)


class Llama(nn.Module):
    """The decoder. Weights and the rotation table only: the keys and values live in a `KVCache`."""

    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.n_vocab, args.n_state)
        self.blocks = nn.ModuleList(Block(args) for _ in range(args.n_layer))
        self.norm = nn.RMSNorm(args.n_state, eps=args.norm_eps)
        self.output = None if args.tied else nn.Linear(args.n_state, args.n_vocab, bias=False)
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
        x = self.embed(tokens).float()
        rot = self.rot[start:end]
        for i, block in enumerate(self.blocks):
            x = block(x, rot, start, cache.k[i], cache.v[i])
        h = self.norm(x[:, -1])
        if self.output is not None:
            return linear(h, self.output)
        return F.linear(h.to(self.embed.weight.dtype), self.embed.weight).float()  # tied output projection


# GGUF tensor name -> parameter name, per block and for the whole model.
_BLOCK_KEYS = {
    "attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo",
    "ffn_norm": "ffn_norm", "ffn_gate": "w_gate", "ffn_up": "w_up", "ffn_down": "w_down",
}
_TOP_KEYS = {"token_embd.weight": "embed.weight", "output_norm.weight": "norm.weight", "output.weight": "output.weight"}


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


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16); Linux /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def read_args(reader) -> LlamaArgs:
    """The model's dimensions and variant from a GGUF reader's metadata; CheckpointError if unsupported."""
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2"):
        raise CheckpointError(f"architecture {arch!r}: only 'llama' and 'qwen2' GGUF files are supported")

    def g(k, default=None):
        v = _field(reader, f"{arch}.{k}", default)
        if v is None:
            raise CheckpointError(f"the GGUF metadata lacks {arch}.{k}")
        return v

    tokens = _field(reader, "tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    return LlamaArgs(
        n_vocab=len(tokens), n_state=int(g("embedding_length")), n_layer=int(g("block_count")),
        n_head=int(g("attention.head_count")), n_kv_head=int(g("attention.head_count_kv")),
        n_ff=int(g("feed_forward_length")), rope_theta=float(g("rope.freq_base", 10000.0)),
        norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        context_length=min(MAX_CONTEXT, int(g("context_length", MAX_CONTEXT))),
        qkv_bias=arch == "qwen2", rope_halves=arch == "qwen2", tied="output.weight" not in names,
    )


def load_gguf(path: str | os.PathLike, dtype: torch.dtype | None = None) -> tuple[Llama, BpeTokenizer]:
    """Build the model and tokenizer from a llama- or qwen2-architecture GGUF file; every tensor is checked,
    and a file named as one of `weights.LLMS` must have that model's metadata (`check_llm_metadata`).

    dtype: of the matrices (norms and biases stay float32); None: bfloat16 where the CPU has native
    bfloat16 and the model is over 300M parameters, else float32.
    """
    import gguf

    from .weights import check_llm_metadata, source_of

    reader = gguf.GGUFReader(os.fspath(path))
    check_llm_metadata(reader, path, source_of(path))
    try:
        args = read_args(reader)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if dtype is None:
        n_params = sum(int(np.prod(t.shape)) for t in reader.tensors)
        dtype = torch.bfloat16 if native_bf16() and n_params > 300_000_000 else torch.float32
    with torch.device("meta"):
        model = Llama(args)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    for t in reader.tensors:
        name = _param_name(t.name)
        if name is None or name not in expected:
            raise CheckpointError(f"{path}: unexpected tensor {t.name}")
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        if tuple(w.shape) != tuple(reversed([int(d) for d in t.shape])) or w.size != int(np.prod(expected[name])):
            raise CheckpointError(f"{path}: {t.name} has shape {list(w.shape)}, expected {list(expected[name])}")
        tensor = torch.from_numpy(np.array(w.reshape(expected[name]), dtype=np.float32))  # a copy: F32 tensors are read-only maps
        state[name] = tensor.to(dtype) if tensor.ndim == 2 else tensor  # norms and biases stay float32
    missing = set(expected) - set(state)
    if missing:
        raise CheckpointError(f"{path}: missing tensors {sorted(missing)[:5]}")
    model.load_state_dict(state, assign=True, strict=True)
    model.rot = rope_table(args)  # not in the file: built for real now that the model leaves the meta device
    types = _field(reader, "tokenizer.ggml.token_type")
    special = [tok for tok, kind in zip(tokens, types) if kind == 3]  # 3: control tokens
    pre = _field(reader, "tokenizer.ggml.pre", "smollm")
    tokenizer = BpeTokenizer(tokens, _field(reader, "tokenizer.ggml.merges"), special,
                             "qwen2" if pre == "qwen2" else "smollm")
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

    def answer(self, messages: Sequence[tuple[str, str]], cfg: GenerationConfig,
               opening: str = "") -> Generator[str, None, TurnStats]:
        """The reply's text in pieces (whole characters), then its TurnStats as the generator's value.
        `opening`: words the reply already starts with (the caller has written them); the model continues.

        Stops at <|im_end|> / <|endoftext|> or after `cfg.max_new_tokens` (capped at what the context
        leaves). A prompt past MAX_PROMPT_TOKENS keeps its end. Greedy unless `cfg.do_sample`.
        """
        ids = self.prompt(messages) + (self.tok.encode(opening) if opening else [])
        window = self.model.args.context_length
        keep = min(MAX_PROMPT_TOKENS, window - MIN_NEW_TOKENS)
        if len(ids) > keep:
            ids = ids[-keep:]
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


_SENTENCE_END = re.compile(r"[.!?。！？…](?:[\"'”’)\]*]*)(?=\s|$)|[。！？]")
_LIST_MARKER = re.compile(r"\s*(?:\d{1,2}|[a-zA-Z])\.")  # "5." opening a list item is no sentence end


def _last_end(text: str) -> int:
    """Index just past the last sentence end in `text` (0 if none): ., !, ?, … (with closing quotes or
    brackets) before a space or the end, or Chinese 。！？; a numbered list's "5." does not count."""
    cut = 0
    for m in _SENTENCE_END.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if _LIST_MARKER.fullmatch(text[line_start:m.end()]):
            continue
        cut = m.end()
    return cut


class WholeSentences(PieceFilter):
    """An answer cut by max_new_tokens ends at a sentence end, never mid-sentence (see `whole_sentences`)."""

    def __init__(self, free: int = 0):
        self.free, self.held, self.last, self.n = free, "", "", 0  # last: the end of what was written

    def push(self, piece: str) -> str:
        self.n += 1
        self.held += piece
        cut = len(self.held) if self.n <= self.free else _last_end(self.held)
        out, self.held = self.held[:cut], self.held[cut:]
        self.last = (self.last + out)[-200:]
        return out

    def end(self, stats: TurnStats) -> str:
        if stats.stop_reason != "length":
            return self.held
        if self.last.strip():  # something was written: mark the cut unless it ended a sentence
            return "" if _last_end(self.last) == len(self.last.rstrip()) else "…"
        return self.held.rstrip() + "…" if self.held.strip() else ""  # the unfinished first sentence, marked


def whole_sentences(pieces: Generator[str, None, TurnStats], free: int = 0) -> Generator[str, None, TurnStats]:
    """`pieces` passed on so that an answer cut by max_new_tokens ends at a sentence end, never mid-sentence.

    The first `free` pieces (the caller passes max_new_tokens less a tail of about 48 tokens) stream as
    they come; after them, text past the last sentence end is held until the next one arrives. When the
    answer ends by its stop token everything is written; when it is cut, the held tail is dropped, and
    if the text written so far does not end a sentence (a sentence longer than the tail, or an answer
    cut before its first sentence ended), "…" marks the cut. A numbered list's "5." is no sentence end.
    """
    return filtered(pieces, WholeSentences(free))
