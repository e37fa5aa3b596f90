"""Qwen2-Audio's processor with the model card's API: the checkpoint's chat template, the log-mel of each
clip, and prompt ids in which each `<|AUDIO|>` stands for its clip's features.

    processor = AutoProcessor.from_pretrained("Qwen/Qwen2-Audio-7B-Instruct")
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, audio=[clip], return_tensors="pt", padding=True)
    ids = model.generate(**inputs, max_length=256)[:, inputs["input_ids"].shape[1]:]
    processor.batch_decode(ids, skip_special_tokens=True)

As in transformers, the text given to the processor is a template: the control tokens written in it
(`<|im_start|>`, `<|AUDIO|>`, ...) are read as tokens, so it must not hold untrusted text unescaped. For
text from users, `Qwen2AudioChat.respond` keeps text as text.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..errors import AudioError, CheckpointError, PromptError
from ..hub import resolve_checkpoint
from .bpe import BpeTokenizer
from .qwen2_audio import N_SAMPLES, encode_items, feature_lengths, log_mel

AUDIO_TOKEN = "<|AUDIO|>"

# transformers' clean_up_tokenization: spaces before punctuation and English contractions removed.
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class BatchFeature(dict):
    """The processor's output: a dict (so `**inputs` passes it to `generate`) whose keys are also
    attributes (`inputs.input_ids`), with `.to(device)` moving its tensors."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:  # the model card writes `inputs.input_ids = ....to("cuda")`
        self[name] = value

    def to(self, device) -> "BatchFeature":
        return BatchFeature({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


@dataclass(frozen=True)
class FeatureExtractor:
    """What the model card reads of the feature extractor (`processor.feature_extractor.sampling_rate`)."""

    sampling_rate: int = SAMPLE_RATE
    feature_size: int = 128
    n_samples: int = N_SAMPLES


class Qwen2AudioProcessor:
    """The chat template, the tokenizer and the feature extractor of one Qwen2-Audio checkpoint."""

    def __init__(self, tokenizer: BpeTokenizer, chat_template: str | None, feature_extractor: FeatureExtractor,
                 padding_side: str = "right", special_tokens: dict[str, str] | None = None):
        if padding_side not in ("left", "right"):
            raise CheckpointError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if feature_extractor.sampling_rate != SAMPLE_RATE or feature_extractor.n_samples != N_SAMPLES:
            raise CheckpointError(f"a feature extractor at {feature_extractor.sampling_rate} Hz over "
                                  f"{feature_extractor.n_samples} samples is not Qwen2-Audio's (16 kHz, 30 s)")
        self.tokenizer, self.chat_template = tokenizer, chat_template
        self.feature_extractor, self.padding_side = feature_extractor, padding_side
        self.special_tokens = dict(special_tokens or {})  # eos_token, pad_token, ... as the template sees them
        self.audio_token_id = tokenizer.special_id(AUDIO_TOKEN)
        self.pad_token_id = tokenizer.vocab.get(self.special_tokens.get("pad_token", "<|endoftext|>"), 0)
        # Control tokens are split off longest first, as transformers' added-token matching does.
        names = sorted(tokenizer.special, key=len, reverse=True)
        self._controls = re.compile("|".join(re.escape(t) for t in names)) if names else None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs) -> "Qwen2AudioProcessor":
        """A checkpoint folder or hub id. Reads both layouts: the hub's (transformers 4.x:
        `preprocessor_config.json`, the template in `chat_template.json` or `tokenizer_config.json`) and
        transformers 5's (`processor_config.json` nesting the feature extractor, `chat_template.jinja`)."""
        folder = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"))
        tokenizer_config = _json(folder / "tokenizer_config.json")
        processor_config = _json(folder / "processor_config.json")
        extractor = processor_config.get("feature_extractor") or _json(folder / "preprocessor_config.json")
        template = None
        for source in (folder / "chat_template.jinja", folder / "chat_template.json"):
            if source.is_file():
                text = source.read_text(encoding="utf-8")
                template = text if source.suffix == ".jinja" else json.loads(text).get("chat_template")
                break
        template = template or processor_config.get("chat_template") or tokenizer_config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        specials = {k: v for k, v in tokenizer_config.items() if k.endswith("_token") and isinstance(v, str)}
        extractor = FeatureExtractor(int(extractor.get("sampling_rate", SAMPLE_RATE)),
                                     int(extractor.get("feature_size", 128)), int(extractor.get("n_samples", N_SAMPLES)))
        return cls(BpeTokenizer.from_folder(folder), template, extractor,
                   str(tokenizer_config.get("padding_side", "right")), specials)

    # -- the chat template ----------------------------------------------------------------------------------

    def apply_chat_template(self, conversation, add_generation_prompt: bool = False, tokenize: bool = False,
                            chat_template: str | None = None, **kwargs):
        """The checkpoint's template rendered for one conversation (a list of {"role", "content"} dicts) or
        several (a list of such lists): a string each, or their ids with `tokenize=True`."""
        template = chat_template or self.chat_template
        if template is None:
            raise CheckpointError("this checkpoint has no chat template (chat_template.jinja, chat_template.json "
                                  "or tokenizer_config.json): write the prompt text yourself")
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        rendered = [_render(template, list(c), add_generation_prompt, {**self.special_tokens, **kwargs})
                    for c in (conversation if batched else [conversation])]
        out = [self.encode(t) for t in rendered] if tokenize else rendered
        return out if batched else out[0]

    def chat_ids(self, messages: Sequence[tuple[str, str | Sequence[str | int]]], add_generation_prompt: bool = True,
                 ) -> list[int]:
        """The prompt ids of `messages` ((role, content) pairs; a clip in the content is its number of features)
        through this checkpoint's own template, as `processor(apply_chat_template(...))` gives them, with text
        kept as data: each text part enters the template as a unique placeholder, so only the template's own
        characters can become control tokens, and a typed `<|im_end|>` stays characters. (A template that
        transforms the text itself, e.g. `| trim`, would transform the placeholder instead.)"""
        if self.chat_template is None:
            raise CheckpointError("this checkpoint has no chat template: write the prompt text yourself")
        nonce = secrets.token_hex(8)
        marker = re.compile(f"\ue000{nonce}(\\d+)\ue001")
        texts: list[str] = []
        counts: list[int] = []

        def placeholder(text: str) -> str:
            texts.append(text)
            return f"\ue000{nonce}{len(texts) - 1}\ue001"

        conversation = []
        for role, content in messages:
            parts = [content] if isinstance(content, str) else list(content)
            if len(parts) == 1 and isinstance(parts[0], str):  # text alone: a string, as the model card writes it
                conversation.append({"role": role, "content": placeholder(parts[0])})
                continue
            items = []
            for part in parts:
                if isinstance(part, str):
                    items.append({"type": "text", "text": placeholder(part)})
                else:
                    counts.append(int(part))
                    items.append({"type": "audio", "audio_url": f"clip {len(counts)}"})
            conversation.append({"role": role, "content": items})
        rendered = _render(self.chat_template, conversation, add_generation_prompt, self.special_tokens)
        # Runs of text (template and data alike) between the template's control tokens, as the processor's
        # tokenizer sees them; only the template's stretches are searched for control tokens.
        items: list[str | int] = []
        at = 0
        for m in [*marker.finditer(rendered), None]:
            end = m.start() if m is not None else len(rendered)
            cut = 0
            template_text = rendered[at:end]
            for c in self._controls.finditer(template_text) if self._controls else ():
                items += [template_text[cut:c.start()], self.tokenizer.vocab[c.group()]]
                cut = c.end()
            items.append(template_text[cut:])
            if m is not None:
                items.append(texts[int(m.group(1))])
                at = m.end()
        if items.count(self.audio_token_id) != len(counts):
            raise PromptError(f"the chat template wrote {items.count(self.audio_token_id)} <|AUDIO|> tokens for "
                              f"{len(counts)} clip(s)")
        clips = iter(counts)  # each clip's one <|AUDIO|> becomes its features' count of them, as the processor's
        items = [x for item in items for x in ([item] * next(clips) if item == self.audio_token_id else [item])]
        return encode_items(self.tokenizer, items)

    # -- prompt ids and features ----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Ids of template text: control tokens written in it are tokens, the rest is BPE."""
        if not isinstance(text, str):
            raise PromptError(f"text must be a string, got {type(text).__name__}")
        ids, at = [], 0
        for m in self._controls.finditer(text) if self._controls else ():
            ids += self.tokenizer.encode(text[at:m.start()]) if m.start() > at else []
            ids.append(self.tokenizer.vocab[m.group()])
            at = m.end()
        return ids + (self.tokenizer.encode(text[at:]) if at < len(text) else [])

    def __call__(self, text=None, audio=None, audios=None, sampling_rate: int | None = None,
                 return_tensors: str | None = "pt", padding: bool | str = False, **kwargs) -> BatchFeature:
        """`text` (one string or a list) with one `<|AUDIO|>` per clip, and the clips (`audio=`, or the model
        card's `audios=`): 16 kHz float arrays, in the order their `<|AUDIO|>` tokens appear. Returns
        input_ids and attention_mask [B, L] (padded on the tokenizer's side when `padding`), and for the clips
        input_features [n, 128, 3000] and feature_attention_mask [n, 3000]."""
        if audio is not None and audios is not None:
            raise PromptError("give the clips as audio= or audios=, not both")
        clips = audio if audio is not None else audios
        if return_tensors not in (None, "pt"):
            raise PromptError(f"return_tensors={return_tensors!r}: only 'pt' (torch tensors) is supported")
        if sampling_rate is not None and sampling_rate != self.feature_extractor.sampling_rate:
            raise AudioError(f"the clips must be sampled at {self.feature_extractor.sampling_rate} Hz, "
                             f"got sampling_rate={sampling_rate}: resample them first")
        texts = [text] if isinstance(text, str) else list(text or [])
        clips = [] if clips is None else [clips] if isinstance(clips, np.ndarray) and clips.ndim == 1 else list(clips)
        mels, frames = [], []
        for i, clip in enumerate(clips):
            samples = np.asarray(clip, dtype=np.float32)
            if samples.ndim != 1 or not len(samples):
                raise AudioError(f"clip {i} must be a non-empty 1-D array of samples, got shape {samples.shape}")
            mel, n = log_mel(torch.from_numpy(samples[:N_SAMPLES]))  # as transformers, the first 30 s
            mels.append(mel)
            frames.append(n)
        counts = feature_lengths(torch.tensor(frames, dtype=torch.long))[1].tolist() if frames else []
        rows, used = [], 0
        for t in texts:
            ids = []
            for i in self.encode(t):
                if i != self.audio_token_id:
                    ids.append(i)
                    continue
                if used >= len(counts):
                    raise PromptError(f"the text has more <|AUDIO|> tokens than the {len(counts)} clip(s) given")
                ids += [i] * counts[used]
                used += 1
            rows.append(ids)
        if used != len(counts):
            raise PromptError(f"{len(counts)} clip(s) given but the text has {used} <|AUDIO|> token(s)")
        out = BatchFeature(self._pad(rows, padding))
        if mels:
            out["input_features"] = torch.stack(mels)
            out["feature_attention_mask"] = (torch.arange(mels[0].shape[-1])[None] < torch.tensor(frames)[:, None]).int()
        return out

    def _pad(self, rows: list[list[int]], padding) -> dict:
        width = max((len(r) for r in rows), default=0)
        if not padding and len({len(r) for r in rows}) > 1:
            raise PromptError("texts of different lengths need padding=True")
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            at = width - len(r) if self.padding_side == "left" else 0
            ids[i, at:at + len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, at:at + len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    # -- text back ------------------------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False, **kwargs) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        text = self.tokenizer.full.decode(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces:
            for old, new in _CLEANUP:
                text = text.replace(old, new)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False,
                     **kwargs) -> list[str]:
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]


def _json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from None
    return found if isinstance(found, dict) else {}


def _render(template: str, messages: list, add_generation_prompt: bool, extra: dict) -> str:
    """A chat template rendered as transformers renders it: a sandboxed Jinja environment (a template from
    a hub is untrusted code) with trimmed blocks."""
    import jinja2

    try:
        return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)
    except jinja2.TemplateError as e:  # an undefined field, a sandbox refusal
        raise PromptError(f"the chat template cannot render this conversation: {type(e).__name__}: {e}") from None


_TEMPLATES: dict[str, object] = {}


def _compiled(template: str):
    if template not in _TEMPLATES:
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise PromptError(f"the chat template refused the conversation: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.globals["raise_exception"] = raise_exception
        env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
        try:
            _TEMPLATES[template] = env.from_string(template)
        except jinja2.TemplateSyntaxError as e:
            raise CheckpointError(f"the chat template does not parse: {e}") from None
    return _TEMPLATES[template]


def audio_runs(ids: Sequence[int], audio_token_id: int) -> list[tuple[int, int]]:
    """(first, last) index of each run of `<|AUDIO|>` tokens in `ids`."""
    spans, start = [], None
    for i, t in enumerate([*ids, None]):
        if t == audio_token_id and start is None:
            start = i
        elif t != audio_token_id and start is not None:
            spans.append((start, i - 1))
            start = None
    return spans
