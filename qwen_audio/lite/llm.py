"""lite's small LLM (Qwen2.5 `qwen2`, SmolLM2 `llama`) read from GGUF into the project's Qwen2 decoder, and
answered by the engine's scheduler like every other model.

The GGUF file is read with the `gguf` package and its blocks (Q4_1 / Q8_0 / Q5_0 / Q4_K / Q6_K)
dequantised once at load, to float32, or to bfloat16 where the CPU multiplies bfloat16 natively
(AMX or AVX512-BF16: half the memory and ~6x the prefill speed; elsewhere bfloat16 would be
emulated and slow). Both architectures are the same decoder (`models.qwen2.Qwen2LM`): Qwen2.5 has
biases on Q, K and V; SmolLM2 has none, and llama.cpp's converter stores its Q and K rows permuted for
the interleaved (GPT-J style) rotation, so they are put back in the order of the half-split rotation
the decoder uses (the same function of the input either way).

The model holds weights only; answers run in `SmolChat`'s engine (keys and values per answer, kept as
prefixes for later prompts, several answers in one forward pass).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Generator, Sequence

import numpy as np
import torch

from ..backend import PieceFilter, TurnStats, filtered
from ..cpu import native_bf16
from ..engine import Engine, EngineConfig, Prepared
from ..errors import CheckpointError
from ..models.bpe import BpeTokenizer
from ..models.qwen2 import Qwen2Config, Qwen2LM
from ..options import GenerationConfig
from ..quantize import Quantization, quantize_modules
from ..weights import put_tensor

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
MIN_NEW_TOKENS = 64  # an over-long prompt loses its start so that at least this many tokens can follow
# Prompt tokens at most (its end is kept): the prompts of open answers are 70-160 tokens (reports, the last
# turns, the question).
MAX_PROMPT_TOKENS = 1024
MAX_CONTEXT = 8192  # positions a cache may span here, whatever the file allows

# GGUF tensor name -> the decoder's parameter name, per block and for the whole model.
_BLOCK_KEYS = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP_KEYS = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}


def _param_name(gguf_name: str) -> str | None:
    if gguf_name in _TOP_KEYS:
        return _TOP_KEYS[gguf_name]
    parts = gguf_name.split(".")  # blk.{i}.{key}.{weight|bias}
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_KEYS:
        return f"model.layers.{parts[1]}.{_BLOCK_KEYS[parts[2]]}.{parts[3]}"
    return None


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_config(reader) -> tuple[Qwen2Config, str]:
    """The decoder's dimensions from a GGUF reader's metadata, and the architecture ("llama" or "qwen2");
    CheckpointError if unsupported."""
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2"):
        raise CheckpointError(f"architecture {arch!r}: only 'llama' and 'qwen2' GGUF files are supported")

    def g(k, default=None):
        v = _field(reader, f"{arch}.{k}", default)
        if v is None:
            raise CheckpointError(f"the GGUF metadata lacks {arch}.{k}")
        return v

    names = {t.name for t in reader.tensors}
    config = Qwen2Config(
        vocab_size=len(_field(reader, "tokenizer.ggml.tokens")), dim=int(g("embedding_length")),
        n_layer=int(g("block_count")), n_head=int(g("attention.head_count")),
        n_kv_head=int(g("attention.head_count_kv")), ffn_dim=int(g("feed_forward_length")),
        rope_theta=float(g("rope.freq_base", 10000.0)), norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        max_position_embeddings=min(MAX_CONTEXT, int(g("context_length", MAX_CONTEXT))),
        tie_word_embeddings="output.weight" not in names, attention_bias=arch == "qwen2")
    return config, arch


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a llama Q or K matrix from llama.cpp's interleaved-rotation order back to the half-split
    order (the inverse of its converter's `permute`)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str | os.PathLike, dtype: torch.dtype | None = None,
              quantize: str | Quantization | None = None) -> tuple[Qwen2LM, BpeTokenizer]:
    """Build the decoder and tokenizer from a llama- or qwen2-architecture GGUF file; every tensor is checked,
    and a file named as one of `weights.LLMS` must have that model's metadata (`check_llm_metadata`).

    dtype: of the computation; None: bfloat16 where the CPU has native bfloat16 and the model is over 300M
    parameters, else float32. quantize: "int8", "int4", ... (see `qwen_audio.quantize`): the file's blocks,
    dequantized, are stored again in the project's int8/int4 layers (the output head in int8).
    """
    quantization = Quantization.parse(quantize)
    import gguf

    from .weights import check_llm_metadata, source_of

    reader = gguf.GGUFReader(os.fspath(path))
    check_llm_metadata(reader, path, source_of(path))
    try:
        config, arch = read_config(reader)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if dtype is None:
        n_params = sum(int(np.prod(t.shape)) for t in reader.tensors)
        dtype = torch.bfloat16 if native_bf16() and n_params > 300_000_000 else torch.float32
    with torch.device("meta"):
        model = Qwen2LM(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    for t in reader.tensors:
        name = _param_name(t.name)
        if name is None or name not in expected:
            raise CheckpointError(f"{path}: unexpected tensor {t.name}")
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        if tuple(w.shape) != tuple(reversed([int(d) for d in t.shape])) or w.size != int(np.prod(expected[name])):
            raise CheckpointError(f"{path}: {t.name} has shape {list(w.shape)}, expected {list(expected[name])}")
        w = w.reshape(expected[name])
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = _unpermute(w, config.n_head if "q_proj" in name else config.n_kv_head)
        tensor = torch.from_numpy(np.array(w, dtype=np.float32))  # a copy: F32 tensors are read-only maps
        state[name] = tensor if quantization is not None else tensor.to(dtype)  # quantized from float32
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing = set(expected) - set(state)
    if missing:
        raise CheckpointError(f"{path}: missing tensors {sorted(missing)[:5]}")
    if quantization is None:
        model.load_state_dict(state, assign=True, strict=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
    else:
        quantize_modules(model, quantization, dtype, ("model.embed_tokens",), "lm_head")
        for name, tensor in state.items():
            put_tensor(model, name, tensor, dtype, "cpu")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    special = [tok for tok, kind in zip(tokens, types) if kind == 3]  # 3: control tokens
    pre = _field(reader, "tokenizer.ggml.pre", "smollm")
    tokenizer = BpeTokenizer(tokens, _field(reader, "tokenizer.ggml.merges"), special,
                             "qwen2" if pre == "qwen2" else "smollm")
    return model.eval(), tokenizer


class TextEngine(Engine):
    """The engine for a text-only chat model: answers cut by max_new_tokens keep every token (only the
    published Qwen-Audio code drops the last)."""

    DROPS_LAST_AT_LENGTH = False


class SmolChat:
    """Chat with the small LLM in its ChatML format: `answer(messages, cfg)` writes the reply in pieces.
    Answers are written by an engine of its own, several at once, prompts kept as prefixes."""

    def __init__(self, model: Qwen2LM, tokenizer: BpeTokenizer, engine: EngineConfig = EngineConfig()):
        self.model, self.tok = model, tokenizer
        self.engine = TextEngine(model, engine)
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

    def answer(self, messages: Sequence[tuple[str, str]], cfg: GenerationConfig, opening: str = "",
               cancel: threading.Event | None = None) -> Generator[str, None, TurnStats]:
        """The reply's text in pieces (whole characters), then its TurnStats as the generator's value.
        `opening`: words the reply already starts with (the caller has written them); the model continues.

        Stops at <|im_end|> / <|endoftext|> or after `cfg.max_new_tokens` (capped at what the context
        leaves). A prompt past MAX_PROMPT_TOKENS keeps its end. Greedy unless `cfg.do_sample`. The
        repetition penalty looks at the answer's own tokens (the prompt quotes transcripts). `cancel` (set
        from any thread) ends the answer at the scheduler's next step.
        """
        ids = self.prompt(messages) + (self.tok.encode(opening) if opening else [])
        window = self.model.config.max_position_embeddings
        keep = min(MAX_PROMPT_TOKENS, window - MIN_NEW_TOKENS)
        if len(ids) > keep:
            ids = ids[-keep:]
        prepared = Prepared(ids, [], [], 1.0, min(cfg.max_new_tokens, window - len(ids)), penalize_prompt=False)
        tokens = self.engine.tokens(prepared, cfg, self.stop, cancel=cancel)
        # A continuation of `opening` keeps its leading space ("... a dog" + " that ...").
        return self.engine.write(self.tok, tokens, lstrip=not opening)


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
