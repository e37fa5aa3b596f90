"""Worker threads: each takes a request from the queue and writes its answer, `max_active` at once.

Requests wait in a bounded queue (full: the caller answers 429). A job runs on a worker thread of its
own from start to end: its audio is decoded and encoded there, beside the other answers, and its
tokens come from the engine's scheduler, which writes every running answer in the same forward pass
(a backend without one writes them side by side on these threads). Results go back to the asyncio
side through the job's queue, thread-safely. A job the client abandoned or that timed out is cancelled:
its stream is asked to end at the model's next step, which hands its caches back.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

# What a job sends back: ("started", stream) once its audio and prompt are ready, ("item", x) for each
# piece or segment, then ("done", stream); or ("error", exc) at any point.
Event = tuple[str, Any]


class QueueFull(Exception):
    """No room for another request: the caller should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int, stopping: bool = False):
        super().__init__("the server is shutting down" if stopping else f"the server is busy; retry after {retry_after} s")
        self.retry_after, self.stopping = retry_after, stopping


class Computed:
    """A job's result made whole when the job starts (sound events): no items, nothing to end early."""

    def __init__(self, value: Any):
        self.value = value

    def __iter__(self):
        return iter(())

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(eq=False)
class Job:
    """A unit of work: `start()` (run on a worker thread) opens a stream to iterate; events go to `events`."""

    start: Callable[[], Any]  # -> a ChatStream, TranscriptStream or Computed (iterable, with cancel() and close())
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    stream: Any = None
    admitted: float = 0.0

    def send(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def cancel(self) -> None:
        """The client has gone (or timed out): the answer ends at the model's next step (any thread)."""
        self.cancelled.set()
        if self.stream is not None:
            self.stream.cancel()


class Worker:
    """Runs jobs on `max_active` threads: `submit(job)` (raises QueueFull), `stop()` drains and ends them."""

    def __init__(self, max_active: int = 4, max_queue: int = 32):
        self.max_active = max_active
        self._waiting: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"qwen-audio-worker-{i}", daemon=True)
                         for i in range(max_active)]
        self._lock = threading.Lock()
        self._active = 0
        self._job_s = 2.0  # a running average of how long a job takes once admitted, for Retry-After

    def start(self) -> "Worker":
        for t in self._threads:
            t.start()
        return self

    @property
    def active(self) -> int:
        return self._active

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
        """Take no new requests, finish the ones admitted, then end the threads."""
        self._stopping.set()
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    # -- the worker threads -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                job = self._waiting.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if job.cancelled.is_set():
                continue
            with self._lock:
                self._active += 1
            try:
                self._write(job)
            finally:
                with self._lock:
                    self._active -= 1

    def _write(self, job: Job) -> None:
        """Start `job` (its audio is decoded and checked here: errors before any text), then send its items."""
        try:
            job.stream = job.start()
            items = iter(job.stream)
        except BaseException as e:  # noqa: BLE001 - every failure goes back to its request
            job.send("error", e)
            return
        job.send("started", job.stream)
        job.admitted = time.monotonic()
        if job.cancelled.is_set():  # cancelled while it started: the stream was not there to be told
            job.cancel()
        try:
            for item in items:
                job.send("item", item)
                if job.cancelled.is_set():
                    return
        except BaseException as e:  # noqa: BLE001
            job.send("error", e)
            return
        finally:
            job.stream.close()
        self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - job.admitted)
        job.send("done", job.stream)
