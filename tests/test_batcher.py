"""The encoder's batcher: requests that arrive while a batch runs are computed together, by group, and a
failure is its own request's."""

from __future__ import annotations

import threading

import pytest

from qwen_audio.engine.batcher import Batcher


class Gate:
    """A `run` that blocks on its first batch until released, recording every batch it is given."""

    def __init__(self):
        self.batches: list[tuple[object, list]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, group, items):
        self.batches.append((group, list(items)))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if "bad" in items:
            raise ValueError("bad item")
        return [(group, item * 10) for item in items]


def ask_from_threads(batcher, requests):
    """Each (group, items) from a thread of its own; results (or the error) by request index."""
    out: dict[int, object] = {}

    def ask(i, group, items):
        try:
            out[i] = batcher(group, items)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out[i] = e

    threads = [threading.Thread(target=ask, args=(i, g, its)) for i, (g, its) in enumerate(requests)]
    for t in threads:
        t.start()
    return threads, out


def test_requests_arriving_during_a_batch_are_computed_together_by_group():
    gate = Gate()
    batcher = Batcher(gate)
    first, out0 = ask_from_threads(batcher, [("a", [1])])
    assert gate.entered.wait(10)
    threads, out = ask_from_threads(batcher, [("a", [2, 3]), ("b", [4]), ("a", [5])])
    while len(batcher._pending) < 3:  # all three wait behind the first batch
        threading.Event().wait(0.01)
    gate.release.set()
    for t in [*first, *threads]:
        t.join(10)
    assert out0[0] == [("a", 10)]
    assert out == {0: [("a", 20), ("a", 30)], 1: [("b", 40)], 2: [("a", 50)]}
    groups = sorted((g, sorted(items)) for g, items in gate.batches[1:])
    assert groups == [("a", [2, 3, 5]), ("b", [4])]  # one batch per group, not one per request
    assert batcher.batches == 3 and batcher.largest == 3


def test_a_batch_is_capped_at_max_items_and_the_rest_run_next():
    gate = Gate()
    batcher = Batcher(gate, max_items=2)
    first, _ = ask_from_threads(batcher, [("a", [1])])
    assert gate.entered.wait(10)
    threads, out = ask_from_threads(batcher, [("a", [2]), ("a", [3]), ("a", [4])])
    while len(batcher._pending) < 3:
        threading.Event().wait(0.01)
    gate.release.set()
    for t in [*first, *threads]:
        t.join(10)
    assert sorted(out.values()) == [[("a", 20)], [("a", 30)], [("a", 40)]]
    assert [len(items) for _, items in gate.batches[1:]] == [2, 1]


def test_a_failing_request_fails_alone_and_the_batcher_goes_on():
    gate = Gate()
    batcher = Batcher(gate)
    first, _ = ask_from_threads(batcher, [("a", [1])])
    assert gate.entered.wait(10)
    threads, out = ask_from_threads(batcher, [("a", ["bad"]), ("a", [2])])
    while len(batcher._pending) < 2:
        threading.Event().wait(0.01)
    gate.release.set()
    for t in [*first, *threads]:
        t.join(10)
    assert isinstance(out[0], ValueError) and out[1] == [("a", 20)]
    assert batcher("a", [7]) == [("a", 70)]  # nothing left busy
    with pytest.raises(ValueError, match="bad item"):
        batcher("b", ["bad"])


def test_a_run_that_returns_too_few_results_is_an_error():
    batcher = Batcher(lambda group, items: items[:-1])
    with pytest.raises(RuntimeError, match="a batch of 2 items gave 1 results"):
        batcher("a", [1, 2])
