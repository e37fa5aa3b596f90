"""Tiny checkpoints and vocabularies the tests build themselves (no real numbers baked in)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from qwen_audio.config import AudioConfig, ModelConfig
from qwen_audio.tokenizer import SPECIAL_TOKENS, QwenTokenizer

MERGES = [b"he", b"ll", b"hell", b"hello", b" w", b"or", b" wor", b"ld", b" world", b"th", b"the", b" the"]


def synthetic_ranks() -> dict[bytes, int]:
    """All 256 bytes plus a few merges: a real byte-level BPE table, 268 entries."""
    ranks = {bytes([i]): i for i in range(256)}
    for m in MERGES:
        ranks[m] = len(ranks)
    return ranks


def synthetic_tokenizer() -> QwenTokenizer:
    return QwenTokenizer(synthetic_ranks())


def synthetic_config(**overrides) -> ModelConfig:
    """A small model for the synthetic vocabulary. seq_length is short so that dynamic NTK and
    LogN attention are exercised by prompts of a few hundred tokens."""
    n_ranks = len(synthetic_ranks())
    audio = AudioConfig(n_mels=80, n_ctx=1500, n_state=16, n_head=2, n_layer=1, output_dim=32,
                        audio_start_id=n_ranks + SPECIAL_TOKENS.index("<audio>"))
    cfg = ModelConfig(vocab_size=n_ranks + len(SPECIAL_TOKENS) + 5, dim=32, n_layer=2, n_head=2, head_dim=16,
                      ffn_dim=48, seq_length=64, max_position_embeddings=4096, audio=audio)
    return replace(cfg, **overrides)


def random_state(model: torch.nn.Module, seed: int = 0, std: float = 0.5) -> dict[str, torch.Tensor]:
    """Random bfloat16 weights. The default std 0.5 makes tiny models' answers differ clearly between
    inputs; 0.02 (the usual init) keeps activations at trained-model scale, for comparing precisions."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * std).to(torch.bfloat16) for k, v in model.state_dict().items()}


def nonzero_biases(model: torch.nn.Module, std: float = 0.3) -> None:
    """Give a reference model's biases values (transformers starts them at zero), so comparisons check them."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, std)


def write_checkpoint(folder: Path, cfg: ModelConfig | None = None, *, n_shards: int = 2, seed: int = 0,
                     ranks: dict[bytes, int] | None = None, std: float = 0.5) -> Path:
    """Write a checkpoint in the official layout: config.json, generation_config.json, qwen.tiktoken,
    sharded safetensors with an index. Weights are random bfloat16 values."""
    from qwen_audio.llm import QwenAudioLM
    from qwen_audio.weights import save_checkpoint

    cfg = cfg or synthetic_config()
    save_checkpoint(random_state(QwenAudioLM(cfg), seed, std), folder, n_shards=n_shards)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    (folder / "generation_config.json").write_text(json.dumps(
        {"chat_format": "chatml", "eos_token_id": len(ranks or synthetic_ranks()),
         "pad_token_id": len(ranks or synthetic_ranks()),
         "max_window_size": 6144, "max_new_tokens": 512, "do_sample": True, "top_k": 0, "top_p": 0.5}))
    ranks = ranks or synthetic_ranks()
    (folder / "qwen.tiktoken").write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    return folder


def tone(seconds: float, freq: float = 440.0, rate: int = 16000, channels: int = 1) -> np.ndarray:
    """A sine tone, float32, shaped (samples,) or (samples, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
