"""Conversations on one model: what answers share and reuse, and the scheduler that writes them.

The model holds weights; the engine holds what answers need besides them, each bounded in bytes with
the least recently used dropped first:

* clips: what the model hears of each clip (decoded once) and its log-mel (`audio.ClipStore`);
* features: encoder outputs by (clip, longest clip of its prompt): all clips of a prompt are encoded
  as one padded batch in the published code, so a clip's features depend on that longest clip;
* prefixes: the key/values of earlier prompts and answers (`PrefixPool`), shared by every
  conversation: a later turn, or a new conversation that starts the same way (system prompt, same
  clip), computes only what differs.

Answers are prepared (clips decoded and encoded, the prompt built and checked) on the caller's thread,
then written by the engine's scheduler (`scheduler.py`), many per forward pass.

Every answer equals the published computation from scratch: a cached prefix is used only up to the
first token, clip feature or NTK alpha that differs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..audio import AudioLength, ClipStore, source_key
from ..backend import Pieces, StopAnswer, TurnStats
from ..errors import OptionError, PromptError
from ..generate import Utf8Stream
from ..llm import QwenAudioLM, ntk_alpha
from ..messages import Audio, Conversation
from ..options import GenerationConfig
from ..tokenizer import QwenTokenizer, chat_prompt
from .batcher import Batcher
from .pool import FeatureStore, Prefix, PrefixPool, Span
from .scheduler import Scheduler, Tokens
from .sequence import Prepared
from .sequence import Sequence as Answering


@dataclass(frozen=True)
class EngineConfig:
    """Memory budgets of what the engine keeps, and the size of a scheduler step."""

    kv_bytes: int = 2 << 30  # key/values of running answers and earlier prompts (0.5 MB per token for the 7B model in bfloat16)
    feature_bytes: int = 256 << 20  # encoder outputs (6 MB per 30 s clip for the 7B model in bfloat16)
    clip_bytes: int = 256 << 20  # decoded clips and log-mels (3 MB per 30 s clip)
    reuse: bool = True  # False: every prompt is computed from scratch (the published way)
    cuda_graphs: bool = True  # on a CUDA device, replay an answer's decode steps as a CUDA graph while it runs alone
    step_tokens: int = 256  # tokens per forward pass: every decoding answer's next one, then prompt chunks
    max_batch: int = 16  # answers written at once; more wait their turn
    grow_tokens: int = 128  # cache columns an answer takes past what it knows, at admission and each time it fills them
    # Clips of prompts prepared at once encoded in one pass (`Batcher`); None: on a GPU only. On a CPU each prompt's
    # clips on its own thread encoded 1.0-1.4x the clips/s of batching with 4-8 requests at once (benchmarks/encoder_batch.py).
    batch_clips: bool | None = None

    def __post_init__(self):
        for name, least in (("kv_bytes", 1), ("feature_bytes", 0), ("clip_bytes", 0), ("step_tokens", 1),
                            ("max_batch", 1), ("grow_tokens", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                kind = "a positive integer" if least else "an integer >= 0 (0 keeps none)"
                raise OptionError(f"EngineConfig.{name} must be {kind}, got {value!r}")
        if self.batch_clips not in (None, True, False):
            raise OptionError(f"EngineConfig.batch_clips must be True, False or None (on a GPU only), got {self.batch_clips!r}")
        if self.step_tokens <= self.max_batch:
            raise OptionError(f"EngineConfig.step_tokens ({self.step_tokens}) must exceed max_batch "
                              f"({self.max_batch}): a step carries every running answer's next token and some prompt")


class Engine:
    """Answers on one model: `answer`, `answer_batch`, `complete`. Thread-safe; answers run in parallel."""

    DROPS_LAST_AT_LENGTH = True  # v1's published decode drops the last token of an answer cut by max_new_tokens

    def __init__(self, model: QwenAudioLM, config: EngineConfig = EngineConfig()):
        self.model, self.config = model, config
        self.clips = ClipStore(config.clip_bytes)
        self.features = FeatureStore(config.feature_bytes)
        self.prefixes = PrefixPool(config.kv_bytes)
        self._lock = threading.Lock()  # guards the pool's bookkeeping; never held while the model runs
        self.scheduler = Scheduler(self)
        self.encoder = Batcher(self._encode_batch, config.max_batch)  # clips of prompts prepared at once
        self._weights: tuple | None = None
        self._epoch = 0
        self._column_bytes: int | None = None

    def __reduce__(self):  # copies and pickles of a model start with an empty engine
        return (Engine, (self.model, self.config))

    # -- preparing ----------------------------------------------------------------------------------

    def _check_weights(self) -> None:
        """Keys, values and features computed before `model.to(...)` are not this model's: forget them."""
        now = (self.model.dtype, self.model.device)
        if now != self._weights:
            with self._lock:
                self._weights, self._epoch, self._column_bytes = now, self._epoch + 1, None
                self.prefixes.clear()
            self.features.clear()

    def span(self, audio: Audio) -> int:
        """Prompt positions of a clip (decoding it, once)."""
        return self.clips.clip(audio.source, audio.name).length.span

    @torch.inference_mode()
    def encode(self, clips: Sequence[Audio]) -> tuple[list[torch.Tensor], list[tuple]]:
        """Features [span, dim] of the clips of one prompt, as one batch would give them, and their keys.

        Clips not in the store are encoded by `encode_batch`: on a GPU together with those of other prompts
        being prepared at the same time that are padded to the same length (`t_max`), which is all a clip's
        features depend on. Within rounding: a product's blocking, so its last bits, can depend on the rows it
        has (as they do when a later turn encodes only its new clips)."""
        if not clips:
            return [], []
        decoded = [self.clips.clip(a.source, a.name) for a in clips]
        t_max = max(c.length.after_cnn for c in decoded)
        keys = [(source_key(a.source), t_max) for a in clips]
        found = {k: self.features.get(k) for k in keys}
        missing = [i for i, k in enumerate(keys) if keys.index(k) == i and found[k] is None]
        if missing:
            items = [(keys[i], self.clips.mel(clips[i].source, clips[i].name), decoded[i].length) for i in missing]
            for i, f in zip(missing, self.encode_batch(t_max, items)):
                found[keys[i]] = f
                self.features.put(keys[i], f)
        return [found[k] for k in keys], keys

    def encode_batch(self, group, items: list[tuple[tuple, torch.Tensor, object]]) -> list[torch.Tensor]:
        """Features of clips (key, log-mel, length) that share `group`: through `self.encoder`, with the clips of
        other prompts prepared meanwhile, where `EngineConfig.batch_clips` says so; else on this thread."""
        batch = self.config.batch_clips
        if batch or (batch is None and self.model.device.type == "cuda"):
            return self.encoder(group, items)
        return self._encode_batch(group, items)

    @torch.inference_mode()
    def _encode_batch(self, group, items: list[tuple[tuple, torch.Tensor, object]]) -> list[torch.Tensor]:
        """One encoder pass over the clips of any prompts that share `group`: (key, log-mel, length) each; a clip
        that two prompts brought at once is encoded once."""
        clips = {key: (mel, length) for key, mel, length in items}
        feats = self._encode_clips(group, [mel for mel, _ in clips.values()], [n for _, n in clips.values()])
        by_key = dict(zip(clips, feats))
        return [by_key[key] for key, _, _ in items]

    def _encode_clips(self, t_max: int, mels: list[torch.Tensor], lengths: list[AudioLength]) -> list[torch.Tensor]:
        """Log-mels [n_mels, 3000] of clips padded to `t_max` -> their features [span, dim]."""
        return self.model.embed_audio(torch.stack(mels), lengths, t_max)

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

    def stop_ids(self, tokenizer: QwenTokenizer, cfg: GenerationConfig) -> set[int]:
        """The ids that end an answer."""
        return stop_ids(tokenizer, cfg)

    def column_bytes(self) -> int:
        """Bytes of keys and values per cached token (of whichever decoder: a one-column cache's size)."""
        if self._column_bytes is None:
            cache = self.model.new_cache(1, 1)  # on a GPU, one block of columns
            self._column_bytes = cache.nbytes // cache.capacity
        return self._column_bytes

    def alpha(self, n_tokens: int) -> float:
        c = self.model.config
        return ntk_alpha(n_tokens, c.seq_length) if c.use_dynamic_ntk else 1.0

    # -- answering ----------------------------------------------------------------------------------

    def answer(self, tokenizer: QwenTokenizer, conversation: Conversation, cfg: GenerationConfig,
               cancel: threading.Event | None = None) -> Pieces:
        """Prepare now (errors raise here), then submit the answer and return the generator of its text.
        `cancel` (set from any thread) ends it at the scheduler's next step."""
        prepared = self.prepare(tokenizer, conversation, cfg)
        return self.write(tokenizer, self.tokens(prepared, cfg, self.stop_ids(tokenizer, cfg), cancel=cancel))

    def write(self, tokenizer, tokens: Tokens, lstrip: bool = True) -> Pieces:
        """Text pieces of the answer `tokens` (from `self.tokens`), never splitting a UTF-8 character, without
        trailing whitespace, and without leading whitespace with `lstrip`. With `DROPS_LAST_AT_LENGTH` one
        token is held back (an answer cut by max_new_tokens loses its last token, as the published v1 code
        does). The one place where an answer's text is written: StopAnswer thrown in ends it, and
        the answer's cache goes back to the pool however the generator is left."""
        stop, p = tokens.seq.stop, tokens.seq.prompt
        utf8, pending, n, reason = Utf8Stream(), None, 0, "length"
        started, spaces = False, ""

        def emit(piece: str) -> Iterator[str]:
            nonlocal started, spaces
            if not started:
                piece = piece.lstrip() if lstrip else piece
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
                    if not self.DROPS_LAST_AT_LENGTH:  # nothing to hold back: written as it comes
                        yield from emit(utf8.push(tokenizer.decode_bytes([t])))
                        continue
                    if pending is not None:
                        yield from emit(utf8.push(tokenizer.decode_bytes([pending])))
                    pending = t
                if pending is not None and (reason == "stop" or not self.DROPS_LAST_AT_LENGTH):
                    yield from emit(utf8.push(tokenizer.decode_bytes([pending])))
            finally:
                tokens.close()  # hand the prefix back now, not when the generator is collected
            yield from emit(utf8.flush())
        except StopAnswer:  # a stop string was written: the answer ends here
            reason = "stop"
        return TurnStats(len(p.ids), p.reused, n, reason)

    def tokens(self, p: Prepared, cfg: GenerationConfig, stop: set[int], keep: bool = True,
               cancel: threading.Event | None = None) -> Tokens:
        """Submit the answer to `p` to the scheduler now; its ids (the stop id last, if one ends it) as written."""
        seq = Answering(p, cfg, frozenset(stop), keep, cancel=threading.Event() if cancel is None else cancel)
        self.scheduler.submit(seq)
        return Tokens(seq, self.scheduler)

    # -- the prefix pool, for the scheduler -----------------------------------------------------------------

    def checkout(self, p: Prepared, ids: list[int], columns: int, keep: bool) -> tuple[Prefix, int]:
        """A cache of at least `columns` columns for an answer to `p` that knows `ids` (its prompt, and the
        answer so far when it is read again after a preemption), and how many leading columns already hold
        the keys of `ids`."""
        with self._lock:
            prefix, n = self.prefixes.checkout(ids, p.spans, p.alpha, columns, self._epoch,
                                               lambda cap: self.model.new_cache(1, cap), self.column_bytes(),
                                               self.config.reuse and keep)
            self.prefixes.begin(prefix, n, ids, p.spans, p.alpha)
        return prefix, n

    def grow(self, prefix: Prefix, columns: int) -> None:
        """Make `prefix`'s cache hold `columns` columns, dropping idle prefixes first to stay in the budget."""
        with self._lock:
            self.prefixes.make_room(max(0, columns - prefix.cache.capacity) * self.column_bytes(), keep=None)
        prefix.cache.grow(columns)

    def checkin(self, prefix: Prefix, ids: list[int], spans: list[Span], keep: bool) -> None:
        """Hand `prefix` back holding the keys of `ids` (kept for later prompts if `keep` and still valid)."""
        with self._lock:
            keep = keep and self.config.reuse and prefix.epoch == self._epoch
            self.prefixes.checkin(prefix, ids, [sp for sp in spans if sp[1] < len(ids)], keep)

    # -- several at once -----------------------------------------------------------------------------------

    def answer_batch(self, tokenizer: QwenTokenizer, conversations: Sequence[Conversation],
                     cfg: GenerationConfig) -> list[str]:
        """Several conversations at once, all prepared (and checked) before the first is submitted; the
        scheduler writes them side by side, each as it would be alone."""
        prepared = [self.prepare(tokenizer, c, cfg) for c in conversations]
        stop = self.stop_ids(tokenizer, cfg)
        streams = [self.tokens(p, cfg, stop) for p in prepared]
        try:
            answers = []
            for s in streams:
                answer, _ = finish(list(s), stop, self.DROPS_LAST_AT_LENGTH)
                answers.append(tokenizer.decode(answer).strip())
            return answers
        finally:
            for s in streams:
                s.close()

    def complete(self, tokenizer: QwenTokenizer, ids: list[int], audio: list[torch.Tensor],
                 cfg: GenerationConfig) -> list[int]:
        """The ids generated after a raw prompt (the base model's task prompts), up to a stop id; no reuse."""
        self._check_weights()
        limit = self.model.config.max_position_embeddings
        if len(ids) >= limit:
            raise PromptError(f"the prompt is {len(ids)} tokens, longer than the model's window of {limit}")
        spans = [(s, e, ("complete", i)) for i, (s, e) in enumerate(audio_spans(tokenizer, ids))]
        p = Prepared(ids, audio, spans, self.alpha(len(ids)), min(cfg.max_new_tokens, limit - len(ids)))
        stop = stop_ids(tokenizer, cfg)
        out = []
        for t in self.tokens(p, cfg, stop, keep=False):
            if t in stop:
                break
            out.append(t)
        return out


def stop_ids(tokenizer: QwenTokenizer, cfg: GenerationConfig) -> set[int]:
    """The ids that end an answer: <|im_end|>, <|im_start|>, <|endoftext|> and the options' eos."""
    return {tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eod_id, cfg.eos_token_id}


def audio_spans(tokenizer: QwenTokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) column of each `<audio>`..`</audio>` span in `ids`."""
    starts = [i for i, t in enumerate(ids) if t == tokenizer.audio_start_id]
    ends = [i for i, t in enumerate(ids) if t == tokenizer.audio_end_id]
    return list(zip(starts, ends))


def finish(tokens: Sequence[int], stop: set[int], drop_last: bool = True) -> tuple[list[int], str]:
    """The answer's ids: up to the first stop id; when cut by max_new_tokens, the published v1 code
    drops the last token as well (its decode treats the last position as the end), and so do we."""
    for i, t in enumerate(tokens):
        if t in stop:
            return list(tokens[:i]), "stop"
    return list(tokens[:-1] if drop_last else tokens), "length"
