"""Qwen's BPE with the audio special-token table, `from_list_format`, audio spans and the ChatML prompt.

The tokenizer does no I/O beyond reading its table: the caller says how long each clip's span is.
"""

from __future__ import annotations

import base64
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import PromptError, TokenizerError
from .messages import AUDIO_END, AUDIO_START, Audio, Conversation

PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_PAD = "[[[AUDIO:modality]]]"  # fills a clip's span in the prompt
LANGUAGES = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")
MAX_TIMESTAMP_CS = 3000  # timestamps run <|0.00|> .. <|30.00|> in 10 ms steps


def timestamp_token(seconds: float) -> str:
    """`<|2.33|>` for 2.33 s: the form timestamps take in prompts and answers."""
    return f"<|{seconds:.2f}|>"


# The audio table, in the order the published tokenizer numbers it (after <|extra_204|>).
AUDIO_SPECIAL_TOKENS: tuple[str, ...] = (
    AUDIO_PAD,
    "<|startoftranscript|>",
    "<|startofanalysis|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|caption|>",
    "<|keyword|>",
    "<|unknown|>",
    *(f"<|{lang}|>" for lang in LANGUAGES),
    "<|zh_tr|>",
    "<|notimestamps|>",
    "<|sil|>",
    "<|timestamps|>",
    *(timestamp_token(i * 0.01) for i in range(MAX_TIMESTAMP_CS + 1)),
    "<|caption_audiocaps|>",
    "<|caption_clotho|>",
    "<|audioset_ontology|>",
    "<|caption_plain|>",
    "<|itn|>",
    "<|wo_itn|>",
    "<|startofentityvalue|>",
    "<|endofentityvalue|>",
    "<|startofentitytype|>",
    "<|endofentitytype|>",
    "<|named_entity_recognition|>",
    "<|audio_grounding|>",
    "<|startofword|>",
    "<|endofword|>",
    "<|delim|>",
    "<|emotion_recognition|>",
    "<|music_description|>",
    "<|note_analysis|>",
    "<|pitch|>",
    *(f"<|midi_pitch_{i}|>" for i in range(128)),
    "<|velocity|>",
    *(f"<|midi_velocity_{i}|>" for i in range(128)),
    "<|sonic|>",
    "<|instrument|>",
    "<|speaker_meta|>",
    "<|song_meta|>",
    "<|question|>",
    "<|answer|>",
    "<|choice|>",
    "<|scene|>",
    "<|event|>",
    "<|vocal_classification|>",
    "<|speech_understanding|>",
    "<|scenario|>",
    "<|action|>",
    "<|entities|>",
    "<|speech_edit|>",
    AUDIO_START,
    AUDIO_END,
)
SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    *(f"<|extra_{i}|>" for i in range(205)),
    *AUDIO_SPECIAL_TOKENS,
)
DEFAULT_SYSTEM = "You are a helpful assistant."
_AUDIO_URL = re.compile(re.escape(AUDIO_START) + r"(.*?)" + re.escape(AUDIO_END), re.DOTALL)


def load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a `qwen.tiktoken` table: one `base64(token) rank` pair per line."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer table not found: {path}")
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:
            raise TokenizerError(f"{path}:{n}: not a 'base64 rank' pair ({e})") from e
    if not ranks:
        raise TokenizerError(f"{path}: the tokenizer table is empty")
    return ranks


def from_list_format(items: Iterable[dict]) -> str:
    """Join `[{'audio': path}, {'text': t}, ...]` into one query, numbering clips from 1.

    An audio item may also be in-memory audio (bytes, a 16 kHz array, or (array, sample_rate)):
    it is kept under a `memory://` name that stands in the tag.
    """
    text, n_audio = "", 0
    for item in items:
        if "audio" in item:
            n_audio += 1
            source = item["audio"]
            if not isinstance(source, (str, os.PathLike)):
                from .audio import remember

                source = remember(source)
            text += f"Audio {n_audio}:{AUDIO_START}{os.fspath(source)}{AUDIO_END}\n"
        elif "text" in item:
            text += item["text"]
        else:
            raise PromptError(f"unsupported item {item!r}: expected {{'audio': path}} or {{'text': str}}")
    return text


def extract_audio_urls(text: str) -> list[str]:
    """The paths inside `<audio>...</audio>` tags, in order."""
    return _AUDIO_URL.findall(text)


class QwenTokenizer:
    """Byte-level BPE (tiktoken) plus the special-token table of Qwen-Audio.

    Special ids start at `len(ranks)`. `audio_start_id`, when given (from config.json), must equal
    the id this table assigns to `<audio>`.
    """

    def __init__(self, ranks: dict[bytes, int], *, audio_start_id: int | None = None, name: str = "qwen"):
        import tiktoken

        self.ranks = ranks
        self.special_tokens = {tok: len(ranks) + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id = self.special_tokens[IM_START]
        self.im_end_id = self.special_tokens[IM_END]
        self.audio_start_id = self.special_tokens[AUDIO_START]
        self.audio_end_id = self.special_tokens[AUDIO_END]
        self.audio_pad_id = self.special_tokens[AUDIO_PAD]
        if audio_start_id is not None and audio_start_id != self.audio_start_id:
            raise TokenizerError(
                f"{name}: the tokenizer table gives <audio> id {self.audio_start_id}, but the model's "
                f"config says audio_start_id = {audio_start_id}; the table and the checkpoint do not belong together"
            )
        self.audio_specials = frozenset(AUDIO_SPECIAL_TOKENS)
        self._enc = tiktoken.Encoding(name, pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=self.special_tokens)
        self._id_to_special = {i: t for t, i in self.special_tokens.items()}

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **_ignored) -> "QwenTokenizer":
        """Load `qwen.tiktoken` from a checkpoint folder or hub id, checked against its config.json."""
        from .config import ModelConfig
        from .hub import resolve_checkpoint

        folder = resolve_checkpoint(name_or_path)
        audio_start_id = None
        if (folder / "config.json").is_file():
            audio_start_id = ModelConfig.from_json(folder / "config.json").audio.audio_start_id
        return cls(load_ranks(folder / "qwen.tiktoken"), audio_start_id=audio_start_id, name=str(folder))

    def __len__(self) -> int:
        return self._enc.n_vocab

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    def encode(self, text: str, *, allowed_special="all", audio_spans: Sequence[int] | None = None) -> list[int]:
        """NFC-normalise and encode `text`; special tokens in `allowed_special` are recognised.

        With `audio_spans`, each `<audio>path</audio>` becomes `<audio>` + pad * (span - 2) + `</audio>`
        (one span per tag, in order); without it the path's own tokens are kept.
        """
        text = unicodedata.normalize("NFC", text)
        if not allowed_special:
            return self._enc.encode_ordinary(text)
        allowed = allowed_special if allowed_special == "all" else set(allowed_special)
        ids = self._enc.encode(text, allowed_special=allowed, disallowed_special=())
        return self._expand_audio(ids, audio_spans, text)

    def _expand_audio(self, ids: list[int], spans: Sequence[int] | None, text: str) -> list[int]:
        out, i, k = [], 0, 0
        while i < len(ids):
            if ids[i] != self.audio_start_id:
                out.append(ids[i])
                i += 1
                continue
            try:
                end = ids.index(self.audio_end_id, i + 1)
            except ValueError:
                raise PromptError(
                    f"unclosed {AUDIO_START} tag in {text[:80]!r}: every {AUDIO_START}path needs a {AUDIO_END}"
                ) from None
            if spans is None:
                out.extend(ids[i : end + 1])
            else:
                if k >= len(spans):
                    raise PromptError(f"more {AUDIO_START} tags than audio spans given ({len(spans)})")
                out += [self.audio_start_id] + [self.audio_pad_id] * (spans[k] - 2) + [self.audio_end_id]
                k += 1
            i = end + 1
        return out

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self._enc.decode_bytes(list(ids))

    def decode(self, ids: Sequence[int], *, errors: str = "replace", audio_urls: Sequence[str] | None = None,
               skip_special_tokens: bool = False) -> str:
        """Decode ids to text; with `audio_urls`, each clip's span turns back into its path."""
        ids = [int(i) for i in ids]
        if audio_urls is not None:
            ids = self._restore_audio_urls(ids, audio_urls)
        if skip_special_tokens:
            ids = [i for i in ids if i < self.eod_id]
        return self._enc.decode(ids, errors=errors)

    def _restore_audio_urls(self, ids: list[int], urls: Sequence[str]) -> list[int]:
        out, i, k = [], 0, 0
        while i < len(ids):
            if ids[i] == self.audio_start_id and self.audio_end_id in ids[i + 1 :] and k < len(urls):
                end = ids.index(self.audio_end_id, i + 1)
                out += [self.audio_start_id] + self._enc.encode_ordinary(urls[k]) + [self.audio_end_id]
                k, i = k + 1, end + 1
            else:
                out.append(ids[i])
                i += 1
        return out

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[bytes | str]:
        return [self._id_to_special.get(i) or self._enc.decode_single_token_bytes(i) for i in ids]

    # The published tokenizer's helpers, for the tutorial's code.
    AUDIO_ST = AUDIO_SPECIAL_TOKENS
    from_list_format = staticmethod(from_list_format)
    extract_audio_urls = staticmethod(extract_audio_urls)

    def to_list_format(self, text: str) -> list[dict]:
        """Split a query back into `[{'audio': path}, {'text': t}]` items."""
        items, pos = [], 0
        for m in _AUDIO_URL.finditer(text):
            before = text[pos : m.start()]
            if before:
                items.append({"text": before})
            items.append({"audio": m.group(1)})
            pos = m.end()
        if text[pos:]:
            items.append({"text": text[pos:]})
        return items


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt ready for the model."""

    ids: list[int]  # prompt token ids (a chat prompt ends with "<|im_start|>assistant\n")
    clips: list  # the Audio parts of the kept turns and the question, in order of appearance
    n_dropped_turns: int = 0  # oldest history turns left out to fit max_window_size


def encode_parts(tokenizer: QwenTokenizer, parts: Sequence, span_of: Callable) -> list[int]:
    """Ids of Text and Audio parts (see `qwen_audio.messages`). A Text is encoded with only its own
    `specials` read as tokens (adjacent texts alike are encoded together, as one string would be);
    an Audio becomes `<audio>` + pad x (span - 2) + `</audio>`, with `span_of(audio)` its span."""
    ids: list[int] = []
    run, specials = "", None
    for part in [*parts, None]:
        if part is not None and not isinstance(part, Audio) and (specials is None or part.specials == specials):
            run, specials = run + part.text, part.specials
            continue
        if run:
            ids += tokenizer.encode(run, allowed_special=specials)
        run, specials = "", None
        if isinstance(part, Audio):
            ids += [tokenizer.audio_start_id] + [tokenizer.audio_pad_id] * (span_of(part) - 2) + [tokenizer.audio_end_id]
        elif part is not None:
            run, specials = part.text, part.specials
    return ids


def chat_prompt(tokenizer: QwenTokenizer, conversation, span_of: Callable, *, max_window_size: int = 6144) -> ChatPrompt:
    """The published ChatML prompt of a `messages.Conversation`; `span_of(audio)` gives a clip's span
    (see `audio.audio_length`).

    Each message is `<|im_start|>{role}\n{content}<|im_end|>`, its content encoded on its own, as the
    published `make_context` does. Oldest turns are dropped whole while system + history would reach
    `max_window_size` tokens.
    """
    nl = tokenizer.encode("\n")
    im_start, im_end = [tokenizer.im_start_id], [tokenizer.im_end_id]

    def message(role: str, parts) -> list[int]:
        return im_start + tokenizer.encode(role, allowed_special=()) + nl + encode_parts(tokenizer, parts, span_of) + im_end

    system_ids = message("system", conversation.system)
    context: list[int] = []
    history, question = conversation.turns[:-1], conversation.turns[-1]
    kept: list = []
    for turn in reversed(history):
        ids = nl + message("user", turn.query) + nl + message("assistant", turn.response or ())
        if len(system_ids) + len(ids) + len(context) >= max_window_size:
            break
        context = ids + context
        kept.insert(0, turn)
    ids = system_ids + context + nl + message("user", question.query) + nl + im_start + tokenizer.encode("assistant") + nl
    clips = Conversation(conversation.system, (*kept, question)).clips()
    return ChatPrompt(ids, clips, len(history) - len(kept))
