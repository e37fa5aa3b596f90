"""A small Llama decoder (SmolLM2-135M-Instruct) read from GGUF, with a fixed-size KV cache.

The GGUF file (Q4_1 / Q8_0 blocks) is read with the `gguf` package and dequantised to float32
once at load (~540 MB). The architecture is the plain Llama of the file's metadata: RMSNorm,
rotary attention with grouped K/V heads, SwiGLU, tied embeddings. llama.cpp's converter stores
Q and K rows permuted for the interleaved (GPT-J style) rotation, so that is the rotation here.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import CheckpointError


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
    max_len: int = 2048  # KV cache positions (the model knows 8192; 2048 is plenty here)

    @property
    def head_dim(self) -> int:
        return self.n_state // self.n_head


class KVCache(nn.Module):
    """Keys and values of one layer: [1, n_kv_head, max_len, head_dim], written at `input_pos`."""

    def __init__(self, args: LlamaArgs):
        super().__init__()
        shape = (1, args.n_kv_head, args.max_len, args.head_dim)
        self.register_buffer("k", torch.zeros(shape), persistent=False)
        self.register_buffer("v", torch.zeros(shape), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Store k, v [1, n_kv_head, T, head_dim] at positions `input_pos` [T]; return all [.., :end, ..]."""
        self.k[:, :, input_pos] = k
        self.v[:, :, input_pos] = v
        end = int(input_pos[-1]) + 1
        return self.k[:, :, :end], self.v[:, :, :end]


def rope_table(args: LlamaArgs) -> torch.Tensor:
    """Complex rotations [max_len, head_dim // 2] for interleaved pairs (x[2i], x[2i+1])."""
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, args.head_dim, 2, dtype=torch.float64) / args.head_dim))
    angles = torch.outer(torch.arange(args.max_len, dtype=torch.float64), freqs)
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
        self.cache = KVCache(args)

    def forward(self, x: torch.Tensor, rot: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """x [1, T, n_state] at positions input_pos [T] -> [1, T, n_state]."""
        a, T, hd = self.args, x.shape[1], self.args.head_dim
        h = self.attn_norm(x)
        q = self.wq(h).view(1, T, a.n_head, hd).transpose(1, 2)
        k = self.wk(h).view(1, T, a.n_kv_head, hd).transpose(1, 2)
        v = self.wv(h).view(1, T, a.n_kv_head, hd).transpose(1, 2)
        q, k = apply_rope(q, rot), apply_rope(k, rot)
        k, v = self.cache.update(input_pos, k, v)
        rep = a.n_head // a.n_kv_head
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # Causal within the new positions; every cached position before them is visible.
        mask = torch.arange(k.shape[2])[None, :] <= input_pos[:, None]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.wo(o.transpose(1, 2).reshape(1, T, -1))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Llama(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.n_vocab, args.n_state)
        self.blocks = nn.ModuleList(Block(args) for _ in range(args.n_layer))
        self.norm = nn.RMSNorm(args.n_state, eps=args.norm_eps)
        self.register_buffer("rot", rope_table(args), persistent=False)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """tokens [1, T] at positions input_pos [T] -> logits of the last position [n_vocab]."""
        x = self.embed(tokens)
        rot = self.rot[input_pos]
        for block in self.blocks:
            x = block(x, rot, input_pos)
        return F.linear(self.norm(x[:, -1]), self.embed.weight)[0]  # tied output projection


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
    """SmolLM2's byte-level BPE, rebuilt from the GGUF vocabulary and merges with `tokenizers`."""

    def __init__(self, tokens: list[str], merges: list[str], special: list[str]):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        vocab = {t: i for i, t in enumerate(tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
        # SmolLM2's pre-tokenizer: every digit on its own, then GPT-2's byte-level split.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(special)
        self.tok = tok
        self.vocab = vocab

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


def load_gguf(path: str | os.PathLike, max_len: int = 2048) -> tuple[Llama, BpeTokenizer]:
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
        norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)), max_len=max_len,
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
        w = torch.from_numpy(np.ascontiguousarray(w.reshape(expected[name])))
        state[name] = w
    missing = set(expected) - set(state)
    if missing:
        raise CheckpointError(f"{path}: missing tensors {sorted(missing)[:5]}")
    model.load_state_dict(state, assign=True, strict=True)
    # Buffers are not in the file: build them for real now that the model leaves the meta device.
    model.rot = rope_table(args)
    for block in model.blocks:
        block.cache = KVCache(args)
    types = _field(reader, "tokenizer.ggml.token_type")
    special = [tok for tok, kind in zip(tokens, types) if kind == 3]  # 3: control tokens
    tokenizer = BpeTokenizer(tokens, _field(reader, "tokenizer.ggml.merges"), special)
    return model.eval(), tokenizer


@dataclass(frozen=True)
class SampleOptions:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy, so answers are reproducible
    top_p: float = 0.9  # nucleus mass when sampling
    repetition_penalty: float = 1.2  # >1 discourages tokens already in the answer (small models loop)
    seed: int = 1234
    # One thread by default: a 135M model's small matmuls gain little from a second thread, and
    # when another process busies a core, two threads wait on each other at every op's barrier
    # (measured on the 2-core CI machine under load: 50 ms/token with 1 thread, 200-1500 with 2).
    threads: int = 1


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` intra-op threads (0: leave as is), restoring the previous count."""
    old = torch.get_num_threads()
    if n and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n and n != old:
            torch.set_num_threads(old)


class SmolChat:
    """Chat with SmolLM2 in its ChatML format; `stream(messages)` yields text pieces."""

    def __init__(self, model: Llama, tokenizer: BpeTokenizer):
        self.model, self.tok = model, tokenizer
        self._lock = threading.Lock()  # one conversation at a time: the KV cache is shared
        self.stop = {tokenizer.vocab[t] for t in ("<|im_end|>", "<|endoftext|>") if t in tokenizer.vocab}

    def prompt(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        """messages: (role, content) pairs -> ids ending with the assistant header."""
        text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
        return self.tok.encode(text + "<|im_start|>assistant\n")

    def stream(self, messages: Sequence[tuple[str, str]], options: SampleOptions = SampleOptions()) -> Iterator[str]:
        """Yield the answer's text in pieces (whole characters), stopping at <|im_end|>."""
        with self._lock:  # released too when the caller drops the generator (GeneratorExit)
            yield from self._stream(messages, options)

    def _stream(self, messages: Sequence[tuple[str, str]], options: SampleOptions) -> Iterator[str]:
        ids = self.prompt(messages)
        room = self.model.args.max_len - options.max_new_tokens
        ids = ids[-room:]  # keep the end of an over-long conversation
        gen = torch.Generator().manual_seed(options.seed)
        with torch_threads(options.threads):  # set per call: the caller's code runs between pieces
            logits = self.model(torch.tensor([ids]), torch.arange(len(ids)))
        out: list[int] = []
        emitted = ""
        for step in range(options.max_new_tokens):
            tok = _sample(logits, out, options, gen)
            if tok in self.stop:
                break
            out.append(tok)
            text = self.tok.decode(out)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(emitted):]
                emitted = text
            pos = len(ids) + step
            with torch_threads(options.threads):
                logits = self.model(torch.tensor([[tok]]), torch.tensor([pos]))
        tail = self.tok.decode(out)[len(emitted):]
        if tail:
            yield tail


def _sample(logits: torch.Tensor, previous: list[int], o: SampleOptions, gen: torch.Generator) -> int:
    logits = logits.clone()
    if o.repetition_penalty != 1.0 and previous:
        seen = torch.tensor(sorted(set(previous)))
        vals = logits[seen]
        logits[seen] = torch.where(vals > 0, vals / o.repetition_penalty, vals * o.repetition_penalty)
    if o.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / o.temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    keep = sorted_p.cumsum(0) - sorted_p < o.top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
    return int(order[choice])
