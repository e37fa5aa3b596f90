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
