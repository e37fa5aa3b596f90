"""One request in the engine: its prompt made ready (`Prepared`) and the answer being written (`Sequence`)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import torch

from ..options import GenerationConfig
from .pool import Prefix, Span


@dataclass
class Prepared:
    """A prompt made ready: every clip decoded and encoded, every limit checked."""

    ids: list[int]
    audio: list[torch.Tensor]  # [span, dim] features of each clip, in prompt order
    spans: list[Span]
    alpha: float
    max_new_tokens: int  # the options' cap, lowered to what the model's window leaves
    penalize_prompt: bool = True  # the repetition penalty looks at the prompt too (transformers'), or only the answer
    reused: int = field(default=0)  # prompt tokens taken from a prefix (known once the answer starts)


END = object()  # the last item of a sequence's `out` once it has left the scheduler


@dataclass(eq=False)
class Sequence:
    """An answer being written by the scheduler. The caller's thread reads `out` (token ids, then END,
    or an exception). `cancel` (the caller's, set from any thread: it may be shared with the stream the
    user holds) and `closed` (the reader's own) ask the scheduler to end it at its next step boundary;
    `ended` is set once it has left the scheduler and its prefix is handed back."""

    prompt: Prepared
    cfg: GenerationConfig
    stop: frozenset[int]  # ids that end the answer (the stop id is the answer's last token)
    keep: bool = True  # hand its keys and values to the prefix pool for later prompts
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancel: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    # The scheduler's own state (changed only by the reader running a step):
    prefix: Prefix | None = None  # the cache it writes into, checked out of the pool
    fed: int = 0  # cache columns holding keys and values (prompt columns, then one per fed token)
    pending: torch.Tensor | None = None  # [n, dim] embeddings of the prompt columns not yet fed
    tokens: list[int] = field(default_factory=list)  # the answer's ids so far
    seen: torch.Tensor | None = None  # [1, L] ids the repetition penalty looks at
    generator: torch.Generator | None = None
    preemptions: int = 0  # times its cache was handed back for others' to grow (it was read again after)

    @property
    def capacity(self) -> int:
        """Cache columns the whole answer may need."""
        return len(self.prompt.ids) + self.prompt.max_new_tokens

    @property
    def known(self) -> list[int]:
        """The ids whose keys come before the next token: the prompt, then the answer so far."""
        return self.prompt.ids + self.tokens

    def columns(self, grow: int) -> int:
        """Cache columns to hold now: what is known and `grow` more, within the whole answer's."""
        return min(self.capacity, len(self.known) + grow)

    def cancelled(self) -> bool:
        return self.closed.is_set() or self.cancel.is_set()

    @property
    def decoding(self) -> bool:
        return self.pending is None

    def finished(self) -> bool:
        """Whether its last token ends it (a stop id, or the cap)."""
        return bool(self.tokens) and (self.tokens[-1] in self.stop or len(self.tokens) >= self.prompt.max_new_tokens)
