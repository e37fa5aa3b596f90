"""What a conversation is made of, before any tokenizer sees it: text parts and audio parts.

Two ways in, one shape out (`Conversation`):

* the tutorial's strings, `tagged_parts("Audio 1:<audio>a.wav</audio>\\nwhat is it?")`: the
  published semantics, where `<audio>PATH</audio>` in text names a clip to open and the audio
  table's special tokens (`<|en|>`, `<|2.33|>`, ...) are read as tokens;
* structured messages, `Message("user", [Audio(data), Text("what is it?")])`, for callers that must
  not trust text: a `Text` is only text, whatever it contains (`<audio>`, `<|im_end|>`, a path).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence, Union

import numpy as np

from .errors import PromptError

AUDIO_START = "<audio>"
AUDIO_END = "</audio>"
ROLES = ("system", "user", "assistant")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class Text:
    """A piece of text. `specials` are the special-token strings read as tokens in it (none by default:
    the text is only text). The tutorial path passes the audio table, as the published code does."""

    text: str
    specials: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self):
        if not isinstance(self.text, str):
            raise PromptError(f"text must be a string, got {type(self.text).__name__}")
        try:
            self.text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate ("\ud800") is no character: no tokenizer can take it
            raise PromptError(f"text holds {self.text[e.start]!r} at index {e.start}, a lone surrogate that is "
                              "not a character") from None


@dataclass(frozen=True, eq=False)
class Audio:
    """A clip: a path (str or os.PathLike), encoded bytes, a 16 kHz mono float array, or (array, sample_rate).

    A path is opened because the caller put it here; nothing is fetched from the network except an
    http(s) URL written in a tutorial-style `<audio>` tag.
    """

    source: object
    name: str | None = None  # shown in messages; default: the path, or a description of the data

    def __post_init__(self):
        s = self.source
        ok = isinstance(s, (str, os.PathLike, bytes, bytearray, np.ndarray)) or (
            isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], np.ndarray))
        if not ok:
            raise PromptError(f"audio must be a path, bytes, an array or (array, sample_rate), got {type(s).__name__}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        s = self.source
        if isinstance(s, (str, os.PathLike)):
            return os.fspath(s)
        if isinstance(s, (bytes, bytearray)):
            return f"<{len(s)} bytes of audio>"
        array = s[0] if isinstance(s, tuple) else s
        return f"<audio array {tuple(array.shape)}>"

    def is_url(self) -> bool:
        return isinstance(self.source, str) and bool(_URL.match(self.source))


Part = Union[Text, Audio]


@dataclass(frozen=True)
class Message:
    """One message of a structured conversation. `content` is a string or a sequence of Text/Audio parts."""

    role: str  # "system", "user" or "assistant"
    content: tuple = ()

    def __post_init__(self):
        if self.role not in ROLES:
            raise PromptError(f"unknown role {self.role!r}; use one of {', '.join(ROLES)}")
        content = self.content
        if isinstance(content, str):
            content = (Text(content),)
        elif isinstance(content, (Text, Audio)):
            content = (content,)
        else:
            try:
                content = tuple(content)
            except TypeError:
                raise PromptError(f"{self.role} message content must be a string or a list of parts") from None
        for part in content:
            if not isinstance(part, (Text, Audio)):
                raise PromptError(f"{self.role} message part must be Text or Audio, got {type(part).__name__}")
        if self.role != "user" and any(isinstance(p, Audio) for p in content):
            raise PromptError(f"audio can only be given in user messages, not in a {self.role} message")
        object.__setattr__(self, "content", content)


@dataclass(frozen=True)
class Turn:
    """A question and, for turns already answered, the answer."""

    query: tuple[Part, ...]
    response: tuple[Part, ...] | None = None  # None: the question being asked


@dataclass(frozen=True)
class Conversation:
    """A system message and the turns so far; the last turn is the question to answer."""

    system: tuple[Part, ...]
    turns: tuple[Turn, ...]

    @property
    def question(self) -> Turn:
        return self.turns[-1]

    def clips(self) -> list[Audio]:
        """Every clip, in prompt order (system, then each turn's query and response)."""
        parts = list(self.system)
        for t in self.turns:
            parts += list(t.query) + list(t.response or ())
        return [p for p in parts if isinstance(p, Audio)]


# ---- the tutorial's strings ----------------------------------------------------------------------------


def _audio_table_specials() -> frozenset[str]:
    from .tokenizer import AUDIO_SPECIAL_TOKENS

    return frozenset(AUDIO_SPECIAL_TOKENS) - {AUDIO_START, AUDIO_END}


def tagged_parts(text: str, what: str = "query") -> tuple[Part, ...]:
    """Split a tutorial-style string into parts: each `<audio>PATH</audio>` is a clip (a path, an http(s)
    URL, or a `memory://` name from `from_list_format`); the rest is text in which the audio table's
    special tokens are tokens (the published semantics). Tags must pair up: an unclosed `<audio>`, a
    stray `</audio>` or a tag inside a path is a PromptError naming it."""
    if not isinstance(text, str):
        raise PromptError(f"{what} must be a string (use tokenizer.from_list_format), got {type(text).__name__}")
    specials = _audio_table_specials()
    parts: list[Part] = []
    pos = 0
    while True:
        start, stray = text.find(AUDIO_START, pos), text.find(AUDIO_END, pos)
        if stray != -1 and (start == -1 or stray < start):
            raise PromptError(f"stray {AUDIO_END} without an {AUDIO_START} in {what}: "
                              f"...{text[max(0, stray - 40):stray + 8]!r}")
        if start == -1:
            break
        end = text.find(AUDIO_END, start + len(AUDIO_START))
        if end == -1:
            raise PromptError(f"unclosed {AUDIO_START} tag in {what} {text[start:start + 80]!r}: "
                              f"every {AUDIO_START}path needs a {AUDIO_END}")
        path = text[start + len(AUDIO_START):end]
        if AUDIO_START in path:
            raise PromptError(f"{AUDIO_START} inside the audio path {path[:80]!r} in {what}")
        if not path.strip() or "\n" in path or "\r" in path:
            raise PromptError(f"not an audio path: {path[:80]!r} in {what} (empty, or it spans lines)")
        if start > pos:
            parts.append(Text(text[pos:start], specials))
        parts.append(Audio(path))
        pos = end + len(AUDIO_END)
    if pos < len(text):
        parts.append(Text(text[pos:], specials))
    return tuple(parts)


def tutorial_conversation(query: str, history: Sequence[tuple[str, str]], system: str) -> Conversation:
    """The conversation the published `model.chat(tokenizer, query, history, system)` sees."""
    turns = []
    for i, turn in enumerate(history):
        if not (isinstance(turn, (tuple, list)) and len(turn) == 2):
            raise PromptError(f"history entries must be (query, response) pairs, got {turn!r}")
        q, r = turn
        response = tagged_parts(r if r is not None else "", f"history[{i}] response")
        turns.append(Turn(tagged_parts(q, f"history[{i}] query"), response))
    turns.append(Turn(tagged_parts(query)))
    return Conversation(tagged_parts(system, "system message"), tuple(turns))


def copy_history(history) -> list[tuple[str, str]]:
    """A new list of (query, response) tuples: the caller's history is never changed."""
    return [tuple(t) if isinstance(t, (tuple, list)) else t for t in (history or [])]


# ---- structured messages ---------------------------------------------------------------------------------


def _timestamp_specials() -> frozenset[str]:
    from .tokenizer import MAX_TIMESTAMP_CS, timestamp_token

    return frozenset(timestamp_token(i * 0.01) for i in range(MAX_TIMESTAMP_CS + 1))


def labelled(parts: Iterable[Part]) -> tuple[Part, ...]:
    """A user message as `from_list_format` lays it out: each clip as `Audio k:<clip>\\n`, k from 1."""
    out: list[Part] = []
    k = 0
    for p in parts:
        if isinstance(p, Audio):
            k += 1
            out += [Text(f"Audio {k}:"), p, Text("\n")]
        else:
            out.append(p)
    return tuple(out)


def structured_conversation(messages: Sequence[Message], default_system: str) -> Conversation:
    """The conversation of `messages`: an optional system message first, then user and assistant
    messages in turn, ending with a user message. Text is only text; in assistant messages the
    timestamp tokens the model writes (`<|2.33|>`) are read back as tokens, as it wrote them."""
    messages = list(messages)
    for m in messages:
        if not isinstance(m, Message):
            raise PromptError(f"messages must be Message objects, got {type(m).__name__}")
    system: tuple[Part, ...] = (Text(default_system),)
    if messages and messages[0].role == "system":
        system = messages.pop(0).content
    if not messages or messages[-1].role != "user":
        raise PromptError("the last message must be the user's question")
    for i, m in enumerate(messages):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise PromptError(f"message {i + 1} after the system message is a {m.role!r} message where a {want!r} "
                              "one belongs: user and assistant messages alternate")
    stamps = _timestamp_specials()
    turns = [Turn(labelled(q.content), tuple(Text(p.text, stamps) for p in a.content))
             for q, a in zip(messages[0::2], messages[1::2])]
    turns.append(Turn(labelled(messages[-1].content)))
    return Conversation(tuple(system), tuple(turns))


def unlabelled(parts: Iterable[Part]) -> tuple[Part, ...]:
    """The parts without the `Audio k:` label before each clip and the newline after it (the inverse of
    `labelled`, and of `from_list_format`'s layout), for a model whose own template labels its clips."""
    out: list[Part] = []
    after_clip = False
    for p in parts:
        if isinstance(p, Audio):
            if out and isinstance(out[-1], Text):
                label = re.search(r"Audio \d+:\s*$", out[-1].text)
                if label:
                    out[-1] = replace(out[-1], text=out[-1].text[:label.start()])
            out.append(p)
            after_clip = True
            continue
        if after_clip and p.text.startswith("\n"):
            p = replace(p, text=p.text[1:])
        after_clip = False
        out.append(p)
    return tuple(p for p in out if isinstance(p, Audio) or p.text)


def plain_text(parts: Iterable[Part]) -> str:
    """The words of some parts, without clips or their `Audio k:` labels (what a person asked)."""
    out = ""
    for p in parts:
        if isinstance(p, Audio):
            out = re.sub(r"Audio \d+:\s*$", "", out)
        else:
            out += p.text
    return out.strip()
