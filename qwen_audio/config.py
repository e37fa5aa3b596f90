"""Dimensions of the audio encoder and the LLM, read from the official config.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import CheckpointError


@dataclass(frozen=True)
class AudioConfig:
    """The Whisper-style encoder (config.json's "audio" object)."""

    n_mels: int = 80
    n_ctx: int = 1500  # encoder positions for 30 s
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 32
    output_dim: int = 4096  # the LLM's width: the projection's output
    avg_pool: bool = True
    add_audio_bos_eos_token: bool = True
    audio_start_id: int = 155163  # id of <audio>; </audio> is the next id


@dataclass(frozen=True)
class ModelConfig:
    """QWen-7B v1 decoder plus its audio encoder."""

    vocab_size: int = 155947
    dim: int = 4096  # hidden_size
    n_layer: int = 32
    n_head: int = 32
    head_dim: int = 128  # kv_channels
    ffn_dim: int = 11008  # intermediate_size // 2: width of w1 and w2
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    rotary_pct: float = 1.0
    seq_length: int = 2048  # training length: NTK and LogN scaling start past it
    max_position_embeddings: int = 8192
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    no_bias: bool = True  # no bias in c_proj and the MLP (c_attn always has one)
    audio: AudioConfig = field(default_factory=AudioConfig)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "ModelConfig":
        try:
            audio_keys = {f.name for f in fields(AudioConfig)}
            audio = AudioConfig(**{k: v for k, v in d["audio"].items() if k in audio_keys})
            cfg = cls(
                vocab_size=d["vocab_size"],
                dim=d["hidden_size"],
                n_layer=d["num_hidden_layers"],
                n_head=d["num_attention_heads"],
                head_dim=d.get("kv_channels", d["hidden_size"] // d["num_attention_heads"]),
                ffn_dim=d["intermediate_size"] // 2,
                norm_eps=d.get("layer_norm_epsilon", 1e-6),
                rope_base=float(d.get("rotary_emb_base", 10000)),
                rotary_pct=float(d.get("rotary_pct", 1.0)),
                seq_length=d.get("seq_length", 2048),
                max_position_embeddings=d.get("max_position_embeddings", 8192),
                use_dynamic_ntk=d.get("use_dynamic_ntk", True),
                use_logn_attn=d.get("use_logn_attn", True),
                no_bias=d.get("no_bias", True),
                audio=audio,
            )
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{source}: not a Qwen-Audio config (missing or bad field {e})") from e
        if cfg.rotary_pct != 1.0:
            raise CheckpointError(f"{source}: rotary_pct {cfg.rotary_pct} is not supported (Qwen-Audio uses 1.0)")
        if cfg.head_dim * cfg.n_head != cfg.dim:
            raise CheckpointError(f"{source}: kv_channels x heads ({cfg.head_dim} x {cfg.n_head}) != hidden_size {cfg.dim}")
        return cfg

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"config not found: {path}")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(d, str(path))

    def to_dict(self) -> dict:
        """The official config.json fields (so tests can write checkpoints)."""
        a = self.audio
        return {
            "architectures": ["QWenLMHeadModel"],
            "model_type": "qwen",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "kv_channels": self.head_dim,
            "intermediate_size": self.ffn_dim * 2,
            "layer_norm_epsilon": self.norm_eps,
            "rotary_emb_base": self.rope_base,
            "rotary_pct": self.rotary_pct,
            "seq_length": self.seq_length,
            "max_position_embeddings": self.max_position_embeddings,
            "use_dynamic_ntk": self.use_dynamic_ntk,
            "use_logn_attn": self.use_logn_attn,
            "no_bias": self.no_bias,
            "audio": {f.name: getattr(a, f.name) for f in fields(a)},
        }


# Presets by name. "qwen-audio-chat" is the published checkpoint's shape.
PRESETS = {
    "qwen-audio-chat": ModelConfig(),
}
