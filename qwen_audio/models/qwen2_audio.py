"""Qwen2-Audio's ears: the Whisper-v3-style audio encoder with its average pooling, and the projector
into the LLM's width (keys as transformers names them, under `audio_tower.` and `multi_modal_projector.`).

Unlike v1's encoder, every clip is encoded over the whole 30 s window (3000 log-mel frames, 128 bins)
with the positions past its end masked out as keys, so a clip's features never depend on the other
clips encoded with it; the learned positional embedding is loaded, not computed.

    frames (<= 3000) --conv1, conv2 (stride 2)--> (frames - 1) // 2 + 1 positions
                     --average pooling (2)------> (positions - 2) // 2 + 1 features, one per <|AUDIO|> token
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
from ..errors import CheckpointError

N_MELS = 128  # Qwen2-Audio's log-mel bins (Whisper v3's)


def log_mel(samples: torch.Tensor) -> tuple[torch.Tensor, int]:
    """16 kHz samples [n] -> (log-mel [128, 3000] of the first 30 s, zero-padded, and how many of its
    frames hold audio: ceil(n / 160), at most 3000), as transformers' WhisperFeatureExtractor gives them."""
    n = min(samples.shape[-1], N_SAMPLES)
    return log_mel_spectrogram(pad_or_trim(samples), n_mels=N_MELS), min(-(-n // HOP_LENGTH), N_FRAMES)


@dataclass(frozen=True)
class AudioTowerConfig:
    """The encoder's dimensions, as transformers' `audio_config` names them (see `from_dict`)."""

    n_mels: int = 128  # num_mel_bins
    n_state: int = 1280  # d_model
    n_layer: int = 32  # encoder_layers
    n_head: int = 20  # encoder_attention_heads
    ffn_dim: int = 5120  # encoder_ffn_dim
    n_ctx: int = 1500  # max_source_positions: positions after the convolutions
    output_dim: int = 4096  # the LLM's width (text_config.hidden_size): the projector's output

    @classmethod
    def from_dict(cls, audio: dict, text_hidden_size: int, source: str = "config.json") -> "AudioTowerConfig":
        if audio.get("activation_function", "gelu") != "gelu":
            raise CheckpointError(f"{source}: audio activation {audio['activation_function']!r} is not supported")
        try:
            return cls(n_mels=int(audio.get("num_mel_bins", cls.n_mels)), n_state=int(audio["d_model"]),
                       n_layer=int(audio["encoder_layers"]), n_head=int(audio["encoder_attention_heads"]),
                       ffn_dim=int(audio["encoder_ffn_dim"]),
                       n_ctx=int(audio.get("max_source_positions", cls.n_ctx)), output_dim=int(text_hidden_size))
        except KeyError as e:
            raise CheckpointError(f"{source}: audio_config has no {e.args[0]!r}") from None


def feature_lengths(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder positions, output features) of clips of `frames` log-mel frames each ([B] ints)."""
    positions = (frames - 1) // 2 + 1
    return positions, (positions - 2) // 2 + 1


class Attention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head, self.scale = n_head, (n_state // n_head) ** -0.5
        self.q_proj = nn.Linear(n_state, n_state)
        self.k_proj = nn.Linear(n_state, n_state, bias=False)
        self.v_proj = nn.Linear(n_state, n_state)
        self.out_proj = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, T, n_state]; mask: [B, 1, 1, T] bool, True for keys that may be attended to."""
        b, t, d = x.shape
        # The queries are scaled before the product, as transformers does (not the scores after it).
        q = (self.q_proj(x) * self.scale).view(b, t, self.n_head, -1).transpose(1, 2)
        k, v = (p(x).view(b, t, self.n_head, -1).transpose(1, 2) for p in (self.k_proj, self.v_proj))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        return self.out_proj(o.transpose(1, 2).reshape(b, t, d))


class Layer(nn.Module):
    def __init__(self, cfg: AudioTowerConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(cfg.n_state)
        self.self_attn = Attention(cfg.n_state, cfg.n_head)
        self.final_layer_norm = nn.LayerNorm(cfg.n_state)
        self.fc1 = nn.Linear(cfg.n_state, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.n_state)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class AudioTower(nn.Module):
    """Log-mel [B, n_mels, 3000] -> pooled encoder states [B, n_ctx // 2, n_state]."""

    def __init__(self, cfg: AudioTowerConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.n_ctx, cfg.n_state)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer))
        self.layer_norm = nn.LayerNorm(cfg.n_state)

    def forward(self, mel: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """mel: [B, n_mels, 2 * n_ctx]; positions: [B] each clip's encoder positions (`feature_lengths`),
        past which its keys are masked."""
        if mel.shape[-1] != 2 * self.cfg.n_ctx:
            raise ValueError(f"the log-mel must have {2 * self.cfg.n_ctx} frames (padded), got {mel.shape[-1]}")
        x = mel.to(self.conv1.weight.dtype)
        x = F.gelu(self.conv2(F.gelu(self.conv1(x)))).transpose(1, 2)  # [B, n_ctx, n_state]
        x = x + self.embed_positions.weight
        keys = torch.arange(self.cfg.n_ctx, device=x.device)[None, :] < positions.to(x.device)[:, None]
        mask = None if bool(keys.all()) else keys[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        x = F.avg_pool1d(x.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)
        return self.layer_norm(x)


class Projector(nn.Module):
    def __init__(self, cfg: AudioTowerConfig):
        super().__init__()
        self.linear = nn.Linear(cfg.n_state, cfg.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class AudioEncoder(nn.Module):
    """The tower and the projector: `embed_audio(mels, frames)` -> per clip [n_features, output_dim]."""

    def __init__(self, cfg: AudioTowerConfig):
        super().__init__()
        self.audio_tower = AudioTower(cfg)
        self.multi_modal_projector = Projector(cfg)

    def embed_audio(self, mels: torch.Tensor, frames: torch.Tensor) -> list[torch.Tensor]:
        """mels: [B, n_mels, 3000] (each clip's log-mel, padded); frames: [B] its frames before padding.
        Returns each clip's features [n, output_dim], one per `<|AUDIO|>` token of the prompt."""
        positions, n = feature_lengths(frames)
        x = self.multi_modal_projector(self.audio_tower(mels, positions))
        return [x[i, :int(k)] for i, k in enumerate(n)]
