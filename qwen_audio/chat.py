"""Conversations: the published `model.chat` API with exact caching, streaming and batching.

Every turn is computed as the published code computes it from scratch: the whole ChatML prompt,
all clips of the prompt encoded as one batch, NTK alpha from the prompt length. Caches only skip
work whose result would be the same: decoded clips, encoder features (keyed by clip and by the
longest clip they were batched with), and the key/values of the longest prompt prefix that the
previous turn already computed with the same audio features and the same NTK alpha.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .audio import Clip, load_clip
from .errors import PromptError
from .generate import GenerationConfig, Utf8Stream, generate
from .llm import KVCache, QwenAudioLM, ntk_alpha
from .tokenizer import DEFAULT_SYSTEM, QwenTokenizer, chat_prompt

History = list[tuple[str, str]]


class ClipStore:
    """Decoded clips and their encoder features, reused across turns (least recently used dropped)."""

    def __init__(self, max_clips: int = 32, max_features: int = 64):
        self.max_clips, self.max_features = max_clips, max_features
        self._clips: OrderedDict[tuple, tuple[Clip, torch.Tensor]] = OrderedDict()
        self._features: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(url: str) -> tuple:
        """A file is the same clip while its path, size and modification time are."""
        if os.path.isfile(url):
            st = os.stat(url)
            return (os.path.abspath(url), st.st_size, st.st_mtime_ns)
        return (url,)

    def clip(self, url: str) -> tuple[Clip, torch.Tensor]:
        """(clip, [n_mels, 3000] log-mel) for `url`, decoded once."""
        key = self.key(url)
        if key not in self._clips:
            clip = load_clip(url)
            self._clips[key] = (clip, clip.mel())
            while len(self._clips) > self.max_clips:
                self._clips.popitem(last=False)
        self._clips.move_to_end(key)
        return self._clips[key]

    def features(self, model: QwenAudioLM, urls: Sequence[str]) -> tuple[list[torch.Tensor], list[tuple]]:
        """Encoder features [span, dim] of the clips of one prompt, as one batch would give them, and their keys."""
        clips = [self.clip(u) for u in urls]
        if not clips:
            return [], []
        t_max = max(c.length.after_cnn for c, _ in clips)
        keys = [(self.key(u), t_max) for u in urls]
        missing = list(dict.fromkeys(k for k in keys if k not in self._features))
        if missing:
            todo = [clips[keys.index(k)] for k in missing]
            mels = torch.stack([mel for _, mel in todo])
            with torch.inference_mode():
                feats = model.transformer.audio.embed_audio(mels, [c.length for c, _ in todo], t_max)
            self._features.update(zip(missing, feats))
            while len(self._features) > self.max_features:
                self._features.popitem(last=False)
        for k in keys:
            self._features.move_to_end(k)
        return [self._features[k] for k in keys], keys


@dataclass
class _KVState:
    """What the KV cache holds: the keys/values of `ids` in columns [0, len(ids))."""

    cache: KVCache
    ids: list[int] = field(default_factory=list)
    spans: list[tuple[int, int, tuple]] = field(default_factory=list)  # (first, last column, feature key)
    alpha: float = 1.0


@dataclass(frozen=True)
class TurnStats:
    """What one turn cost."""

    prompt_tokens: int  # tokens in the prompt
    reused_tokens: int  # prompt tokens whose keys/values came from the cache
    new_tokens: int  # tokens generated
    stop_reason: str  # "stop" (a stop token) or "length" (max_new_tokens)


def audio_spans(tokenizer: QwenTokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) column of each `<audio>`..`</audio>` span in `ids`."""
    starts = [i for i, t in enumerate(ids) if t == tokenizer.audio_start_id]
    ends = [i for i, t in enumerate(ids) if t == tokenizer.audio_end_id]
    return list(zip(starts, ends))


def finish(tokens: Sequence[int], stop_ids: set[int]) -> tuple[list[int], str]:
    """The answer's ids: up to the first stop id; when cut by max_new_tokens, the published code
    drops the last token as well (its decode treats the last position as the end), and so do we."""
    for i, t in enumerate(tokens):
        if t in stop_ids:
            return list(tokens[:i]), "stop"
    return list(tokens[:-1]), "length"


class ChatStream:
    """Iterate for text pieces; afterwards `.response`, `.history` and `.stats` are set.

    Pieces never split a UTF-8 character, and their concatenation equals `model.chat`'s response:
    one token is held back (a reply cut by max_new_tokens loses its last token, as in `chat`) and
    surrounding whitespace is stripped.
    """

    def __init__(self, tokens: Iterator[int], tokenizer: QwenTokenizer, stop_ids: set[int],
                 query: str, history: History, on_done):
        self._tokens, self._tok, self._stop = tokens, tokenizer, stop_ids
        self._query, self._history, self._on_done = query, history, on_done
        self.response: str | None = None
        self.history: History | None = None
        self.stats: TurnStats | None = None

    def __iter__(self) -> Iterator[str]:
        utf8, pending, out = Utf8Stream(), None, []
        started, spaces = False, ""
        n, reason = 0, "length"

        def emit(piece: str) -> Iterator[str]:
            nonlocal started, spaces
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if not piece:
                return
            body = piece.rstrip()
            if body:
                yield spaces + body
                spaces = piece[len(body):]
            else:
                spaces += piece

        for t in self._tokens:
            n += 1
            if t in self._stop:
                reason = "stop"
                break
            if pending is not None:
                piece = utf8.push(self._tok.decode_bytes([pending]))
                out.append(piece)
                yield from emit(piece)
            pending = t
        if reason == "stop" and pending is not None:
            piece = utf8.push(self._tok.decode_bytes([pending]))
            out.append(piece)
            yield from emit(piece)
        self._tokens.close()  # hand the KV cache back now, not when the generator is collected
        tail = utf8.flush()
        out.append(tail)
        yield from emit(tail)
        self.response = "".join(out).strip()
        self.history = self._history + [(self._query, self.response)]
        self.stats = self._on_done(n, reason)


class ChatMixin:
    """`chat`, `chat_stream` and `chat_batch` for a QwenAudioLM (the published API, done right)."""

    generation_config: GenerationConfig
    reuse_kv: bool = True  # set False to recompute every prompt from scratch (the published way)

    def _chat_init(self) -> None:
        self.generation_config = GenerationConfig()
        self.clip_store = ClipStore()
        self._kv: _KVState | None = None
        self._kv_owner: object | None = None  # the answer that has self._kv checked out
        self._lock = threading.RLock()

    def _config(self, generation_config: GenerationConfig | None, overrides: dict) -> GenerationConfig:
        cfg = generation_config or self.generation_config
        overrides = {k: v for k, v in overrides.items() if k not in ("stream", "append_history")}
        cfg = cfg.updated(**overrides)
        if cfg.chat_format != "chatml":
            raise PromptError(f"chat needs a chat model (chat_format 'chatml'), this one is {cfg.chat_format!r}: "
                              "the base Qwen-Audio model takes task prompts (see qwen_audio.transcribe)")
        return cfg

    def _prompt(self, tokenizer, query, history, system, cfg):
        if not isinstance(query, str):
            raise PromptError(f"query must be a string (use tokenizer.from_list_format), got {type(query).__name__}")
        for turn in history:
            if not (isinstance(turn, (tuple, list)) and len(turn) == 2):
                raise PromptError(f"history entries must be (query, response) pairs, got {turn!r}")
        prompt = chat_prompt(tokenizer, query, history, lambda u: self.clip_store.clip(u)[0].length.span,
                             system=system, max_window_size=cfg.max_window_size)
        limit = self.config.max_position_embeddings
        if len(prompt.ids) > limit:
            raise PromptError(f"the prompt is {len(prompt.ids)} tokens, longer than the model's window of {limit}")
        feats, keys = self.clip_store.features(self, prompt.audio_urls)
        return prompt, feats, keys

    def _stop_ids(self, tokenizer: QwenTokenizer, cfg: GenerationConfig) -> set[int]:
        return {tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eod_id, cfg.eos_token_id}

    def _alpha(self, n: int) -> float:
        return ntk_alpha(n, self.config.seq_length) if self.config.use_dynamic_ntk else 1.0

    def _reusable(self, ids: list[int], spans: list[tuple], alpha: float) -> int:
        """How many leading prompt columns the KV cache already holds exactly."""
        kv = self._kv
        if kv is None or not self.reuse_kv or kv.alpha != alpha:
            return 0
        n = 0
        for a, b in zip(kv.ids, ids):
            if a != b:
                break
            n += 1
        old = {(s, e): k for s, e, k in kv.spans}
        for s, e, k in spans:
            if s < n and (old.get((s, e)) != k or e >= n):
                n = s  # a clip whose features differ (or are cut) is recomputed from its start
                break
        return min(n, len(ids) - 1)

    def _turn(self, tokenizer, query, history, system, cfg) -> tuple[Iterator[int], callable]:
        """Prepare one turn; returns (token iterator, done(n, reason) -> TurnStats).

        The prompt and its audio are made ready first, so a bad clip raises before any cache is
        touched. The model's KV cache is checked out by one answer at a time (another answer, in
        this thread or another, gets a private cache) and handed back when the answer ends, is
        abandoned, or fails: it then records exactly which tokens it holds.
        """
        with self._lock:
            prompt, feats, keys = self._prompt(tokenizer, query, history, system, cfg)
        ids = prompt.ids
        spans = [(s, e, k) for (s, e), k in zip(audio_spans(tokenizer, ids), keys)]
        alpha = self._alpha(len(ids))
        reused = 0

        def run() -> Iterator[int]:
            nonlocal reused
            token = object()
            with self._lock:
                owner = self._kv_owner is None
                if owner:
                    self._kv_owner = token
                    n = reused = self._reusable(ids, spans, alpha)
                    if self._kv is None:
                        self._kv = _KVState(self.new_cache(1, len(ids) + cfg.max_new_tokens))
                    kv = self._kv
                    kv.ids, kv.spans, kv.alpha = ids[:n], [sp for sp in spans if sp[1] < n], alpha
                else:
                    n, kv = 0, _KVState(self.new_cache(1, len(ids) + cfg.max_new_tokens))
            fed: list[int] = []
            try:
                steps = generate(self, torch.tensor([ids[n:]], device=self.device), cfg, self._stop_ids(tokenizer, cfg),
                                 cache=kv.cache, start=n, audio=[f for (s, _, _), f in zip(spans, feats) if s >= n],
                                 alpha=[alpha], seen=torch.tensor([ids], device=self.device))
                for t in steps:
                    fed.append(int(t[0]))
                    yield int(t[0])
            finally:
                if owner:
                    with self._lock:
                        # Once a token is out, the cache holds ids + fed[:-1] (the last token produced
                        # is never fed back), whether the answer ended, was abandoned, or a later step
                        # failed; a failed prefill leaves only the reused prefix, as recorded above.
                        if fed:
                            kv.ids, kv.spans = ids + fed[:-1], spans
                        self._kv_owner = None

        def done(n_new: int, reason: str) -> TurnStats:
            return TurnStats(len(ids), reused, n_new, reason)

        return run(), done

    def chat(self, tokenizer: QwenTokenizer, query: str, history: History | None = None,
             system: str = DEFAULT_SYSTEM, generation_config: GenerationConfig | None = None, **kwargs) -> tuple[str, History]:
        """Answer `query` given `history`; returns (response, history + [(query, response)]).

        The caller's history is not changed. Keyword arguments override the generation config for
        this call (`do_sample=False`, `max_new_tokens=...`, `top_p`, `temperature`, `seed`, ...).
        """
        stream = self.chat_stream(tokenizer, query, history, system, generation_config, **kwargs)
        for _ in stream:
            pass
        return stream.response, stream.history

    def chat_stream(self, tokenizer: QwenTokenizer, query: str, history: History | None = None,
                    system: str = DEFAULT_SYSTEM, generation_config: GenerationConfig | None = None, **kwargs) -> ChatStream:
        """Like `chat`, as text pieces while they are generated: `for piece in stream`, then `stream.history`."""
        history = copy.deepcopy(list(history or []))
        cfg = self._config(generation_config, kwargs)
        tokens, done = self._turn(tokenizer, query, history, system, cfg)
        return ChatStream(tokens, tokenizer, self._stop_ids(tokenizer, cfg), query, history, done)

    @torch.inference_mode()
    def chat_batch(self, tokenizer: QwenTokenizer, queries: Sequence[str], histories: Sequence[History | None] | None = None,
                   system: str = DEFAULT_SYSTEM, generation_config: GenerationConfig | None = None, **kwargs) -> list[tuple[str, History]]:
        """Answer several conversations at once. Rows are left-padded, with their own positions, masks and
        NTK alpha, so each gets what `chat` would give it alone (greedy: the same text)."""
        histories = list(histories) if histories is not None else [None] * len(queries)
        if len(histories) != len(queries):
            raise PromptError(f"{len(queries)} queries but {len(histories)} histories")
        if not queries:
            return []
        cfg = self._config(generation_config, kwargs)
        rows, feats = [], []
        with self._lock:
            for q, h in zip(queries, histories):
                prompt, f, _ = self._prompt(tokenizer, q, copy.deepcopy(list(h or [])), system, cfg)
                rows.append(prompt.ids)
                feats += f
        width = max(map(len, rows))
        pad_id = cfg.pad_token_id
        tokens = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=self.device)
        pad = torch.tensor([width - len(r) for r in rows], device=self.device)
        stop_ids = self._stop_ids(tokenizer, cfg)
        with self._lock:
            cache = self.new_cache(len(rows), width + cfg.max_new_tokens)
            steps = [t.tolist() for t in generate(self, tokens, cfg, stop_ids, cache=cache, audio=feats, pad=pad,
                                                   alpha=[self._alpha(len(r)) for r in rows])]
        out = []
        for b, (q, h) in enumerate(zip(queries, histories)):
            ids, _ = finish([s[b] for s in steps], stop_ids)
            response = tokenizer.decode(ids).strip()
            out.append((response, copy.deepcopy(list(h or [])) + [(q, response)]))
        return out
