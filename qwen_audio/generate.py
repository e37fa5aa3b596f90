"""Prefill, decode steps, sampling and stop tokens: free functions over (model, tokens, options).

`GenerationConfig` (the options) lives in `options.py` and is re-exported here.
"""

from __future__ import annotations

import codecs
from typing import Callable, Iterator

import torch

from . import cuda
from .errors import NonFiniteError
from .llm import KVCache, QwenAudioLM
from .options import GenerationConfig


def next_token(logits: torch.Tensor, seen: torch.Tensor, cfg: GenerationConfig,
               generator: torch.Generator | None) -> torch.Tensor:
    """Choose the next token of every row. logits: [B, V] float32; seen: [B, L] ids so far. Returns [B].

    Follows transformers' order: repetition penalty, then temperature, top-k, top-p, then sampling.
    """
    logits = logits.float()
    if cfg.repetition_penalty != 1.0:
        prev = torch.gather(logits, 1, seen)
        prev = torch.where(prev < 0, prev * cfg.repetition_penalty, prev / cfg.repetition_penalty)
        logits = logits.scatter(1, seen, prev)
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    # Shifted so that the largest is 0, and divided by at least float32's smallest normal number: a tiny
    # temperature (1e-300, which is 0 in float32) then sends the others to -inf, greedy as its limit is,
    # where dividing as it is gives inf - inf and 0 / 0, and softmax NaN.
    t = max(cfg.temperature, torch.finfo(torch.float32).tiny)
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / t
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    if cfg.top_p < 1.0:
        # The nucleus: the most likely tokens whose preceding mass is below top_p (the most likely
        # one always). It nearly always lies in the top 1024, which spares sorting the vocabulary.
        k = min(1024, probs.shape[-1])
        top, order = probs.topk(k, dim=-1)
        if k < probs.shape[-1] and not bool((top.sum(-1) >= cfg.top_p).all()):
            top, order = probs.sort(dim=-1, descending=True)
        before = top.cumsum(dim=-1) - top
        top = top.masked_fill(before >= cfg.top_p, 0.0)
        return order.gather(1, torch.multinomial(top, 1, generator=generator)).squeeze(1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A seeded generator on the device that samples (None: torch's global one)."""
    return None if seed is None else torch.Generator(device=device).manual_seed(int(seed))


def check_finite(model: QwenAudioLM, logits: torch.Tensor, step: int) -> None:
    """Raise NonFiniteError, naming weights that hold NaN or inf if any, when `logits` are not all finite."""
    if bool(torch.isfinite(logits).all()):
        return
    bad = model.nonfinite_weights()
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        why = f"these weights hold NaN or infinite values: {', '.join(bad[:3])}{more}; the checkpoint is damaged"
    else:
        why = f"no weight is NaN or infinite, so {model.dtype} overflowed: load with dtype=torch.bfloat16 or float32"
    raise NonFiniteError(f"the model computed NaN or infinite logits at step {step}: {why}")


def prefill(model: QwenAudioLM, tokens: torch.Tensor, start: int, cache: KVCache, *, audio=(), pad=None,
            alpha=None) -> torch.Tensor:
    """Run `tokens` [B, S] at cache columns [start, start + S); returns the last position's logits [B, V]."""
    logits = model(tokens, start, cache, audio=audio, pad=pad, alpha=alpha, last_only=True)[:, -1]
    check_finite(model, logits, 0)
    return logits


def decode_step(model: QwenAudioLM, cache: KVCache, pos: int, steps: int, *, batch: int, pad=None, alpha=None,
                graphs: bool = True) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """`step(token [B], pos) -> logits [B, V]` for one answer: on a CUDA device a captured graph (when the
    answer may be long enough to pay for capturing it), elsewhere the model called step by step."""
    if graphs and model.device.type == "cuda" and steps >= cuda.MIN_STEPS:
        return cuda.graphed_step(model, cache, pos, batch=batch, pad=pad, alpha=alpha)
    return lambda token, at: model(token[:, None], at, cache, pad=pad, alpha=alpha)[:, -1]


@torch.inference_mode()
def generate(
    model: QwenAudioLM,
    tokens: torch.Tensor,
    cfg: GenerationConfig,
    stop_ids: set[int],
    *,
    cache: KVCache,
    start: int = 0,
    audio: list[torch.Tensor] = (),
    pad: torch.Tensor | None = None,
    alpha: list[float] | None = None,
    seen: torch.Tensor | None = None,
    max_new_tokens: int | None = None,
    graphs: bool = True,
) -> Iterator[torch.Tensor]:
    """Prefill `tokens` [B, S] at cache columns [start, start + S), then decode; yield the next ids [B] each step.

    Stops when every row has produced a stop id or after `max_new_tokens` (default: the options') steps.
    Rows that stopped are fed the pad token; their output is the caller's to ignore. `seen` [B, L] are
    the ids the repetition penalty looks at (default: `tokens`). `graphs`: on a CUDA device, replay the
    decode step as a CUDA graph (see `decode_step`). The one driver of every answer.
    """
    steps = cfg.max_new_tokens if max_new_tokens is None else max_new_tokens
    generator = make_generator(cfg.seed, tokens.device)
    seen = tokens if seen is None else seen
    cache.grow(start + tokens.shape[1] + steps)
    logits = prefill(model, tokens, start, cache, audio=audio, pad=pad, alpha=alpha)
    pos = start + tokens.shape[1]
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    stop = torch.tensor(sorted(stop_ids), device=tokens.device)
    step_logits = None  # made after the first token is out, so capturing a graph never delays it
    for step in range(steps):
        nxt = next_token(logits, seen, cfg, generator)
        nxt = torch.where(done, torch.full_like(nxt, cfg.pad_token_id), nxt)
        yield nxt
        done |= torch.isin(nxt, stop)
        if bool(done.all()) or step == steps - 1:
            return
        seen = torch.cat([seen, nxt[:, None]], dim=1)
        if step_logits is None:
            step_logits = decode_step(model, cache, pos, steps, batch=tokens.shape[0], pad=pad, alpha=alpha,
                                      graphs=graphs)
        logits = step_logits(nxt, pos)
        check_finite(model, logits, step + 1)
        pos += 1


class Utf8Stream:
    """Turn token bytes into text pieces that never split a UTF-8 character."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
