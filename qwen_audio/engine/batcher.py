"""Work that many threads ask for, done in batches: the encoder's clips across waiting requests.

One batch runs at a time. A thread that asks while one runs leaves its items and waits; when the batch ends,
one waiting thread runs everything that arrived meanwhile, grouped as the caller said (clips that may share
a batch: for Qwen-Audio those padded to the same length), and hands each thread its results. So requests
that arrive together are encoded together: on a GPU, where one clip leaves most of the chip idle. (On a CPU
the engine does not use it: each request encoding on its own thread was measured faster,
benchmarks/encoder_batch.py.)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Job(Generic[Item, Result]):
    group: Hashable
    items: Sequence[Item]
    results: list[Result] | None = None
    error: BaseException | None = None
    done: bool = False


class Batcher(Generic[Item, Result]):
    """`batcher(group, items)` -> results, one per item, computed by `run(group, items)` together with the
    items of every other thread waiting with the same group. `run` must return a result per item, in order,
    whatever else shares its batch: callers get exactly what a batch of their own would give only where that
    holds (see `Engine.encode`)."""

    def __init__(self, run: Callable[[Hashable, list[Item]], Sequence[Result]], max_items: int = 16):
        self._run, self.max_items = run, max_items
        self._pending: list[_Job] = []
        self._busy = False
        self._cond = threading.Condition()
        self.batches = 0  # batches run (for tests and benchmarks)
        self.largest = 0  # most items in one batch

    def __call__(self, group: Hashable, items: Sequence[Item]) -> list[Result]:
        job = _Job(group, list(items))
        with self._cond:
            self._pending.append(job)
            while not job.done and self._busy:
                self._cond.wait()
            if job.done:
                return self._result(job)
            self._busy = True
            batch, self._pending = self._take(job)
        try:
            self._compute(batch)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return self._result(job)

    def _take(self, job: _Job) -> tuple[list[_Job], list[_Job]]:
        """This thread's job and the waiting jobs of its group, up to `max_items` items (its own job always)."""
        batch, rest, n = [job], [], len(job.items)
        for other in self._pending:
            if other is job:
                continue
            if other.group == job.group and n + len(other.items) <= self.max_items:
                batch.append(other)
                n += len(other.items)
            else:
                rest.append(other)
        return batch, rest

    def _compute(self, batch: list[_Job]) -> None:
        items = [item for job in batch for item in job.items]
        try:
            results, error = list(self._run(batch[0].group, items)), None
            if len(results) != len(items):
                raise RuntimeError(f"a batch of {len(items)} items gave {len(results)} results")
        except Exception as e:
            if len(batch) > 1:  # one request's failure is its own: each job again, alone
                for job in batch:
                    self._compute([job])
                return
            results, error = [], e
        with self._cond:
            self.batches += 1
            self.largest = max(self.largest, len(items))
            at = 0
            for job in batch:
                job.results = results[at: at + len(job.items)] if error is None else None
                job.error, job.done = error, True
                at += len(job.items)

    @staticmethod
    def _result(job: _Job) -> Any:
        if job.error is not None:
            raise job.error
        return job.results
