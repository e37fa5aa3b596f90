"""Qwen2-Audio behind the project's `Backend` interface: `chat`, `chat_stream`, `chat_batch`, `respond` and
`transcribe`, written by the same engine (prefix cache, scheduler) as the v1 model, plus the model card's
`generate` for `Qwen2AudioProcessor`'s output.

    model, tokenizer = qwen_audio.load("Qwen/Qwen2-Audio-7B-Instruct")   # config.json: model_type "qwen2_audio"
    stream = model.respond([Message("user", [Audio("clip.wav"), Text("What's that sound?")])])
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from ..audio import SAMPLE_RATE, source_key
from ..backend import Backend
from ..config import read_json
from ..engine import Engine, EngineConfig, Prepared
from ..errors import CheckpointError, OptionError, PromptError
from ..hub import resolve_checkpoint
from ..messages import Audio, Conversation, Text, unlabelled
from ..options import IGNORED_LOAD_KWARGS, GenerationConfig
from ..placement import placement
from ..quantize import Quantization
from ..transcribe import open_windows, stitch
from ..weights import load_weights, save_quantized, saved_quantization
from .bpe import BpeTokenizer
from .processor import Qwen2AudioProcessor, audio_runs
from .qwen2_audio import DEFAULT_SYSTEM, Qwen2AudioLM, audio_frames, chat_ids, feature_lengths, layout, log_mel

DEFAULT_MODEL = "Qwen/Qwen2-Audio-7B-Instruct"

# generation_config.json fields taken as they are (the others are transformers' own).
_GENERATION_FIELDS = ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "max_new_tokens")


class Qwen2AudioEngine(Engine):
    """The engine's preparing for Qwen2-Audio: its chat template, and each clip's 128-bin log-mel encoded
    over the whole window (so features depend on the clip alone and are kept by the clip)."""

    DROPS_LAST_AT_LENGTH = False  # transformers' generate keeps every token
    # The checkpoint's processor, whose chat template writes the prompts (set by `Qwen2AudioChat.from_pretrained`);
    # None, or a checkpoint without a template (the base model): the Instruct template's structure (`chat_ids`).
    processor: Qwen2AudioProcessor | None = None

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

        # No system message of the caller's (the API fills in the default): the template writes its own default.
        own_system = conversation.system and conversation.system != (Text(DEFAULT_SYSTEM),)
        messages = [("system", content(conversation.system))] if own_system else []
        for turn in conversation.turns:
            messages.append(("user", content(turn.query)))
            if turn.response is not None:
                messages.append(("assistant", content(turn.response)))
        template = self.processor is not None and self.processor.chat_template is not None
        ids = self.processor.chat_ids(messages) if template else chat_ids(tokenizer, messages)
        limit = self.model.config.max_position_embeddings
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
            found = self.encode_batch("qwen2-audio", [(key, mel, frames)])[0]  # with clips of prompts prepared meanwhile
            self.features.put(key, found)
        return found

    def _encode_clips(self, group: str, mels: list[torch.Tensor], frames: list[int]) -> list[torch.Tensor]:
        """Whole-window log-mels [128, 3000] (a clip's features depend on it alone) and each clip's frames before
        padding -> features [n, dim]."""
        return self.model.embed_audio(torch.stack(mels).to(self.model.device), torch.tensor(frames))

    @torch.inference_mode()
    def prepare_ids(self, rows: list[list[int]], mels: torch.Tensor | None, mel_mask: torch.Tensor | None,
                    cfg: GenerationConfig) -> list[Prepared]:
        """Prompts given as ids (the processor's, padding removed), each run of `<|AUDIO|>` tokens taking the
        next clip of `mels` [n, 128, 3000] (its frames: `mel_mask` [n, 3000]) in row-major order, as
        transformers assigns them. Clips are named by their content, so a prompt sent again reuses its keys."""
        self._check_weights()
        feats, keys = [], []
        if mels is not None:
            mels = torch.as_tensor(mels).float().cpu()
            frames = (torch.as_tensor(mel_mask).sum(-1) if mel_mask is not None
                      else torch.full((len(mels),), mels.shape[-1])).long().cpu()
            keys = [("mel", hashlib.sha256(m.numpy().tobytes()).hexdigest(), int(f)) for m, f in zip(mels, frames)]
            feats = [self.features.get(k) for k in keys]  # a clip sent again is not encoded again
            todo = [i for i, f in enumerate(feats) if f is None]
            if todo:
                for i, f in zip(todo, self.model.embed_audio(mels[todo].to(self.model.device), frames[todo])):
                    feats[i] = f
                    self.features.put(keys[i], f)
        limit, out, used = self.model.config.max_position_embeddings, [], 0
        for row, ids in enumerate(rows):
            if not ids:
                raise PromptError(f"row {row} of input_ids has no tokens its attention_mask keeps")
            if len(ids) >= limit:
                raise PromptError(f"row {row}'s prompt is {len(ids)} tokens, longer than the model's window of {limit}")
            spans, audio = [], []
            for first, last in audio_runs(ids, self.model.audio_token_id):
                if used >= len(feats):
                    raise PromptError(f"row {row} has more <|AUDIO|> runs than the {len(feats)} clip(s) given")
                if last - first + 1 != len(feats[used]):
                    raise PromptError(f"row {row}: a run of {last - first + 1} <|AUDIO|> tokens where clip {used} "
                                      f"has {len(feats[used])} features (use the processor's ids and features together)")
                spans.append((first, last, keys[used]))
                audio.append(feats[used])
                used += 1
            out.append(Prepared(ids, audio, spans, 1.0, min(cfg.max_new_tokens, limit - len(ids))))
        if used != len(feats):
            raise PromptError(f"{len(feats)} clip(s) given but the prompts have {used} <|AUDIO|> run(s)")
        return out

    def stop_ids(self, tokenizer: BpeTokenizer, cfg: GenerationConfig) -> set[int]:
        return {tokenizer.special_id("<|im_end|>"), tokenizer.special_id("<|endoftext|>"), cfg.eos_token_id}

    def complete(self, *args, **kwargs):
        # Engine.complete builds v1's raw task prompts; Qwen2-Audio's base prompts are text for its processor.
        raise OptionError("Qwen2-Audio's base-model prompts go through its processor and generate: "
                          "processor(text='<|audio_bos|><|AUDIO|><|audio_eos|>...', audio=[clip]), then model.generate")


class Qwen2AudioChat(Backend):
    """Qwen2-Audio-Instruct with the project's chat API. Holds the weights (`model`), the tokenizer and the
    engine that writes its answers."""

    def __init__(self, model: Qwen2AudioLM, tokenizer: BpeTokenizer, generation_config: GenerationConfig,
                 engine: EngineConfig = EngineConfig()):
        self.model, self.tokenizer, self.generation_config = model, tokenizer, generation_config
        # CUDA graphs capture v1's decode step (its forward's signature); on a GPU this model decodes eagerly.
        self.engine = Qwen2AudioEngine(model, replace(engine, cuda_graphs=False))
        self.quantization: Quantization | None = None  # how the weights are stored, when not in float
        # The ids that end `generate`: generation_config.json's eos_token_id (one or a list).
        self.end_ids = frozenset({generation_config.eos_token_id})
        self.processor: Qwen2AudioProcessor | None = None  # the checkpoint's chat template and feature extractor
        self.name_or_path: Path | None = None  # the checkpoint folder

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
                                  dtype if dtype is not None else torch_dtype, {}, folder,
                                  quantization or saved_quantization(folder))
        with torch.device("meta"):
            model = Qwen2AudioLM.from_dict(config, str(folder / "config.json"))
        load_weights(model, folder, dtype=dtype, device=device, quantization=quantization, layout=layout(model.config))
        tokenizer = BpeTokenizer.from_folder(folder)
        generation_config, end_ids = _generation_config(folder, tokenizer)
        chat = cls(model.eval(), tokenizer, generation_config, engine)
        chat.end_ids, chat.processor = end_ids, Qwen2AudioProcessor.from_pretrained(folder)
        chat.engine.processor = chat.processor
        chat.quantization, chat.name_or_path = quantization or saved_quantization(folder), folder
        return chat

    def save_quantized(self, folder: str | os.PathLike) -> Path:
        """Write this quantized model as a checkpoint folder that `load` reads with no conversion (int8
        weights memory-mapped), with the source's config, tokenizer, processor and chat template."""
        if self.quantization is None:
            raise OptionError("this model is not quantized: load it with quantize='int8' or 'int4' first")
        if self.name_or_path is None:
            raise OptionError("this model was not loaded from a checkpoint folder: its config cannot be copied")
        return save_quantized(self.model, self.quantization, folder, self.name_or_path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- the model card's API (with `Qwen2AudioProcessor`) --------------------------------------------------

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 input_features: torch.Tensor | None = None, feature_attention_mask: torch.Tensor | None = None, *,
                 max_length: int | None = None, max_new_tokens: int | None = None,
                 generation_config: GenerationConfig | None = None, eos_token_id: int | Sequence[int] | None = None,
                 **options) -> torch.Tensor:
        """transformers' `generate` for the processor's output: [B, L + new] ids, each row its prompt (as
        given, padding included) then its answer up to and with the end token, then `pad_token_id`.

        The rows are written side by side by the scheduler, each as it would be alone: padding on either
        side changes nothing (transformers' own right-padded batches continue after the padding).
        `max_new_tokens`, else `max_length` (prompt included), else the generation config's cap; other
        keyword arguments are generation options (`do_sample`, `temperature`, `top_p`, ...)."""
        ids = torch.as_tensor(input_ids)
        if ids.ndim != 2:
            raise PromptError(f"input_ids must be [batch, length], got shape {tuple(ids.shape)}")
        mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
        if mask.shape != ids.shape:
            raise PromptError(f"attention_mask {tuple(mask.shape)} does not match input_ids {tuple(ids.shape)}")
        cfg = self.options(generation_config, **options)
        if max_new_tokens is None and max_length is not None:
            max_new_tokens = max_length - ids.shape[1]
            if max_new_tokens <= 0:
                raise OptionError(f"max_length={max_length} leaves no room after the {ids.shape[1]}-token prompt")
        if max_new_tokens is not None:
            cfg = cfg.updated(max_new_tokens=max_new_tokens)
        stop = set(self.end_ids if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
        rows = self.engine.prepare_ids([r[m.bool()].tolist() for r, m in zip(ids.cpu(), mask.cpu())],
                                       input_features, feature_attention_mask, cfg)
        streams = [self.engine.tokens(p, cfg, stop) for p in rows]
        try:
            answers = [list(s) for s in streams]
        finally:
            for s in streams:
                s.close()
        new = torch.full((len(answers), max(map(len, answers), default=0)), cfg.pad_token_id, dtype=ids.dtype)
        for i, a in enumerate(answers):
            new[i, :len(a)] = torch.tensor(a, dtype=ids.dtype)
        return torch.cat([ids, new.to(ids.device)], dim=1)

    def default_tokenizer(self) -> BpeTokenizer:
        return self.tokenizer

    def concurrency(self) -> int:
        return self.engine.config.max_batch

    def _answer(self, tokenizer, conversation, cfg, cancel):
        return self.engine.answer(tokenizer, conversation, cfg, cancel)

    def _answer_batch(self, tokenizer, conversations, cfg):
        return self.engine.answer_batch(tokenizer, conversations, cfg)

    def _transcribe(self, tokenizer, source, request, cfg):
        """Consecutive 30 s windows, each asked for its words: with the base model's task prompt (the one
        Qwen2-Audio's evaluation uses), or, on a chat checkpoint, an instruction in its chat template.
        Qwen2-Audio writes no timestamps, so windows are cut every 30 s (a word on a boundary can be cut)."""
        if request.timestamps:
            raise OptionError("Qwen2-Audio writes no timestamps: transcribe with timestamps=False (Qwen-Audio's "
                              "checkpoints give them)")
        if self.processor is None:
            raise OptionError("this model was not loaded from a checkpoint folder: its processor (chat template, "
                              "feature extractor) is needed to transcribe")
        language, target = request.language, request.target or (request.language if request.task == "transcribe" else "en")
        prompt = _task_text(request.task, language, target, chat=self.processor.chat_template is not None)
        name, windows, total = open_windows(source)

        def decode(start: int, end: int) -> str:
            samples = windows.samples(start, end)
            if self.processor.chat_template is None:
                text = f"<|audio_bos|><|AUDIO|><|audio_eos|>{prompt}"
            else:
                chat = [{"role": "user", "content": [{"type": "audio", "audio_url": name}, {"type": "text", "text": prompt}]}]
                text = self.processor.apply_chat_template(chat, add_generation_prompt=True)
            inputs = self.processor(text=text, audio=[samples])
            p = self.engine.prepare_ids([inputs["input_ids"][0].tolist()], inputs["input_features"],
                                        inputs["feature_attention_mask"], cfg)[0]
            stop = self.engine.stop_ids(self.tokenizer, cfg) | set(self.end_ids)
            ids = [t for t in self.engine.tokens(p, cfg, stop, keep=False) if t not in stop]
            return self.tokenizer.decode(ids).strip()

        return target or "", stitch(windows, decode), lambda: windows.n_read / SAMPLE_RATE, total


_LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "de": "German", "es": "Spanish", "ko": "Korean", "fr": "French",
                   "ja": "Japanese", "it": "Italian", "ru": "Russian", "pt": "Portuguese", "ar": "Arabic", "nl": "Dutch"}


def _task_text(task: str, language: str | None, target: str | None, chat: bool) -> str:
    """What a window is asked: the base model's task prompt (Qwen2-Audio's evaluation: "Detect the language
    and recognize the speech: <|en|>"), or for a chat checkpoint an instruction."""
    if task not in ("transcribe", "translate"):
        raise OptionError(f"task must be 'transcribe' or 'translate', got {task!r}")
    into = _LANGUAGE_NAMES.get(target or "", target)
    if not chat:
        tag = f" <|{language}|>" if language else ""
        if task == "transcribe":
            return f"Detect the language and recognize the speech:{tag}"
        return f"Detect the language and translate the speech into {into}:{tag}"
    spoken = f" It is spoken in {_LANGUAGE_NAMES.get(language, language)}." if language else ""
    if task == "transcribe":
        return f"Transcribe the speech in this audio word for word.{spoken} Reply with the transcript only."
    return f"Translate the speech in this audio into {into}.{spoken} Reply with the translation only."


# The model card's name for it.
Qwen2AudioForConditionalGeneration = Qwen2AudioChat


def _generation_config(folder: Path, tokenizer: BpeTokenizer) -> tuple[GenerationConfig, frozenset[int]]:
    """The checkpoint's sampling options (generation_config.json over transformers' defaults), with
    <|endoftext|> as the end and the padding, and the ids that end `generate` (its eos_token_id, one or a
    list)."""
    end = tokenizer.special_id("<|endoftext|>")
    values: dict = {"eos_token_id": end, "pad_token_id": end}
    found = read_json(folder / "generation_config.json", CheckpointError) if (folder / "generation_config.json").is_file() else {}
    found = found if isinstance(found, dict) else {}
    values |= {k: found[k] for k in _GENERATION_FIELDS if isinstance(found.get(k), (int, float, bool))}
    if isinstance(found.get("pad_token_id"), int):
        values["pad_token_id"] = found["pad_token_id"]
    eos = found.get("eos_token_id")
    ends = [eos] if isinstance(eos, int) else [e for e in eos if isinstance(e, int)] if isinstance(eos, list) else []
    # What the file does not set is transformers' default: greedy, top_k 50 and top_p 1 when sampling.
    return GenerationConfig(do_sample=False, top_p=1.0, top_k=50).updated(**values), frozenset(ends or [end])
