"""Dimensions of the audio encoder and the LLM, read from the official config.json."""

from __future__ import annotations

import json
import math
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
        """Read the official config.json fields; every value's type is checked, naming the field."""
        if not isinstance(d, dict) or not isinstance(d.get("audio"), dict):
            raise CheckpointError(f"{source}: not a Qwen-Audio config (no \"audio\" object)")
        a = d["audio"]
        get = _Fields(d, source)
        aget = _Fields(a, source, "audio.")
        hidden, heads = get.int("hidden_size"), get.int("num_attention_heads")
        audio = AudioConfig(
            n_mels=aget.int("n_mels", 80), n_ctx=aget.int("n_ctx", 1500), n_state=aget.int("n_state"),
            n_head=aget.int("n_head"), n_layer=aget.int("n_layer"), output_dim=aget.int("output_dim"),
            avg_pool=aget.bool("avg_pool", True), add_audio_bos_eos_token=aget.bool("add_audio_bos_eos_token", True),
            audio_start_id=aget.int("audio_start_id", AudioConfig.audio_start_id),
        )
        cfg = cls(
            vocab_size=get.int("vocab_size"),
            dim=hidden,
            n_layer=get.int("num_hidden_layers"),
            n_head=heads,
            head_dim=get.int("kv_channels", hidden // heads),
            ffn_dim=get.int("intermediate_size") // 2,
            norm_eps=get.float("layer_norm_epsilon", 1e-6),
            rope_base=get.float("rotary_emb_base", 10000.0),
            rotary_pct=get.float("rotary_pct", 1.0),
            seq_length=get.int("seq_length", 2048),
            max_position_embeddings=get.int("max_position_embeddings", 8192),
            use_dynamic_ntk=get.bool("use_dynamic_ntk", True),
            use_logn_attn=get.bool("use_logn_attn", True),
            no_bias=get.bool("no_bias", True),
            audio=audio,
        )
        if cfg.rotary_pct != 1.0:
            raise CheckpointError(f"{source}: rotary_pct {cfg.rotary_pct} is not supported (Qwen-Audio uses 1.0)")
        if cfg.head_dim * cfg.n_head != cfg.dim:
            raise CheckpointError(f"{source}: kv_channels x heads ({cfg.head_dim} x {cfg.n_head}) != hidden_size {cfg.dim}")
        if audio.n_state % audio.n_head:
            raise CheckpointError(f"{source}: audio.n_state {audio.n_state} is not a multiple of audio.n_head {audio.n_head}")
        if not 0 <= audio.audio_start_id < cfg.vocab_size - 1:
            raise CheckpointError(f"{source}: audio.audio_start_id {audio.audio_start_id} is outside the vocabulary")
        return cfg

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"config not found: {path}")
        return cls.from_dict(read_json(path, CheckpointError), str(path))

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


class _Fields:
    """Typed reads of a JSON object's fields; a missing or mistyped field is a CheckpointError naming it."""

    _MISSING = object()

    def __init__(self, d: dict, source: str, prefix: str = ""):
        self.d, self.source, self.prefix = d, source, prefix

    def _get(self, name: str, default, ok, expected: str):
        value = self.d.get(name, default)
        if value is self._MISSING:
            raise CheckpointError(f"{self.source}: field {self.prefix}{name} is missing")
        if not ok(value):
            shown = "null" if value is None else f"{json.dumps(value)} ({type(value).__name__})"
            raise CheckpointError(f"{self.source}: field {self.prefix}{name} must be {expected}, got {shown}")
        return value

    def int(self, name: str, default=_MISSING) -> int:
        """A positive integer (ids may be 0)."""
        return self._get(name, default, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                         "a non-negative integer")

    def float(self, name: str, default=_MISSING) -> float:
        return float(self._get(name, default, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                               and math.isfinite(v) and v > 0, "a positive number"))

    def bool(self, name: str, default=_MISSING) -> bool:
        return self._get(name, default, lambda v: isinstance(v, bool), "true or false")


def read_json(path: str | os.PathLike, error: type[Exception]) -> dict:
    """A JSON document from `path`; `error` naming the file when it is not UTF-8 JSON."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None


# Presets by name. "qwen-audio-chat" is the published checkpoint's shape.
PRESETS = {
    "qwen-audio-chat": ModelConfig(),
}
