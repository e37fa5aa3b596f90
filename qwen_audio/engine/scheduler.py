"""The scheduler: every answer of an engine written together, many sequences per forward pass.

Each step is one ragged forward pass (`QwenAudioLM.step`) over the next token of every decoding
sequence plus chunks of the prompts still being read, at most `step_tokens` tokens in all; sequences
join and leave between steps (continuous batching, chunked prefill). A decode step reads every weight
once whatever the rows, so rows are nearly free on a CPU and a GPU alike; a bounded prompt chunk keeps
a step short, so a long prompt never holds another answer's next token for long.

Admission is by memory, from the prefix pool's budget (`kv_bytes`): a sequence joins with cache columns
for its prompt and `grow_tokens` more, when that fits beside the running ones (or when nothing else runs),
and its cache grows by `grow_tokens` columns each time it fills them, so an answer holds what it writes,
not what `max_new_tokens` would allow. When a cache cannot grow within the budget, the answers that joined
last are preempted: each hands its cache back to the pool (as an idle prefix, dropped first if room is
needed) and waits at the head of the queue; when it joins again it reads its prompt and its answer so far
once more (from the pool's copy where that survived) and goes on from its last token, so nothing runs out
of memory and no answer is lost. Audio work (decoding, the encoder) is done by the caller's thread before a
sequence is submitted, never inside a step. Cancellation (`Sequence.cancel`, `Tokens.close`) takes effect
at the next step boundary.

No thread of its own: a reader waiting for its answer's next token runs the next step itself, for every
sequence, unless another reader is running one (then it waits for that step to end). One user's answer
is computed on the user's thread, where its audio was encoded: a second thread doing torch work makes
OpenMP throttle every team's spinning on a small machine (measured: lite's 135M LLM decoded at 20 tokens/s
on a scheduler thread after the caller had run any parallel op, 37 on the caller's). Many readers take
turns, and an idle engine costs nothing.
"""

from __future__ import annotations

import atexit
import itertools
import queue
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING

import torch

from .. import cuda
from ..errors import NonFiniteError
from ..generate import check_finite, make_generator, next_token
from .sequence import END, Sequence

if TYPE_CHECKING:
    from .engine import Engine


class Tokens:
    """The ids of one answer as the scheduler writes them (the stop id last, if one ends it). Reading it
    runs the scheduler's steps when no other reader is running one. `close()` ends the answer at the next
    step and returns once its prefix is handed back."""

    def __init__(self, seq: Sequence, scheduler: "Scheduler"):
        self.seq, self._scheduler, self._done = seq, scheduler, False

    def __iter__(self) -> "Tokens":
        return self

    def __next__(self) -> int:
        if self._done:
            raise StopIteration
        while True:
            try:
                item = self.seq.out.get_nowait()
                break
            except queue.Empty:
                self._scheduler.drive(self.seq)
        if item is END or isinstance(item, BaseException):
            self._done = True
            if item is END:
                raise StopIteration
            raise item
        return item

    def close(self) -> None:
        self._done = True
        self.seq.closed.set()
        # Closed from inside a step (a finalizer run by the garbage collector on the thread running it):
        # the next step retires it; waiting here would wait for this very thread.
        while not self.seq.ended.is_set() and not self._scheduler.stepping_here():
            self._scheduler.drive(self.seq, until_ended=True)  # unread ids may wait in `out`: step on


class Scheduler:
    """`submit(seq)` from any thread; the sequence's tokens arrive on `seq.out` as readers `drive` steps."""

    EXIT_WAIT_S = 30.0  # at interpreter exit, how long to wait for the step under way

    def __init__(self, engine: "Engine"):
        self.engine = engine
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._lock = threading.Lock()  # guards `_waiting`
        self._stepping = threading.Lock()  # held by the reader running a step
        self._stepped = threading.Condition()  # notified when a step ends (and `_stepping` is free)
        self._leader: int | None = None  # the thread running a step
        self.steps = 0  # forward passes run (for benchmarks and tests)
        self.preemptions = 0  # answers sent back to wait so that another's cache could grow
        self.peak_running = 0  # most answers running at once

    def submit(self, seq: Sequence) -> None:
        with self._lock:
            self._waiting.append(seq)
        _LIVE.add(self)

    def drive(self, seq: Sequence, until_ended: bool = False) -> None:
        """Run one step for every sequence, or wait for the step another reader is running; return at once
        if `seq` has ended meanwhile, or (unless `until_ended`) has output."""
        if self.stepping_here():
            return  # called from inside a step (a finalizer): the step under way goes on
        with self._stepped:
            if seq.ended.is_set() or (not until_ended and not seq.out.empty()):
                return
            if not self._stepping.acquire(blocking=False):
                self._stepped.wait()
                return
        try:
            self._leader = threading.get_ident()
            self._turn()
        finally:
            with self._stepped:
                self._leader = None
                self._stepping.release()
                self._stepped.notify_all()

    def stepping_here(self) -> bool:
        """Whether the calling thread is the one running a step."""
        return self._leader == threading.get_ident()

    def shutdown(self) -> None:
        """End every answer now (at the end of the step under way, if any), handing its prefix back."""
        with self._lock:
            for seq in [*self._waiting, *self._running]:
                seq.closed.set()
        if self._stepping.acquire(timeout=self.EXIT_WAIT_S):
            try:
                self._drop_cancelled()
            finally:
                self._stepping.release()

    def alive(self) -> bool:
        """Whether any answer is running or waiting."""
        with self._lock:
            return bool(self._waiting or self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- a step (under `_stepping`) ---------------------------------------------------------------------------

    def _turn(self) -> None:
        with torch.inference_mode():
            try:
                self._drop_cancelled()
                self._admit()
                if self._running:
                    self._step()
            except BaseException as e:  # noqa: BLE001 - a bug, or Ctrl-C in the reader: every answer under way ends
                for seq in list(self._running):  # with it (each reader raises it), its prefix handed back
                    self._retire(seq, e)

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self._running if s.cancelled()]:
            self._retire(seq)
        with self._lock:
            gone = [s for s in self._waiting if s.cancelled()]
            for seq in gone:
                self._waiting.remove(seq)
        for seq in gone:
            self._end(seq, END)

    def _admit(self) -> None:
        """Move waiting sequences in, in order, while their first columns fit the budget (one always may, alone)."""
        engine = self.engine
        while len(self._running) < engine.config.max_batch:
            with self._lock:
                if not self._waiting:
                    return
                seq = self._waiting[0]
                need = seq.columns(engine.config.grow_tokens) * engine.column_bytes()
                if self._running and self._reserved() + need > engine.config.kv_bytes:
                    return
                self._waiting.popleft()
            try:
                self._start(seq)
            except BaseException as e:  # noqa: BLE001 - goes back to its caller
                self._retire(seq, e)
                continue
            self._running.append(seq)
            self.peak_running = max(self.peak_running, len(self._running))

    def _reserved(self) -> int:
        return sum(s.prefix.cache.nbytes for s in self._running)

    def _start(self, seq: Sequence) -> None:
        """Check a prefix out of the pool and embed the part of what the answer knows that it does not hold:
        the prompt (with its clips) and, for an answer read again after a preemption, its tokens so far."""
        engine, model, p = self.engine, self.engine.model, seq.prompt
        ids = seq.known
        seq.prefix, n = engine.checkout(p, ids, seq.columns(engine.config.grow_tokens), seq.keep)
        seq.fed = n
        audio = [f for (s, _, _), f in zip(p.spans, p.audio) if s >= n]
        device = model.device
        parts = [model.embed(torch.tensor([p.ids[n:]], device=device), audio)[0]] if n < len(p.ids) else []
        if seq.tokens:  # words, as in decode steps (an <audio> the model wrote takes no clip)
            parts.append(model.embed(torch.tensor([seq.tokens[max(0, n - len(p.ids)):]], device=device))[0])
        seq.pending = torch.cat(parts) if len(parts) > 1 else parts[0]
        if seq.generator is None:  # its first start (a preempted answer keeps its penalty's ids and its sampler)
            p.reused = n
            seq.seen = torch.tensor([p.ids if p.penalize_prompt else []], dtype=torch.long, device=device)
            seq.generator = make_generator(seq.cfg.seed, device)

    def _make_room(self) -> None:
        """Give each decoding answer a cache column for its next token, oldest first: a full cache grows by
        `grow_tokens` columns, and where the budget cannot take that, the answers that joined last are preempted."""
        engine = self.engine
        for seq in list(self._running):
            if seq not in self._running or not seq.decoding or seq.fed < seq.prefix.cache.capacity:
                continue
            columns = seq.columns(engine.config.grow_tokens)
            extra = (columns - seq.prefix.cache.capacity) * engine.column_bytes()
            while len(self._running) > 1 and self._reserved() + extra > engine.config.kv_bytes:
                victim = self._running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            if seq in self._running:
                engine.grow(seq.prefix, columns)

    def _preempt(self, seq: Sequence) -> None:
        """Hand `seq`'s cache back to the pool holding what was fed, and put it first in the queue."""
        self._running.remove(seq)
        self.engine.checkin(seq.prefix, seq.known[: seq.fed], seq.prompt.spans, seq.keep)
        seq.prefix, seq.pending = None, None
        seq.preemptions += 1
        self.preemptions += 1
        with self._lock:
            self._waiting.appendleft(seq)

    def _step(self) -> None:
        """One forward pass: every decoding sequence's next token, then prompt chunks within the budget."""
        model = self.engine.model
        self._make_room()
        decoding = [s for s in self._running if s.decoding]
        if len(decoding) == len(self._running) == 1 and self._graphed(decoding[0]):
            return
        plan = [(s, 1) for s in decoding]  # (sequence, its tokens in this step)
        budget = self.engine.config.step_tokens - len(decoding)
        # Prompts by what is left of them, shortest first: a short question is read in one step even while
        # a long prompt is being read (which goes on with what the budget leaves).
        for s in sorted((s for s in self._running if not s.decoding), key=lambda s: len(s.pending)):
            if budget <= 0:
                break
            plan.append((s, min(len(s.pending), budget)))
            budget -= plan[-1][1]
        parts = [s.pending[:n] for s, n in plan[len(decoding):]]
        if decoding:
            parts.insert(0, model.embed(torch.tensor([[s.tokens[-1] for s in decoding]], device=model.device))[0])
        segments = [model.segment(s.prefix.cache, s.fed, n, s.prompt.alpha) for s, n in plan]
        # Logits are wanted at each decoding row and at the last token of each prompt read to its end.
        wanted = [(s, end - 1) for (s, n), end in zip(plan, itertools.accumulate(n for _, n in plan))
                  if s.decoding or n == len(s.pending)]
        try:
            logits = model.step(torch.cat(parts) if len(parts) > 1 else parts[0], segments, [r for _, r in wanted])
        except BaseException as e:  # noqa: BLE001 - every sequence of the step gets the error
            for s, _ in plan:
                self._retire(s, e)
            return
        self.steps += 1
        for s, n in plan:
            s.fed += n
            if not s.decoding:
                s.pending = s.pending[n:] if n < len(s.pending) else None
        for i, (s, _) in enumerate(wanted):
            self._next(s, logits[i:i + 1])

    def _graphed(self, seq: Sequence) -> bool:
        """One answer alone, decoding on a GPU: replay its decode step as a CUDA graph (one launch instead of
        ~15 a layer, which at batch 1 is most of a step's time); False where that does not apply."""
        model, config = self.engine.model, self.engine.config
        left = seq.prompt.max_new_tokens - len(seq.tokens)
        if model.device.type != "cuda" or not config.cuda_graphs or left < cuda.MIN_STEPS:
            return False
        step = cuda.graphed_step(model, seq.prefix.cache, seq.fed, batch=1, pad=None, alpha=[seq.prompt.alpha])
        try:
            logits = step(torch.tensor([seq.tokens[-1]], device=model.device), seq.fed)
        except BaseException as e:  # noqa: BLE001
            self._retire(seq, e)
            return True
        self.steps += 1
        seq.fed += 1
        self._next(seq, logits)
        return True

    def _next(self, seq: Sequence, logits: torch.Tensor) -> None:
        """Choose `seq`'s next token from its logits [1, V]; hand it over; retire the sequence if it ends."""
        try:
            check_finite(self.engine.model, logits, len(seq.tokens))
        except NonFiniteError as e:
            self._retire(seq, e)
            return
        token = int(next_token(logits, seq.seen, seq.cfg, seq.generator)[0])
        seq.tokens.append(token)
        seq.seen = torch.cat([seq.seen, torch.tensor([[token]], device=seq.seen.device)], dim=1)
        seq.out.put(token)
        if seq.finished():
            self._retire(seq)

    def _retire(self, seq: Sequence, error: BaseException | None = None) -> None:
        """Take `seq` out, hand its prefix back holding exactly what was fed, and end its output."""
        if seq in self._running:
            self._running.remove(seq)
        if seq.prefix is not None:
            record = seq.known[: seq.fed]
            self.engine.checkin(seq.prefix, record, seq.prompt.spans, seq.keep and error is None)
            seq.prefix = None
        self._end(seq, END if error is None else error)

    @staticmethod
    def _end(seq: Sequence, last) -> None:
        seq.pending = None
        seq.out.put(last)
        seq.ended.set()


_LIVE: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()  # schedulers that have had answers


@atexit.register
def _shutdown_all() -> None:
    """At exit, end every answer after the step under way: a daemon thread still inside a kernel when the
    interpreter goes down can abort the process ("terminate called without an active exception")."""
    for scheduler in list(_LIVE):
        scheduler.shutdown()
