"""Prefill, decode steps, sampling and stop tokens: free functions over (model, tokens, options)."""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterator

import torch

from .errors import QwenAudioError
from .llm import KVCache, QwenAudioLM


@dataclass
class GenerationConfig:
    """Generation settings, read from a checkpoint's generation_config.json (the tutorial's API).

    Defaults are the published chat model's. Mutable like transformers' class, so
    `model.generation_config.top_p = 0.8` works; `model.chat(..., top_p=0.8)` overrides one call.
    """

    chat_format: str = "chatml"
    max_new_tokens: int = 512  # new tokens at most
    do_sample: bool = True  # False: greedy
    temperature: float = 1.0
    top_p: float = 0.5  # nucleus sampling: keep the smallest set of tokens with this much probability
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0  # 1: off; >1 discourages tokens already in the prompt or answer
    seed: int | None = None  # a fixed seed makes sampling reproducible
    eos_token_id: int = 151643
    pad_token_id: int = 151643
    max_window_size: int = 6144  # oldest history turns are dropped to fit this many prompt tokens

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides) -> "GenerationConfig":
        from .hub import resolve_checkpoint

        if str(name_or_path) == "lite":  # the embedded backend answers greedily unless asked to sample
            return cls(**{"do_sample": False, **overrides})
        path = Path(resolve_checkpoint(name_or_path)) / "generation_config.json"
        d = json.loads(path.read_text()) if path.is_file() else {}
        for k in ("trust_remote_code", "revision"):
            overrides.pop(k, None)
        return cls.from_dict({**d, **overrides})

    def updated(self, **overrides) -> "GenerationConfig":
        """A copy with `overrides` applied; unknown names are an error, not silently ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown generation option(s) {unknown}; known: {sorted(known)}")
        cfg = replace(self, **overrides)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise QwenAudioError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (0 < self.top_p <= 1):
            raise QwenAudioError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.do_sample and self.temperature <= 0:
            raise QwenAudioError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.repetition_penalty <= 0:
            raise QwenAudioError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def next_token(logits: torch.Tensor, seen: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
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
    logits = logits / cfg.temperature
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
) -> Iterator[torch.Tensor]:
    """Prefill `tokens` [B, S] at cache columns [start, start + S), then decode; yield the next ids [B] each step.

    Stops when every row has produced a stop id or after `cfg.max_new_tokens` steps. Rows that
    stopped keep being fed the pad token; their output is the caller's to ignore. `seen` [B, L] are
    the ids the repetition penalty looks at (default: `tokens`).
    """
    cfg.validate()
    generator = make_generator(cfg.seed, tokens.device)
    seen = tokens if seen is None else seen
    b = tokens.shape[0]
    cache.grow(start + tokens.shape[1] + cfg.max_new_tokens)
    logits = model(tokens, start, cache, audio=audio, pad=pad, alpha=alpha, last_only=True)[:, -1]
    pos = start + tokens.shape[1]
    done = torch.zeros(b, dtype=torch.bool, device=tokens.device)
    stop = torch.tensor(sorted(stop_ids), device=tokens.device)
    for step in range(cfg.max_new_tokens):
        nxt = next_token(logits, seen, cfg, generator)
        nxt = torch.where(done, torch.full_like(nxt, cfg.pad_token_id), nxt)
        yield nxt
        done |= torch.isin(nxt, stop)
        if bool(done.all()) or step == cfg.max_new_tokens - 1:
            return
        seen = torch.cat([seen, nxt[:, None]], dim=1)
        logits = model(nxt[:, None], pos, cache, pad=pad, alpha=alpha)[:, -1]
        pos += 1


class Utf8Stream:
    """Turn token bytes into text pieces that never split a UTF-8 character."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
