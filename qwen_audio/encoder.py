"""The Whisper-style audio encoder of Qwen-Audio (keys under `transformer.audio.`)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .audio import AudioLength
from .config import AudioConfig

# On CUDA: flash attention for causal prompts, memory-efficient attention with masks. Not cuDNN's: it
# builds a plan for each new (queries, keys) shape, which cost ~0.7 s of a cached turn's first text on an H200.
CUDA_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_kernels(device: torch.device):
    """The attention kernels to allow on `device` (a context manager)."""
    return sdpa_kernel(CUDA_ATTENTION) if device.type == "cuda" else contextlib.nullcontext()


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal positions [length, channels] (sin half, then cos half), in float32."""
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weights' dtype, as Whisper does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).type(x.dtype)


class AudioAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, T, n_state]; mask: [B, 1, 1, T] bool, True for keys that may be attended to."""
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.n_head, -1).transpose(1, 2) for p in (self.query, self.key, self.value))
        # Whisper scales q and k by head_dim^-0.25 each: the same as one 1/sqrt(head_dim).
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(o.transpose(1, 2).reshape(b, t, d))


class AudioBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = AudioAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), mask)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """Log-mel [B, n_mels, 3000] -> pooled features [B, T/2, output_dim] for the LLM."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, kernel_size=3, stride=2, padding=1)
        # Computed, not loaded: the published model uses float32 sinusoids, while checkpoints store a
        # bfloat16-rounded copy (2e-3 off) that the goldens show is not what it runs with.
        self.register_buffer("positional_embedding", sinusoids(cfg.n_ctx, cfg.n_state), persistent=False)
        self.blocks = nn.ModuleList(AudioBlock(cfg.n_state, cfg.n_head) for _ in range(cfg.n_layer))
        self.ln_post = LayerNorm(cfg.n_state)
        self.proj = nn.Linear(cfg.n_state, cfg.output_dim)
        self.audio_bos_eos_token = nn.Embedding(2, cfg.output_dim)

    def init_buffers(self) -> None:
        """Compute the positions on the weights' device (after loading onto the meta-built model)."""
        self.positional_embedding = sinusoids(self.cfg.n_ctx, self.cfg.n_state).to(self.conv1.weight.device)

    def forward(self, mel: torch.Tensor, after_cnn: torch.Tensor, t_max: int | None = None) -> torch.Tensor:
        """mel: [B, n_mels, 3000]; after_cnn: [B] each clip's encoder length. Returns [B, t_max // 2, output_dim].

        Clips are encoded as one padded batch, as the published code does: the convs of a short clip
        see the (silent) mel frames that follow it up to the longest clip, so its features depend on
        the longest clip in the batch (`t_max`, default: the longest here). Padded positions are
        zeroed and masked out as keys.
        """
        t_max = int(after_cnn.max()) if t_max is None else t_max
        x = mel[:, :, : 2 * t_max].to(self.conv1.weight.dtype)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, t_max, n_state]
        x = x + self.positional_embedding[:t_max].to(x.dtype)
        valid = torch.arange(t_max, device=x.device)[None, :] < after_cnn.to(x.device)[:, None]  # [B, t_max]
        x = x.masked_fill(~valid[..., None], 0.0)
        mask = None if bool(valid.all()) else valid[:, None, None, :]
        with attention_kernels(x.device):
            for block in self.blocks:
                x = block(x, mask)
        x = F.avg_pool1d(x.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)
        return self.proj(self.ln_post(x))

    def embed_audio(self, mels: torch.Tensor, lengths: list[AudioLength], t_max: int | None = None) -> list[torch.Tensor]:
        """Encode clips as one batch: mels [B, n_mels, 3000] -> per clip [span, output_dim] with bos/eos.

        `t_max` is the encoder length of the longest clip encoded with these (default: the longest
        here); clips computed apart with the same `t_max` get the features one batch would give them.
        """
        after_cnn = torch.tensor([n.after_cnn for n in lengths])
        x = self(mels.to(self.conv1.weight.device), after_cnn, t_max)
        bos, eos = self.audio_bos_eos_token.weight[0:1], self.audio_bos_eos_token.weight[1:2]
        return [torch.cat([bos, x[i, : n.n_tokens], eos]) for i, n in enumerate(lengths)]
