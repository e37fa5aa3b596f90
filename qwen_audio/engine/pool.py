"""Where keys and values live between answers: `PrefixPool`, and encoder outputs: `FeatureStore`.

Both are bounded in bytes, the least recently used dropped first. A prefix holds the keys and values
of a prompt (and its answer) so that a later prompt that starts the same way computes only what differs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..llm import KVCache

Span = tuple[int, int, tuple]  # (first, last) prompt column of a clip, and the key of its features


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
        self.make_room(capacity * column_bytes, keep=best)
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
        self.make_room(0, keep=None)

    def begin(self, prefix: Prefix, n: int, ids: list[int], spans: list[Span], alpha: float) -> None:
        """Record, as the answer starts, that only the first `n` columns are known (the rest will be written)."""
        prefix.ids, prefix.spans, prefix.alpha = list(ids[:n]), [sp for sp in spans if sp[1] < n], alpha

    def clear(self) -> None:
        """Forget every prefix that is not in use (those in use are dropped when handed back: see epochs)."""
        self.entries = [p for p in self.entries if p.busy]

    def _drop(self, prefix: Prefix) -> None:
        self.entries = [p for p in self.entries if p is not prefix]

    def make_room(self, need: int, keep: Prefix | None) -> None:
        """Drop the least recently used idle prefixes (not `keep`) until `need` more bytes fit the budget."""
        total = self.nbytes
        for p in sorted(self.entries, key=lambda p: p.tick):
            if total + need <= self.max_bytes:
                break
            if not p.busy and p is not keep:
                total -= p.cache.nbytes
                self._drop(p)

