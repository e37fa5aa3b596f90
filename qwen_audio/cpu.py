"""What the CPU at hand can do fast, for choosing a compute path (read once from /proc/cpuinfo on Linux)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (`avx2`, `avx512_bf16`, `amx_bf16`, ...); empty where /proc/cpuinfo is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether bfloat16 matrix products run in hardware (AMX or AVX512-BF16), not emulated. Set
    QWEN_AUDIO_NATIVE_BF16=0 or 1 to override (to try the other path, or for a CPU not described here)."""
    forced = os.environ.get("QWEN_AUDIO_NATIVE_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def describe() -> str:
    """One line for logs and benchmarks: the matrix-product extensions this CPU has."""
    have = [f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma") if f in cpu_flags()]
    return ", ".join(have) or "no x86 vector extensions listed"


def _idle_ticks(cpus: set[int]) -> tuple[int, int]:
    """(idle, total) jiffies of `cpus` since boot, from /proc/stat's per-CPU lines."""
    idle = total = 0
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle += ticks[3] + ticks[4]
            total += sum(ticks)
    return idle, total


_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc/stat's unit (USER_HZ)


def _cpus() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def _free_share(idle: int, total: int, own_ticks: float, n: int) -> int:
    """Cores (of `n`, at least 1) that other processes left idle, from the ticks of one window: `idle` and `total`
    summed over the cores, `own_ticks` this process's own CPU time in the same units (it counts as free: it is
    what is being sized)."""
    busy_elsewhere = max(0.0, (total - idle) - own_ticks)
    return max(1, min(n, int(n - busy_elsewhere / (total / n) + 0.5)))


def free_cores(sample_s: float = 0.25) -> int:
    """How many of this process's cores are idle now (at least 1): their idle share over `sample_s`.

    A thread pool wider than the free cores is slow, not just shared: OpenMP's threads wait for each other at
    every barrier, and a busy core makes each wait a scheduler time slice (lite's first answer on 2 busy cores:
    410 s with 2 threads, 135 s with 1). Where /proc/stat is absent, every core counts as free.
    """
    import time

    cpus = _cpus()
    try:
        idle0, total0 = _idle_ticks(cpus)
        time.sleep(sample_s)
        idle1, total1 = _idle_ticks(cpus)
    except (OSError, ValueError):
        return len(cpus)
    if total1 <= total0:
        return len(cpus)
    return _free_share(idle1 - idle0, total1 - total0, 0.0, len(cpus))


@dataclass(frozen=True)
class CpuMark:
    """The cores' tick counters and this process's own CPU seconds at one moment (`cpu_mark`), to size a thread
    pool later by what other processes used in between (`cores_free_since`), without sleeping to sample."""

    idle: int
    total: int
    own_s: float
    cpus: frozenset[int]


def cpu_mark() -> CpuMark | None:
    """Now's counters; None where /proc/stat cannot be read."""
    cpus = _cpus()
    try:
        idle, total = _idle_ticks(cpus)
    except (OSError, ValueError):
        return None
    t = os.times()
    return CpuMark(idle, total, t.user + t.system, frozenset(cpus))


def cores_free_since(mark: CpuMark | None, min_s: float = 0.2) -> int | None:
    """How many cores other processes left idle since `mark` (at least 1; this process's own threads count as
    free, so a busy answer does not shrink its own pool). None where `mark` is None or under `min_s` of wall time
    has passed (too few ticks to tell): keep the pool as it is then."""
    if mark is None:
        return None
    now = cpu_mark()
    if now is None or now.cpus != mark.cpus:
        return None
    n, total = len(mark.cpus), now.total - mark.total
    if total < min_s * _TICKS_PER_S * n:
        return None
    own_ticks = (now.own_s - mark.own_s) * _TICKS_PER_S
    return _free_share(now.idle - mark.idle, total, own_ticks, n)

