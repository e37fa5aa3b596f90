"""`cpu.free_cores`: how many of this process's cores are idle, from /proc/stat's per-CPU counters."""

from __future__ import annotations

import os

import pytest

from qwen_audio import cpu


def _fake_ticks(monkeypatch, idle_share: float, cpus: set[int]):
    """Make /proc/stat's readings show `idle_share` of all the cores' time idle between two reads."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus, raising=False)
    readings = iter([(1000, 4000), (1000 + int(1000 * idle_share * len(cpus)), 4000 + 1000 * len(cpus))])
    monkeypatch.setattr(cpu, "_idle_ticks", lambda c: next(readings))


@pytest.mark.parametrize("idle_share, want", [(1.0, 4), (0.5, 2), (0.3, 1), (0.0, 1), (0.9, 4)])
def test_free_cores_counts_the_idle_share(monkeypatch, idle_share, want):
    _fake_ticks(monkeypatch, idle_share, {0, 1, 2, 3})
    assert cpu.free_cores(sample_s=0) == want


def test_free_cores_without_proc_stat_counts_every_core(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def missing(_):
        raise OSError("no /proc/stat")

    monkeypatch.setattr(cpu, "_idle_ticks", missing)
    assert cpu.free_cores(sample_s=0) == 2


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux only: reads /proc/stat")
def test_free_cores_reads_this_machine():
    n = cpu.free_cores(sample_s=0.05)
    assert 1 <= n <= len(os.sched_getaffinity(0))
    idle, total = cpu._idle_ticks(set(os.sched_getaffinity(0)))
    assert 0 <= idle <= total and total > 0


def _fake_window(monkeypatch, cpus: set[int], busy_ticks: int, own_s: float, per_core_ticks: int = 100):
    """Two readings `per_core_ticks` apart on each core, with `busy_ticks` of all the cores' ticks busy, of which
    this process used `own_s` seconds."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus, raising=False)
    total = per_core_ticks * len(cpus)
    readings = iter([(1000, 4000), (1000 + total - busy_ticks, 4000 + total)])
    monkeypatch.setattr(cpu, "_idle_ticks", lambda c: next(readings))
    times = iter([os.times_result((0.0, 0.0, 0.0, 0.0, 0.0)), os.times_result((own_s, 0.0, 0.0, 0.0, 0.0))])
    monkeypatch.setattr(os, "times", lambda: next(times))
    monkeypatch.setattr(cpu, "_TICKS_PER_S", 100)


@pytest.mark.parametrize("busy_ticks, own_s, want", [
    (0, 0.0, 4),      # idle machine
    (400, 4.0, 4),    # all busy, all of it this process's own threads: they are what is being sized
    (400, 0.0, 1),    # all busy with other work
    (200, 0.0, 2),    # two cores' worth of other work
    (300, 1.0, 2),    # three busy, one of them this process
])
def test_cores_free_since_counts_only_other_work(monkeypatch, busy_ticks, own_s, want):
    _fake_window(monkeypatch, {0, 1, 2, 3}, busy_ticks, own_s)
    mark = cpu.cpu_mark()
    assert cpu.cores_free_since(mark) == want


def test_cores_free_since_a_short_window_or_no_mark_says_nothing(monkeypatch):
    _fake_window(monkeypatch, {0, 1}, 0, 0.0, per_core_ticks=5)  # 0.05 s: too few ticks to tell
    assert cpu.cores_free_since(cpu.cpu_mark()) is None
    assert cpu.cores_free_since(None) is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux only: reads /proc/stat")
def test_cores_free_since_reads_this_machine():
    import time

    mark = cpu.cpu_mark()
    assert mark is not None
    time.sleep(0.25)
    assert 1 <= cpu.cores_free_since(mark) <= len(os.sched_getaffinity(0))


def test_without_proc_stat_no_mark_is_taken_and_the_pool_is_kept(monkeypatch):
    def missing(_):
        raise OSError("no /proc/stat")

    monkeypatch.setattr(cpu, "_idle_ticks", missing)
    assert cpu.cpu_mark() is None and cpu.cores_free_since(cpu.cpu_mark()) is None
