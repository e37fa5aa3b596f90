"""What the CPU at hand can do fast, for choosing a compute path (read once from /proc/cpuinfo on Linux)."""

from __future__ import annotations

import functools
import os


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


def free_cores(sample_s: float = 0.25) -> int:
    """How many of this process's cores are idle now (at least 1): their idle share over `sample_s`.

    A thread pool wider than the free cores is slow, not just shared: OpenMP's threads wait for each other at
    every barrier, and a busy core makes each wait a scheduler time slice (lite's first answer on 2 busy cores:
    410 s with 2 threads, 135 s with 1). Where /proc/stat is absent, every core counts as free.
    """
    import time

    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        idle0, total0 = _idle_ticks(cpus)
        time.sleep(sample_s)
        idle1, total1 = _idle_ticks(cpus)
    except (OSError, ValueError):
        return len(cpus)
    if total1 <= total0:
        return len(cpus)
    share = (idle1 - idle0) / (total1 - total0)  # of all the cores' time
    return max(1, min(len(cpus), int(share * len(cpus) + 0.5)))
