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
