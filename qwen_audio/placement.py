"""Where a model runs and in what precision: the device and dtype arguments of `from_pretrained`, read the
same way for every checkpoint kind."""

from __future__ import annotations

import warnings

import torch

from .cpu import native_bf16
from .errors import DeviceError, SlowPathWarning
from .quantize import Quantization
from .weights import storage_dtype


def placement(device, dtype, flags: dict, folder, quantization: Quantization | None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) for a checkpoint: `device` as `pick_device` reads it, `dtype` as `pick_dtype`;
    quantized weights only on a CPU; a warning where bfloat16 products would be emulated."""
    device = pick_device(device)
    if quantization is not None and device.type != "cpu":
        raise DeviceError(f"{quantization.name} weights are for CPUs; on {device} load the float checkpoint in bfloat16")
    dtype = pick_dtype(dtype, flags, folder, quantization)
    if device.type == "cpu" and dtype == torch.bfloat16 and not native_bf16():
        warnings.warn("this CPU has no bfloat16 matrix units (no AMX or AVX512-BF16): bfloat16 products are "
                      "emulated and prompts will be slow; quantize='int8' (float32 compute, small weights) or "
                      "dtype=torch.float32 run much faster here", SlowPathWarning, stacklevel=3)
    return device, dtype


def pick_dtype(dtype, kwargs: dict, folder, quantization: Quantization | None = None) -> torch.dtype:
    """A torch dtype, its name, "auto" or None (the checkpoint's own; with quantized weights the CPU's best
    compute type), or a published-code flag in `kwargs` (bf16/fp16/fp32=True)."""
    for flag, d in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        if kwargs.get(flag):
            return d
    if dtype in (None, "auto") and quantization is not None:  # weights are small: compute in the CPU's best type
        return torch.bfloat16 if native_bf16() else torch.float32
    if dtype in (None, "auto"):
        return storage_dtype(folder)
    if isinstance(dtype, str):
        named = getattr(torch, dtype.replace("bf16", "bfloat16").replace("fp16", "float16").replace("fp32", "float32"), None)
        if not isinstance(named, torch.dtype):
            raise DeviceError(f"unknown dtype {dtype!r}: use 'float32', 'bfloat16' or 'float16'")
        dtype = named
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise DeviceError(f"unsupported dtype {dtype}: use float32, bfloat16 or float16")
    return dtype


def pick_device(device) -> torch.device:
    """"cpu", "cuda", "cuda:1", an index, "mps", "auto" or None (cuda when available), or a device map."""
    if isinstance(device, dict):  # a transformers-style device map: take its first device
        device = next(iter(device.values()), None)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device} was asked for, but torch sees no CUDA device here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {device} was asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device mps was asked for, but torch sees no Apple GPU here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device} is not supported: use cpu, cuda or mps")
    return device
