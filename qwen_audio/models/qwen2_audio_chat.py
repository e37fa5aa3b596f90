"""Qwen2-Audio behind the project's `Backend` interface: `chat`, `chat_stream`, `chat_batch` and `respond`,
written by the same engine (prefix cache, scheduler) as the v1 model.

    model = Qwen2AudioChat.from_pretrained(folder)          # config.json with model_type "qwen2_audio"
    stream = model.respond([Message("user", [Audio("clip.wav"), Text("What's that sound?")])])

Not yet here: `load()` by model type, the hub download, the model card's processor API, transcription
of long audio, quantized weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..audio import source_key
from ..backend import Backend
from ..config import read_json
from ..engine import Engine, EngineConfig, Prepared
from ..errors import CheckpointError, OptionError, PromptError
from ..hub import resolve_checkpoint
from ..messages import Audio, Conversation, Text, unlabelled
from ..options import IGNORED_LOAD_KWARGS, GenerationConfig
from ..placement import placement
from ..quantize import Quantization
from ..weights import load_weights
from .bpe import BpeTokenizer
from .qwen2_audio import Qwen2AudioLM, audio_frames, chat_ids, feature_lengths, layout, log_mel

DEFAULT_MODEL = "Qwen/Qwen2-Audio-7B-Instruct"

# generation_config.json fields taken as they are (the others are transformers' own).
_GENERATION_FIELDS = ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "max_new_tokens")


class Qwen2AudioEngine(Engine):
    """The engine's preparing for Qwen2-Audio: its chat template, and each clip's 128-bin log-mel encoded
    over the whole window (so features depend on the clip alone and are kept by the clip)."""

    DROPS_LAST_AT_LENGTH = False  # transformers' generate keeps every token

    def prepare(self, tokenizer: BpeTokenizer, conversation: Conversation, cfg: GenerationConfig) -> Prepared:
        self._check_weights()
        clips: list[Audio] = []

        def content(parts) -> list:
            out = []
            for part in unlabelled(parts):  # the template writes each clip's "Audio k: " itself
                if isinstance(part, Text):
                    out.append(part.text)
                else:
                    clips.append(part)
                    out.append(self.span(part))
            return out

        messages = [("system", content(conversation.system))] if conversation.system else []
        for turn in conversation.turns:
            messages.append(("user", content(turn.query)))
            if turn.response is not None:
                messages.append(("assistant", content(turn.response)))
        ids, limit = chat_ids(tokenizer, messages), self.model.config.max_position_embeddings
        if len(ids) >= limit:
            raise PromptError(f"the prompt is {len(ids)} tokens, longer than the model's window of {limit}")
        feats = [self.features_of(a) for a in clips]
        spans, at = [], 0
        for a, f in zip(clips, feats):
            at = ids.index(self.model.audio_token_id, at)
            spans.append((at, at + len(f) - 1, source_key(a.source)))
            at += len(f)
        return Prepared(ids, feats, spans, 1.0, min(cfg.max_new_tokens, limit - len(ids)))

    def span(self, audio: Audio) -> int:
        """`<|AUDIO|>` tokens of a clip (decoding it, once)."""
        frames = audio_frames(len(self.clips.clip(audio.source, audio.name).samples))
        return int(feature_lengths(torch.tensor([frames]))[1])

    @torch.inference_mode()
    def features_of(self, audio: Audio) -> torch.Tensor:
        key = (source_key(audio.source), "qwen2-audio")
        found = self.features.get(key)
        if found is None:
            mel, frames = log_mel(torch.from_numpy(self.clips.clip(audio.source, audio.name).samples))
            found = self.model.embed_audio(mel[None].to(self.model.device), torch.tensor([frames]))[0]
            self.features.put(key, found)
        return found

    def stop_ids(self, tokenizer: BpeTokenizer, cfg: GenerationConfig) -> set[int]:
        return {tokenizer.special_id("<|im_end|>"), tokenizer.special_id("<|endoftext|>"), cfg.eos_token_id}

    def complete(self, *args, **kwargs):
        raise OptionError("Qwen2-Audio's base-model task prompts are not supported yet")


class Qwen2AudioChat(Backend):
    """Qwen2-Audio-Instruct with the project's chat API. Holds the weights (`model`), the tokenizer and the
    engine that writes its answers."""

    def __init__(self, model: Qwen2AudioLM, tokenizer: BpeTokenizer, generation_config: GenerationConfig,
                 engine: EngineConfig = EngineConfig()):
        self.model, self.tokenizer, self.generation_config = model, tokenizer, generation_config
        self.engine = Qwen2AudioEngine(model, engine)
        self.quantization: Quantization | None = None  # how the weights are stored, when not in float

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *, device_map=None, torch_dtype=None,
                        device=None, dtype=None, quantize: str | Quantization | None = None,
                        engine: EngineConfig = EngineConfig(), **kwargs) -> "Qwen2AudioChat":
        """A checkpoint folder or hub id as transformers writes it: config.json, safetensors (one file or
        shards with their index), the tokenizer's files and generation_config.json. `dtype`/`torch_dtype`,
        `device`/`device_map` and `quantize` as for Qwen-Audio (`QwenAudioForCausalLM.from_pretrained`):
        weights keep the checkpoint's dtype unless one is given, and are memory-mapped as they load."""
        unknown = sorted(set(kwargs) - IGNORED_LOAD_KWARGS - {"low_cpu_mem_usage"})
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected keyword argument(s) {unknown}")
        quantization = Quantization.parse(quantize)
        folder = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"))
        config = read_json(folder / "config.json", CheckpointError)
        if not isinstance(config, dict) or config.get("model_type") != "qwen2_audio":
            kind = config.get("model_type") if isinstance(config, dict) else None
            raise CheckpointError(f"{folder}: not a Qwen2-Audio checkpoint (model_type {kind!r})")
        device, dtype = placement(device if device is not None else device_map,
                                  dtype if dtype is not None else torch_dtype, {}, folder, quantization)
        with torch.device("meta"):
            model = Qwen2AudioLM.from_dict(config, str(folder / "config.json"))
        load_weights(model, folder, dtype=dtype, device=device, quantization=quantization, layout=layout(model.config))
        tokenizer = BpeTokenizer.from_folder(folder)
        chat = cls(model.eval(), tokenizer, _generation_config(folder, tokenizer), engine)
        chat.quantization = quantization
        return chat

    def default_tokenizer(self) -> BpeTokenizer:
        return self.tokenizer

    def concurrency(self) -> int:
        return self.engine.config.max_batch

    def _answer(self, tokenizer, conversation, cfg, cancel):
        return self.engine.answer(tokenizer, conversation, cfg, cancel)

    def _answer_batch(self, tokenizer, conversations, cfg):
        return self.engine.answer_batch(tokenizer, conversations, cfg)

    def _transcribe(self, tokenizer, source, request, cfg):
        raise OptionError("transcribing long audio with Qwen2-Audio is not supported yet: ask about a clip instead")


def _generation_config(folder: Path, tokenizer: BpeTokenizer) -> GenerationConfig:
    """The checkpoint's sampling options, with <|endoftext|> as the end and the padding."""
    end = tokenizer.special_id("<|endoftext|>")
    values: dict = {"eos_token_id": end, "pad_token_id": end}
    path = folder / "generation_config.json"
    if path.is_file():
        found = json.loads(path.read_text())
        values |= {k: found[k] for k in _GENERATION_FIELDS if isinstance(found.get(k), (int, float, bool))}
    return GenerationConfig().updated(**values)
