"""Conversations on one model: what answers share and reuse, and the one driver of every answer.

The model holds weights; the engine holds what answers need besides them, each bounded in bytes with
the least recently used dropped first:

* clips: what the model hears of each clip (decoded once) and its log-mel (`audio.ClipStore`);
* features: encoder outputs by (clip, longest clip of its prompt): all clips of a prompt are encoded
  as one padded batch in the published code, so a clip's features depend on that longest clip;
* prefixes: the key/values of earlier prompts and answers (`PrefixPool`), shared by every
  conversation: a later turn, or a new conversation that starts the same way (system prompt, same
  clip), computes only what differs.

Every answer equals the published computation from scratch: a cached prefix is used only up to the
first token, clip feature or NTK alpha that differs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from .audio import ClipStore, source_key
from .backend import Pieces, StopAnswer, TurnStats
from .errors import PromptError
from .generate import Utf8Stream, generate
from .llm import KVCache, QwenAudioLM, ntk_alpha
from .messages import Audio, Conversation
from .options import GenerationConfig
from .tokenizer import QwenTokenizer, chat_prompt

Span = tuple[int, int, tuple]  # (first, last) prompt column of a clip, and the key of its features


@dataclass(frozen=True)
class EngineConfig:
    """Memory budgets of what the engine keeps between answers."""

    kv_bytes: int = 2 << 30  # key/values of earlier prompts (0.5 MB per token for the 7B model in bfloat16)
    feature_bytes: int = 256 << 20  # encoder outputs (6 MB per 30 s clip for the 7B model in bfloat16)
    clip_bytes: int = 256 << 20  # decoded clips and log-mels (3 MB per 30 s clip)
    reuse: bool = True  # False: every prompt is computed from scratch (the published way)
    cuda_graphs: bool = True  # on a CUDA device, replay each answer's decode step as a CUDA graph


class FeatureStore:
    """Tensors by key, least recently used dropped past `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            t = self._items.get(key)
            if t is not None:
                self._items.move_to_end(key)
            return t

    def put(self, key: tuple, value: torch.Tensor) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            total = sum(t.nbytes for t in self._items.values())
            while total > self.max_bytes and self._items:
                total -= self._items.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(eq=False)
class Prefix:
    """A KV cache and what it holds: the keys/values of `ids` in columns [0, len(ids))."""

    cache: KVCache
    ids: list[int]
    spans: list[Span]  # the clips among `ids`
    alpha: float  # the NTK alpha the keys were computed with
    epoch: int  # the engine's weights epoch they were computed in
    busy: bool = True  # checked out by an answer: others may copy its `ids` columns, not write them
    tick: int = 0  # when it was last handed back (for LRU)

    def match(self, ids: Sequence[int], spans: Sequence[Span]) -> int:
        """How many leading columns of a prompt (`ids` with its clip `spans`) this prefix holds exactly."""
        n = 0
        for a, b in zip(self.ids, ids):
            if a != b:
                break
            n += 1
        mine = {(s, e): k for s, e, k in self.spans}
        for s, e, k in spans:
            if s < n and (e >= n or mine.get((s, e)) != k):
                return s  # a clip whose features differ (or that is cut) is recomputed from its start
        return n


class PrefixPool:
    """KV prefixes of many conversations within `max_bytes` (busy ones are never dropped)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: list[Prefix] = []
        self._tick = 0

    @property
    def nbytes(self) -> int:
        return sum(p.cache.nbytes for p in self.entries)

    def checkout(self, ids: list[int], spans: list[Span], alpha: float, capacity: int, epoch: int,
                 new_cache: Callable[[int], KVCache], column_bytes: int, reuse: bool = True) -> tuple[Prefix, int]:
        """A prefix to write this prompt's answer into, and how many of its columns are reused.

        The longest exact match wins. A free prefix that the prompt continues whole is taken over
        (a conversation's next turn); otherwise the matching columns are copied into a new cache, so
        the prefix stays for its own conversation (a branch, or one still being answered).
        """
        best, n = None, 0
        if reuse:
            limit = len(ids) - 1  # at least one token is run, for the next-token logits
            for p in self.entries:
                if p.epoch == epoch and p.alpha == alpha:
                    m = min(p.match(ids, spans), limit)
                    if m > 0 and (best is None or (m, not p.busy, p.tick) > (n, not best.busy, best.tick)):
                        best, n = p, m
        if best is not None and not best.busy and n == len(best.ids):
            best.busy = True
            best.cache.grow(capacity)
            return best, n
        self._make_room(capacity * column_bytes, keep=best)
        prefix = Prefix(new_cache(capacity), list(ids[:n]), [sp for sp in spans if sp[1] < n], alpha, epoch)
        if best is not None:
            prefix.cache.copy_prefix(best.cache, n)
        self.entries.append(prefix)
        return prefix, n

    def checkin(self, prefix: Prefix, ids: list[int], spans: list[Span], keep: bool) -> None:
        """Hand `prefix` back holding `ids`; drop it if not `keep`, then keep the pool within budget."""
        prefix.ids, prefix.spans, prefix.busy = ids, spans, False
        self._tick += 1
        prefix.tick = self._tick
        if not keep:
            self._drop(prefix)
        self._make_room(0, keep=None)

    def begin(self, prefix: Prefix, n: int, ids: list[int], spans: list[Span], alpha: float) -> None:
        """Record, as the answer starts, that only the first `n` columns are known (the rest will be written)."""
        prefix.ids, prefix.spans, prefix.alpha = list(ids[:n]), [sp for sp in spans if sp[1] < n], alpha

    def clear(self) -> None:
        """Forget every prefix that is not in use (those in use are dropped when handed back: see epochs)."""
        self.entries = [p for p in self.entries if p.busy]

    def _drop(self, prefix: Prefix) -> None:
        self.entries = [p for p in self.entries if p is not prefix]

    def _make_room(self, need: int, keep: Prefix | None) -> None:
        total = self.nbytes
        for p in sorted(self.entries, key=lambda p: p.tick):
            if total + need <= self.max_bytes:
                break
            if not p.busy and p is not keep:
                total -= p.cache.nbytes
                self._drop(p)


@dataclass
class Prepared:
    """A prompt made ready: every clip decoded and encoded, every limit checked."""

    ids: list[int]
    audio: list[torch.Tensor]  # [span, dim] features of each clip, in prompt order
    spans: list[Span]
    alpha: float
    max_new_tokens: int  # the options' cap, lowered to what the model's window leaves
    reused: int = field(default=0)  # prompt tokens taken from a prefix (known once the answer starts)


class Engine:
    """Answers on one model: `answer`, `answer_batch`, `complete`. Thread-safe; answers run in parallel."""

    def __init__(self, model: QwenAudioLM, config: EngineConfig = EngineConfig()):
        self.model, self.config = model, config
        self.clips = ClipStore(config.clip_bytes)
        self.features = FeatureStore(config.feature_bytes)
        self.prefixes = PrefixPool(config.kv_bytes)
        self._lock = threading.Lock()  # guards the pool's bookkeeping; never held while the model runs
        self._weights: tuple | None = None
        self._epoch = 0

    def __reduce__(self):  # copies and pickles of a model start with an empty engine
        return (Engine, (self.model, self.config))

    # -- preparing ----------------------------------------------------------------------------------

    def _check_weights(self) -> None:
        """Keys, values and features computed before `model.to(...)` are not this model's: forget them."""
        now = (self.model.dtype, self.model.device)
        if now != self._weights:
            with self._lock:
                self._weights, self._epoch = now, self._epoch + 1
                self.prefixes.clear()
            self.features.clear()

    def span(self, audio: Audio) -> int:
        """Prompt positions of a clip (decoding it, once)."""
        return self.clips.clip(audio.source, audio.name).length.span

    @torch.inference_mode()
    def encode(self, clips: Sequence[Audio]) -> tuple[list[torch.Tensor], list[tuple]]:
        """Features [span, dim] of the clips of one prompt, as one batch would give them, and their keys."""
        if not clips:
            return [], []
        decoded = [self.clips.clip(a.source, a.name) for a in clips]
        t_max = max(c.length.after_cnn for c in decoded)
        keys = [(source_key(a.source), t_max) for a in clips]
        found = {k: self.features.get(k) for k in keys}
        missing = [i for i, k in enumerate(keys) if keys.index(k) == i and found[k] is None]
        if missing:
            mels = torch.stack([self.clips.mel(clips[i].source, clips[i].name) for i in missing])
            feats = self.model.embed_audio(mels, [decoded[i].length for i in missing], t_max)
            for i, f in zip(missing, feats):
                found[keys[i]] = f
                self.features.put(keys[i], f)
        return [found[k] for k in keys], keys

    def prepare(self, tokenizer: QwenTokenizer, conversation: Conversation, cfg: GenerationConfig) -> Prepared:
        """Build and check the ChatML prompt of `conversation`; decode and encode its clips."""
        if cfg.chat_format != "chatml":
            raise PromptError(f"chat needs a chat model (chat_format 'chatml'), this one is {cfg.chat_format!r}: "
                              "the base Qwen-Audio model takes task prompts (see qwen_audio.transcribe)")
        self._check_weights()
        prompt = chat_prompt(tokenizer, conversation, self.span, max_window_size=cfg.max_window_size)
        ids, limit = prompt.ids, self.model.config.max_position_embeddings
        if len(ids) >= limit:
            raise PromptError(f"the prompt is {len(ids)} tokens, longer than the model's window of {limit}")
        feats, keys = self.encode(prompt.clips)
        spans = [(s, e, k) for (s, e), k in zip(audio_spans(tokenizer, ids), keys)]
        return Prepared(ids, feats, spans, self.alpha(len(ids)), min(cfg.max_new_tokens, limit - len(ids)))

    def column_bytes(self) -> int:
        """Bytes of keys and values per cached token."""
        c = self.model.config
        return 2 * c.n_layer * c.n_head * c.head_dim * self.model.dtype.itemsize

    def alpha(self, n_tokens: int) -> float:
        c = self.model.config
        return ntk_alpha(n_tokens, c.seq_length) if c.use_dynamic_ntk else 1.0

    # -- answering ----------------------------------------------------------------------------------

    def answer(self, tokenizer: QwenTokenizer, conversation: Conversation, cfg: GenerationConfig) -> Pieces:
        """Prepare now (errors raise here), then return the generator that writes the answer's text."""
        prepared = self.prepare(tokenizer, conversation, cfg)
        return self._write(tokenizer, prepared, cfg)

    def _write(self, tokenizer: QwenTokenizer, p: Prepared, cfg: GenerationConfig) -> Pieces:
        """Text pieces of the answer, never splitting a UTF-8 character, without surrounding whitespace;
        one token is held back (an answer cut by max_new_tokens loses its last token, as published)."""
        stop = stop_ids(tokenizer, cfg)
        tokens = self._tokens(p, cfg, stop)
        utf8, pending, n, reason = Utf8Stream(), None, 0, "length"
        started, spaces = False, ""

        def emit(piece: str) -> Iterator[str]:
            nonlocal started, spaces
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            body = piece.rstrip()
            if body:
                yield spaces + body
                spaces = piece[len(body):]
            else:
                spaces += piece

        try:
            try:
                for t in tokens:
                    n += 1
                    if t in stop:
                        reason = "stop"
                        break
                    if pending is not None:
                        yield from emit(utf8.push(tokenizer.decode_bytes([pending])))
                    pending = t
                if reason == "stop" and pending is not None:
                    yield from emit(utf8.push(tokenizer.decode_bytes([pending])))
            finally:
                tokens.close()  # hand the prefix back now, not when the generator is collected
            yield from emit(utf8.flush())
        except StopAnswer:  # a stop string was written: the answer ends here
            reason = "stop"
        return TurnStats(len(p.ids), p.reused, n, reason)

    def _tokens(self, p: Prepared, cfg: GenerationConfig, stop: set[int]) -> Iterator[int]:
        """The answer's token ids, written into a prefix checked out of the pool and handed back, with an
        exact record of what it holds, when the answer ends, is closed, or fails."""
        model, ids = self.model, p.ids
        with self._lock:
            epoch = self._epoch
            prefix, n = self.prefixes.checkout(ids, p.spans, p.alpha, len(ids) + p.max_new_tokens, epoch,
                                               lambda cap: model.new_cache(1, cap), self.column_bytes(),
                                               self.config.reuse)
            self.prefixes.begin(prefix, n, ids, p.spans, p.alpha)
        p.reused = n
        out: list[int] = []
        held = n  # columns known to hold keys/values: after the prefill len(ids), then one more per step
        try:
            steps = generate(model, torch.tensor([ids[n:]], device=model.device), cfg, stop, cache=prefix.cache,
                             start=n, audio=[f for (s, _, _), f in zip(p.spans, p.audio) if s >= n],
                             alpha=[p.alpha], seen=torch.tensor([ids], device=model.device),
                             max_new_tokens=p.max_new_tokens, graphs=self.config.cuda_graphs)
            for t in steps:
                held = len(ids) + len(out)  # the tokens before this one have been fed
                out.append(int(t[0]))
                yield out[-1]
        finally:
            record = (ids + out)[:held]
            with self._lock:
                keep = self.config.reuse and prefix.epoch == self._epoch
                self.prefixes.checkin(prefix, record, [sp for sp in p.spans if sp[1] < held], keep)

    @torch.inference_mode()
    def answer_batch(self, tokenizer: QwenTokenizer, conversations: Sequence[Conversation],
                     cfg: GenerationConfig) -> list[str]:
        """Several conversations at once. Rows are left-padded, with their own positions, masks and NTK
        alpha, so each gets what `answer` would give it alone (greedy: the same text)."""
        prepared = [self.prepare(tokenizer, c, cfg) for c in conversations]
        rows = [p.ids for p in prepared]
        width = max(map(len, rows))
        model = self.model
        tokens = torch.tensor([[cfg.pad_token_id] * (width - len(r)) + r for r in rows], device=model.device)
        pad = torch.tensor([width - len(r) for r in rows], device=model.device)
        stop = stop_ids(tokenizer, cfg)
        steps = max(p.max_new_tokens for p in prepared)
        cache = model.new_cache(len(rows), width + steps)
        out = [t.tolist() for t in generate(model, tokens, cfg, stop, cache=cache, pad=pad, max_new_tokens=steps,
                                            audio=[f for p in prepared for f in p.audio],
                                            alpha=[p.alpha for p in prepared], graphs=self.config.cuda_graphs)]
        answers = []
        for b, p in enumerate(prepared):
            answer, _ = finish([s[b] for s in out][: p.max_new_tokens], stop)
            answers.append(tokenizer.decode(answer).strip())
        return answers

    def complete(self, tokenizer: QwenTokenizer, ids: list[int], audio: list[torch.Tensor],
                 cfg: GenerationConfig) -> list[int]:
        """The ids generated after a raw prompt (the base model's task prompts), up to a stop id; no reuse."""
        self._check_weights()
        limit = self.model.config.max_position_embeddings
        if len(ids) >= limit:
            raise PromptError(f"the prompt is {len(ids)} tokens, longer than the model's window of {limit}")
        steps = min(cfg.max_new_tokens, limit - len(ids))
        stop = stop_ids(tokenizer, cfg)
        model = self.model
        cache = model.new_cache(1, len(ids) + steps)
        out = []
        for t in generate(model, torch.tensor([ids], device=model.device), cfg, stop, cache=cache, audio=audio,
                          alpha=[self.alpha(len(ids))], max_new_tokens=steps, graphs=self.config.cuda_graphs):
            if int(t[0]) in stop:
                break
            out.append(int(t[0]))
        return out


def stop_ids(tokenizer: QwenTokenizer, cfg: GenerationConfig) -> set[int]:
    """The ids that end an answer: <|im_end|>, <|im_start|>, <|endoftext|> and the options' eos."""
    return {tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eod_id, cfg.eos_token_id}


def audio_spans(tokenizer: QwenTokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) column of each `<audio>`..`</audio>` span in `ids`."""
    starts = [i for i, t in enumerate(ids) if t == tokenizer.audio_start_id]
    ends = [i for i, t in enumerate(ids) if t == tokenizer.audio_end_id]
    return list(zip(starts, ends))


def finish(tokens: Sequence[int], stop: set[int]) -> tuple[list[int], str]:
    """The answer's ids: up to the first stop id; when cut by max_new_tokens, the published code
    drops the last token as well (its decode treats the last position as the end), and so do we."""
    for i, t in enumerate(tokens):
        if t in stop:
            return list(tokens[:i]), "stop"
    return list(tokens[:-1]), "length"
