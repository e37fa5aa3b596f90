"""The public entry points: `load`, and the transformers-style classes the tutorial's code uses."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from .backend import Backend
from .config import ModelConfig
from .engine import Engine, EngineConfig
from .errors import CheckpointError, ModelNotFoundError, OptionError, PromptError, TokenizerError
from .hub import resolve_checkpoint
from .llm import QwenAudioLM
from .options import IGNORED_LOAD_KWARGS, GenerationConfig
from .placement import placement
from .quantize import Quantization
from .tokenizer import QwenTokenizer
from .transcribe import transcribe_windows
from .weights import load_weights, save_quantized, saved_quantization

DEFAULT_MODEL = "Qwen/Qwen-Audio-Chat"
# Backends built in, by name: "module:function" returning (model, tokenizer). Other names are checkpoints.
BUILTIN = {"lite": "qwen_audio.lite:load_lite"}


class QwenAudioForCausalLM(Backend, QwenAudioLM):
    """Qwen-Audio-Chat: the faithful model with the published chat API (`chat`, `chat_stream`, `chat_batch`),
    structured messages (`respond`) and `transcribe`. Conversations live in `self.engine`, not in the
    weights: several conversations, threads, `.to(...)` and copies all work."""

    def __init__(self, cfg: ModelConfig, engine: EngineConfig = EngineConfig()):
        super().__init__(cfg)
        self.generation_config = GenerationConfig()
        self.name_or_path: Path | None = None  # the checkpoint folder, where the tokenizer is found
        self.engine = Engine(self, engine)
        self.quantization: Quantization | None = None  # how the weights are stored, when not in float
        self._tokenizer: QwenTokenizer | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *, device_map=None, torch_dtype=None,
                        device=None, dtype=None, quantize: str | Quantization | None = None,
                        engine: EngineConfig = EngineConfig(), **kwargs) -> "QwenAudioForCausalLM":
        """Load a checkpoint folder or hub id. `torch_dtype`/`dtype`: a torch dtype, "auto" or None (the
        checkpoint's own dtype; bf16/fp16/fp32=True as in the published code also work).
        `device_map`/`device`: "cpu", "cuda", "cuda:1", "auto" or None (cuda when available).
        `quantize`: "int8", "int4" (groups of 64), "int4-32", ... on a CPU (see `qwen_audio.quantize`);
        then "auto" computes in bfloat16 where the CPU multiplies it natively (AMX, AVX512-BF16) and in
        float32 elsewhere. `engine`: memory budgets of the caches kept between answers."""
        unknown = sorted(set(kwargs) - IGNORED_LOAD_KWARGS - {"bf16", "fp16", "fp32", "low_cpu_mem_usage"})
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected keyword argument(s) {unknown}")
        quantization = Quantization.parse(quantize)
        folder = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"))
        cfg = ModelConfig.from_json(folder / "config.json")
        device, dtype = placement(device if device is not None else device_map,
                                  dtype if dtype is not None else torch_dtype, kwargs, folder,
                                  quantization or saved_quantization(folder))
        generation_config = GenerationConfig.from_pretrained(folder)
        with torch.device("meta"):
            model = cls(cfg, engine)
        load_weights(model, folder, dtype=dtype, device=device, quantization=quantization)
        model.generation_config, model.name_or_path = generation_config, folder
        model.quantization = quantization or saved_quantization(folder)
        return model.eval()

    def save_quantized(self, folder: str | os.PathLike) -> Path:
        """Write this quantized model as a checkpoint folder that `load` reads with no conversion (int8 weights
        memory-mapped): the conversion from the float checkpoint is paid once."""
        if self.quantization is None:
            raise OptionError("this model is not quantized: load it with quantize='int8' or 'int4' first")
        if self.name_or_path is None:
            raise OptionError("this model was not loaded from a checkpoint folder: its config cannot be copied")
        return save_quantized(self, self.quantization, folder, self.name_or_path)

    @property
    def reuse_kv(self) -> bool:
        """False: every prompt is computed from scratch, the published way (for comparisons)."""
        return self.engine.config.reuse

    @reuse_kv.setter
    def reuse_kv(self, value: bool) -> None:
        self.engine.config = replace(self.engine.config, reuse=bool(value))

    # -- the Backend primitives -----------------------------------------------------------------------

    def default_tokenizer(self) -> QwenTokenizer:
        if self._tokenizer is None:
            if self.name_or_path is None:
                raise PromptError("this model was not loaded from a checkpoint folder: pass its tokenizer")
            self._tokenizer = QwenTokenizer.from_pretrained(self.name_or_path)
        return self._tokenizer

    def _check_tokenizer(self, tokenizer) -> QwenTokenizer:
        if not isinstance(tokenizer, QwenTokenizer):
            raise TokenizerError(f"this model needs its QwenTokenizer, got {type(tokenizer).__name__}")
        if tokenizer.audio_start_id != self.config.audio.audio_start_id:
            raise TokenizerError(f"the tokenizer's <audio> id {tokenizer.audio_start_id} is not the model's "
                                 f"audio_start_id {self.config.audio.audio_start_id}: they do not belong together")
        return tokenizer

    def concurrency(self) -> int:
        """The scheduler's `max_batch`: answers on threads of their own are written in the same forward passes."""
        return self.engine.config.max_batch

    def _answer(self, tokenizer, conversation, cfg, cancel):
        return self.engine.answer(self._check_tokenizer(tokenizer), conversation, cfg, cancel)

    def _answer_batch(self, tokenizer, conversations, cfg):
        return self.engine.answer_batch(self._check_tokenizer(tokenizer), conversations, cfg)

    def _transcribe(self, tokenizer, source, request, cfg):
        return transcribe_windows(self.engine, self._check_tokenizer(tokenizer), source, request, cfg)


def _builtin(name, **kwargs) -> tuple | None:
    """(model, tokenizer) of a built-in backend named `name`, or None when it names none."""
    target = BUILTIN.get(os.fspath(name)) if isinstance(name, (str, os.PathLike)) else None
    if target is None:
        return None
    module, function = target.split(":")
    try:
        load_backend = getattr(importlib.import_module(module), function)
        return load_backend(**kwargs)
    except ImportError as e:  # its optional dependencies are not installed
        raise ModelNotFoundError(
            f"the built-in {os.fspath(name)!r} backend is not available in this installation ({e}): "
            f"pip install 'qwen-audio[{os.fspath(name)}]', or give a checkpoint folder or a hub id such as "
            f"{DEFAULT_MODEL}") from e


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(x)` as in the tutorial (`trust_remote_code` is accepted and not needed)."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike = DEFAULT_MODEL, **kwargs):
        builtin = _builtin(name_or_path)
        return builtin[1] if builtin else QwenTokenizer.from_pretrained(name_or_path, **kwargs)


class AutoModelForCausalLM:
    """`AutoModelForCausalLM.from_pretrained(x, device_map=..., torch_dtype=...)` as in the tutorial."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike = DEFAULT_MODEL, **kwargs):
        builtin = _builtin(name_or_path)
        return builtin[0] if builtin else QwenAudioForCausalLM.from_pretrained(name_or_path, **kwargs)


class AutoProcessor:
    """`AutoProcessor.from_pretrained(x)` as in Qwen2-Audio's model card: the checkpoint's chat template,
    tokenizer and feature extractor (see `qwen_audio.models.processor`)."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike = "Qwen/Qwen2-Audio-7B-Instruct", **kwargs):
        from .models.processor import Qwen2AudioProcessor

        folder = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"))
        if _model_type(folder) != "qwen2_audio":
            raise CheckpointError(f"{folder}: processors are for Qwen2-Audio checkpoints; Qwen-Audio's prompts are "
                                  "made by its tokenizer (AutoTokenizer.from_pretrained, tokenizer.from_list_format)")
        return Qwen2AudioProcessor.from_pretrained(folder, **kwargs)


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL, *, dtype=None, device=None, **kwargs) -> tuple[Backend, object]:
    """(model, tokenizer) in one call: a checkpoint folder, a hub id, or "lite" (offline, small).
    Keyword arguments go to the backend's loader (`from_pretrained`, `load_lite`)."""
    given = {k: v for k, v in dict(dtype=dtype, device=device).items() if v is not None}
    builtin = _builtin(name_or_path, **given, **kwargs)
    if builtin:
        return builtin
    folder = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"))  # download or look up once
    if _model_type(folder) == "qwen2_audio":
        from .models.qwen2_audio_chat import Qwen2AudioChat

        model = Qwen2AudioChat.from_pretrained(folder, dtype=dtype, device=device, **kwargs)
        return model, model.default_tokenizer()
    model = QwenAudioForCausalLM.from_pretrained(folder, dtype=dtype, device=device, **kwargs)
    return model, model.default_tokenizer()


def _model_type(folder: Path) -> str | None:
    """config.json's model_type ("qwen2_audio" for Qwen2-Audio; the v1 checkpoints' is "qwen")."""
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # the v1 loader reports what is wrong with the folder
