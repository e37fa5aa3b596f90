"""Qwen2-Audio: the Whisper-v3-style audio encoder with its average pooling, the projector into the
LLM's width, and the Qwen2 decoder whose `<|AUDIO|>` token embeddings the features replace.

Unlike v1's encoder, every clip is encoded over the whole 30 s window (3000 log-mel frames, 128 bins)
with the positions past its end masked out as keys, so a clip's features never depend on the other
clips encoded with it; the learned positional embedding is loaded, not computed.

    frames (<= 3000) --conv1, conv2 (stride 2)--> (frames - 1) // 2 + 1 positions
                     --average pooling (2)------> (positions - 2) // 2 + 1 features, one per <|AUDIO|> token
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
from ..errors import CheckpointError, PromptError
from .bpe import BpeTokenizer
from .qwen2 import Qwen2Config, Qwen2LM

N_MELS = 128  # Qwen2-Audio's log-mel bins (Whisper v3's)


def audio_frames(n_samples: int) -> int:
    """Log-mel frames that hold audio in the window of a clip of `n_samples` (16 kHz): ceil(n / 160), at
    most 3000, as transformers' WhisperFeatureExtractor counts them."""
    return min(-(-min(n_samples, N_SAMPLES) // HOP_LENGTH), N_FRAMES)


def log_mel(samples: torch.Tensor) -> tuple[torch.Tensor, int]:
    """16 kHz samples [n] -> (log-mel [128, 3000] of the first 30 s, zero-padded, and `audio_frames(n)`)."""
    return log_mel_spectrogram(pad_or_trim(samples), n_mels=N_MELS), audio_frames(samples.shape[-1])


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


class Qwen2AudioLM(nn.Module):
    """Token ids and clips -> next-token logits: the audio encoder (`audio`) and the decoder (`llm`), with
    the engine's interface (`embed`, `new_cache`, `segment`, `step`) and `embed_audio`."""

    def __init__(self, text: Qwen2Config, audio: AudioTowerConfig, audio_token_id: int):
        super().__init__()
        self.config, self.audio_token_id = text, audio_token_id
        self.audio = AudioEncoder(audio)
        self.llm = Qwen2LM(text)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "Qwen2AudioLM":
        """The model a Qwen2-Audio `config.json` describes (transformers 4 or 5); weights not loaded."""
        if "text_config" not in d or "audio_config" not in d:
            raise CheckpointError(f"{source}: a Qwen2-Audio config needs text_config and audio_config")
        text = Qwen2Config.from_dict(d["text_config"], f"{source} text_config")
        token = d.get("audio_token_id", d.get("audio_token_index"))
        if not isinstance(token, int):
            raise CheckpointError(f"{source}: no audio_token_index / audio_token_id")
        return cls(text, AudioTowerConfig.from_dict(d["audio_config"], text.dim, f"{source} audio_config"), token)

    @property
    def device(self) -> torch.device:
        return self.llm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.dtype

    def new_cache(self, batch: int, capacity: int):
        return self.llm.new_cache(batch, capacity)

    def segment(self, cache, start: int, length: int, alpha: float = 1.0):
        return self.llm.segment(cache, start, length, alpha)

    def step(self, x: torch.Tensor, segments, last: list[int]) -> torch.Tensor:
        return self.llm.step(x, segments, last)

    def embed_audio(self, mels: torch.Tensor, frames: torch.Tensor) -> list[torch.Tensor]:
        return self.audio.embed_audio(mels, frames)

    def init_buffers(self) -> None:
        """Nothing to compute after loading: the checkpoint holds every tensor (the positions too)."""

    def embed(self, tokens: torch.Tensor, audio: list[torch.Tensor] | None = None) -> torch.Tensor:
        """tokens: [B, S] -> [B, S, dim]. With `audio`, the `<|AUDIO|>` tokens (row-major order) take the
        clips' features in turn: each clip's [n, dim] fills its next n such tokens."""
        x = self.llm.embed(tokens)
        if not audio:
            return x
        where = tokens == self.audio_token_id
        feats = torch.cat(list(audio)).to(x.dtype)
        if int(where.sum()) != feats.shape[0]:
            raise PromptError(f"{int(where.sum())} <|AUDIO|> tokens in the prompt but {feats.shape[0]} audio "
                              f"features in {len(audio)} clips")
        x[where] = feats
        return x

    def forward(self, tokens: torch.Tensor, audio: list[torch.Tensor] | None = None) -> torch.Tensor:
        """tokens: [1, S], a whole prompt -> logits [1, S, vocab] (a fresh cache)."""
        s = tokens.shape[1]
        cache = self.new_cache(1, s)
        return self.step(self.embed(tokens, audio)[0], [self.segment(cache, 0, s)], list(range(s)))[None]


# Checkpoint key prefixes -> this model's: transformers 4 and 5 save the first form; the second is how
# transformers 5 names the modules in memory (what a state_dict() of its model holds).
_PREFIXES = (
    ("audio_tower.", "audio.audio_tower."), ("multi_modal_projector.", "audio.multi_modal_projector."),
    ("language_model.model.", "llm.model."), ("language_model.lm_head.", "llm.lm_head."),
    ("model.audio_tower.", "audio.audio_tower."), ("model.multi_modal_projector.", "audio.multi_modal_projector."),
    ("model.language_model.", "llm.model."), ("lm_head.", "llm.lm_head."),
)


def checkpoint_name(key: str) -> str | None:
    """This model's name for a checkpoint's tensor, or None for a name it does not know."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def layout(config: Qwen2Config):
    """How a Qwen2-Audio checkpoint's tensors land in `Qwen2AudioLM` (for `weights.load_weights`)."""
    from ..weights import Layout

    tied = {"llm.lm_head.weight": "llm.model.embed_tokens.weight"} if config.tie_word_embeddings else {}
    return Layout("Qwen2-Audio", checkpoint_name, ("llm.model.embed_tokens",), "llm.lm_head", tied)


def load_state(model: Qwen2AudioLM, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Put a Qwen2-Audio checkpoint's tensors into `model`: every key mapped and checked, none left over."""
    mapped, unknown = {}, []
    for k, v in state.items():
        name = checkpoint_name(k)
        if name is None:
            unknown.append(k)
        else:
            mapped[name] = v
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("llm.lm_head.weight")
        mapped.pop("llm.lm_head.weight", None)
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected)) + unknown
    wrong = sorted(k for k in set(expected) & set(mapped) if tuple(mapped[k].shape) != tuple(expected[k]))
    if missing or extra or wrong:
        raise CheckpointError(f"{source}: does not fit Qwen2-Audio: missing {missing[:3]}, unexpected "
                              f"{extra[:3]}, wrong shape {wrong[:3]}")
    model.load_state_dict(mapped, strict=False)


DEFAULT_SYSTEM = "You are a helpful assistant."  # what the chat template puts first when no system message does
Content = str | Sequence[str | int]  # a message's text, or its parts: text, and clips as their feature counts


def chat_ids(tokenizer: BpeTokenizer, messages: Sequence[tuple[str, Content]], add_generation_prompt: bool = True) -> list[int]:
    """The prompt ids that Qwen2-Audio's chat template and processor give `messages` ((role, content) pairs;
    a clip in the content is its number of features, each an `<|AUDIO|>` token). Text is data: control
    tokens enter only as ids, so text that spells `<|im_end|>` stays those characters."""
    ctl = {t: tokenizer.special_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")}
    items: list[str | int] = []  # text runs and control ids, as a tokenizer that splits at control tokens sees them
    if not messages or messages[0][0] != "system":
        items += [ctl["<|im_start|>"], f"system\n{DEFAULT_SYSTEM}", ctl["<|im_end|>"], "\n"]
    clips = 0
    for role, content in messages:
        items += [ctl["<|im_start|>"], f"{role}\n"]
        for part in [content] if isinstance(content, str) else content:
            if isinstance(part, str):
                items.append(part)
            else:
                clips += 1
                items += [f"Audio {clips}: ", ctl["<|audio_bos|>"], *[ctl["<|AUDIO|>"]] * part, ctl["<|audio_eos|>"], "\n"]
        items += [ctl["<|im_end|>"], "\n"]
    if add_generation_prompt:
        items += [ctl["<|im_start|>"], "assistant\n"]
    return encode_items(tokenizer, items)


def encode_items(tokenizer: BpeTokenizer, items: Sequence[str | int]) -> list[int]:
    """Ids of text runs and control ids: the text between two control ids is encoded as one run (as a tokenizer
    that splits at control tokens sees it), never searched for control tokens itself."""
    ids: list[int] = []
    text = ""
    for item in [*items, None]:
        if isinstance(item, str):
            text += item
            continue
        if text:
            ids += tokenizer.encode(text)
            text = ""
        if item is not None:
            ids.append(item)
    return ids
