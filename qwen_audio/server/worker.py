"""One thread owns the model and writes every answer, a step at a time, in turns.

Requests wait in a bounded queue (full: the caller answers 429). Up to `max_active` answers are
written at once: the worker advances each by one step (a token, a transcription window) in turn,
so a short answer never waits for a long one to finish before its first token. Results go back to
the asyncio side through the job's queue, thread-safely. A job the client abandoned is closed at
its next turn, which hands its caches back.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

# What a job sends back: ("started", stream) once its audio and prompt are ready, ("item", x) for each
# piece or segment, then ("done", stream); or ("error", exc) at any point.
Event = tuple[str, Any]


class QueueFull(Exception):
    """No room for another request: the caller should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int, stopping: bool = False):
        super().__init__("the server is shutting down" if stopping else f"the server is busy; retry after {retry_after} s")
        self.retry_after, self.stopping = retry_after, stopping


@dataclass(eq=False)
class Job:
    """A unit of work: `start()` (run on the worker) opens a stream to iterate; events go to `events`."""

    start: Callable[[], Any]  # -> a ChatStream or TranscriptStream (iterable, with close())
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    stream: Any = None
    admitted: float = 0.0
    _items: Iterator | None = None

    def send(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def cancel(self) -> None:
        """The client has gone (or timed out): the worker closes the stream at its next turn."""
        self.cancelled.set()


class Worker:
    """Runs jobs on one thread: `submit(job)` (raises QueueFull), `stop()` drains and ends the thread."""

    def __init__(self, max_active: int = 4, max_queue: int = 32):
        self.max_active = max_active
        self._waiting: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._active: list[Job] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qwen-audio-worker", daemon=True)
        self._job_s = 2.0  # a running average of how long a job takes once admitted, for Retry-After

    def start(self) -> "Worker":
        self._thread.start()
        return self

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return self._waiting.qsize()

    def submit(self, job: Job) -> None:
        if self._stopping.is_set():
            raise QueueFull(5, stopping=True)
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            raise QueueFull(self.retry_after()) from None

    def retry_after(self) -> int:
        """Seconds until the queue has likely room again: the waiting jobs' share of the active places,
        times how long a job has taken lately; at least 1."""
        return max(1, math.ceil(self._job_s * (self.waiting + 1) / max(1, self.max_active)))

    def stop(self, timeout: float = 60.0) -> None:
        """Take no new requests, finish the ones admitted, then end the thread."""
        self._stopping.set()
        self._thread.join(timeout)

    # -- the worker thread ------------------------------------------------------------------------------

    def _admit(self, block: bool) -> None:
        while len(self._active) < self.max_active:
            try:
                job = self._waiting.get(block=block, timeout=0.1 if block else None)
            except queue.Empty:
                return
            block = False
            if job.cancelled.is_set():
                continue
            try:
                job.stream = job.start()  # audio is decoded and checked here: errors before any text
                job._items = iter(job.stream)
            except BaseException as e:  # noqa: BLE001 - every failure goes back to its request
                job.send("error", e)
                continue
            job.send("started", job.stream)
            job.admitted = time.monotonic()
            self._active.append(job)

    def _step(self, job: Job) -> bool:
        """Advance `job` by one item; False when it has ended."""
        if job.cancelled.is_set():
            job.stream.close()
            return False
        try:
            item = next(job._items)
        except StopIteration:
            self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - job.admitted)
            job.send("done", job.stream)
            return False
        except BaseException as e:  # noqa: BLE001
            job.stream.close()
            job.send("error", e)
            return False
        job.send("item", item)
        return True

    def _run(self) -> None:
        while True:
            self._admit(block=not self._active)
            if not self._active:
                if self._stopping.is_set() and self._waiting.empty():
                    return
                continue
            self._active = [job for job in self._active if self._step(job)]
