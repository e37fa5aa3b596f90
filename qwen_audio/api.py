"""The public entry points: `load`, and the transformers-style classes the tutorial's code uses."""

from __future__ import annotations

import os

import torch

from .chat import ChatMixin
from .config import ModelConfig
from .errors import QwenAudioError
from .generate import GenerationConfig
from .hub import resolve_checkpoint
from .llm import QwenAudioLM
from .tokenizer import QwenTokenizer
from .weights import load_weights, storage_dtype

DEFAULT_MODEL = "Qwen/Qwen-Audio-Chat"
LITE = "lite"  # the embedded offline backend


class QwenAudioForCausalLM(ChatMixin, QwenAudioLM):
    """Qwen-Audio-Chat: the model with the published chat API (`chat`, `chat_stream`, `chat_batch`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self._chat_init()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *, device_map=None, torch_dtype=None,
                        device=None, dtype=None, **kwargs) -> "QwenAudioForCausalLM":
        """Load a checkpoint folder or hub id. `torch_dtype`/`dtype`: a torch dtype, "auto" or None (the
        checkpoint's own dtype; bf16/fp16/fp32=True as in the published code also work).
        `device_map`/`device`: "cpu", "cuda", "cuda:1", "auto" or None (cuda when available)."""
        folder = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"))
        cfg = ModelConfig.from_json(folder / "config.json")
        dtype = _pick_dtype(dtype if dtype is not None else torch_dtype, kwargs, folder)
        device = _pick_device(device if device is not None else device_map)
        with torch.device("meta"):
            model = cls(cfg)
        load_weights(model, folder, dtype=dtype, device=device)
        model.generation_config = GenerationConfig.from_pretrained(folder)
        return model.eval()


def _pick_dtype(dtype, kwargs: dict, folder) -> torch.dtype:
    for flag, d in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        if kwargs.get(flag):
            return d
    if dtype in (None, "auto"):
        return storage_dtype(folder)
    if isinstance(dtype, str):
        named = getattr(torch, dtype.replace("bf16", "bfloat16").replace("fp16", "float16").replace("fp32", "float32"), None)
        if not isinstance(named, torch.dtype):
            raise QwenAudioError(f"unknown dtype {dtype!r}: use 'float32', 'bfloat16' or 'float16'")
        dtype = named
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise QwenAudioError(f"unsupported dtype {dtype}: use float32, bfloat16 or float16")
    return dtype


def _pick_device(device) -> torch.device:
    if isinstance(device, dict):  # a transformers-style device map: take its first device
        device = next(iter(device.values()), None)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise QwenAudioError(f"device {device} was asked for, but torch sees no CUDA device here")
    return device


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(x)` as in the tutorial (`trust_remote_code` is accepted and not needed)."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike = DEFAULT_MODEL, **kwargs):
        if str(name_or_path) == LITE:
            from .lite import load_lite

            return load_lite()[1]
        return QwenTokenizer.from_pretrained(name_or_path, **kwargs)


class AutoModelForCausalLM:
    """`AutoModelForCausalLM.from_pretrained(x, device_map=..., torch_dtype=...)` as in the tutorial."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike = DEFAULT_MODEL, **kwargs):
        kwargs.pop("trust_remote_code", None)
        if str(name_or_path) == LITE:
            from .lite import load_lite

            return load_lite()[0]
        return QwenAudioForCausalLM.from_pretrained(name_or_path, **kwargs)


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL, *, dtype=None, device=None, **kwargs):
    """Load (model, tokenizer) in one call: a checkpoint folder, a hub id, or "lite" (offline, small)."""
    if str(name_or_path) == LITE:
        from .lite import load_lite

        return load_lite(**kwargs)
    folder = resolve_checkpoint(name_or_path, revision=kwargs.pop("revision", None))  # download or look up once
    model = QwenAudioForCausalLM.from_pretrained(folder, dtype=dtype, device=device, **kwargs)
    return model, QwenTokenizer.from_pretrained(folder)
