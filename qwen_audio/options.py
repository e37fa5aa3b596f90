"""Generation options: one checked type, read from a checkpoint's generation_config.json.

Every backend takes the same `GenerationConfig`. An instance is always valid: `__post_init__` checks
every field's type and range, and assigning a field checks the new value the same way, so a bad value
in a JSON file, a keyword argument, `updated(...)` or `cfg.top_p = ...` is refused where it enters,
with the field (and the file) named.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .config import read_json
from .errors import OptionError

# Options for the embedded backends, by name (as model presets are): `GenerationConfig.from_pretrained("lite")`.
PRESETS: dict[str, dict] = {
    # Greedy, reproducible; the small LLM loops without a repetition penalty.
    "lite": dict(max_new_tokens=256, do_sample=False, temperature=0.7, top_p=0.9, repetition_penalty=1.2, seed=1234),
}
MAX_STOP_STRINGS = 16
# transformers' names for options spelled differently here: the error says what to write, never taken silently
# (max_length counts the prompt too, so it is not max_new_tokens under another name).
TRANSFORMERS_NAMES = {"max_length": "max_new_tokens (new tokens only; the prompt is not counted)", "stop_strings": "stop"}
# Keyword arguments of transformers' `from_pretrained` that mean nothing here and are accepted silently.
IGNORED_LOAD_KWARGS = frozenset({"trust_remote_code", "revision", "cache_dir", "local_files_only", "token"})


# Not frozen: transformers users write `model.generation_config.max_new_tokens = 64`. eq without frozen
# makes the class unhashable (__hash__ = None): a hash by value of an object that can change would go
# stale in a set or a cache, so hashing one is a TypeError.
@dataclass
class GenerationConfig:
    """How an answer is generated. Defaults are the published chat model's (its generation_config.json).

    `model.generation_config.max_new_tokens = 64` changes the model's default, as in transformers: the
    new value is checked as `updated` checks it (an OptionError names the field and the config is left
    as it was), and a name the class does not know (`max_length`) is an OptionError, never a new
    attribute. `cfg.updated(top_p=0.8)` returns a changed copy; `model.chat(..., top_p=0.8)` changes
    one call; `model.generation_config = cfg` replaces the model's default. Each model loads its own
    config (presets are copied), so changing one changes no other model's. Not hashable: it can change.
    """

    chat_format: str = "chatml"  # "chatml" for the chat model; "raw" is the base model's (task prompts)
    max_new_tokens: int = 512  # new tokens at most (capped at what the model's window leaves)
    do_sample: bool = True  # False: greedy
    temperature: float = 1.0  # divides the logits before sampling (> 0 when sampling)
    top_p: float = 0.5  # nucleus sampling: keep the smallest set of tokens with this much probability
    top_k: int = 0  # sample among the k likeliest tokens; 0: off
    repetition_penalty: float = 1.0  # 1: off; > 1 discourages tokens already in the prompt or answer
    seed: int | None = None  # a fixed seed makes sampling reproducible; None: torch's global generator
    eos_token_id: int = 151643  # <|endoftext|> in the real vocabulary
    pad_token_id: int = 151643  # fed to rows of a batch that have finished
    max_window_size: int = 6144  # oldest history turns are dropped to fit this many prompt tokens
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings (not included)

    def __setattr__(self, name: str, value) -> None:
        if name not in _FIELD_NAMES:
            raise OptionError(_unknown_options([name]))
        if name in self.__dict__:  # set before, by __init__: an assignment, checked on a copy first
            try:
                value = getattr(self.updated(**{name: value}), name)  # `stop` as `updated` takes it
            except OptionError as e:
                if str(e).startswith(name + " "):  # the message is about this field
                    raise
                raise OptionError(f"{name}={value!r}: {e}") from None  # a check across fields: name this one
        object.__setattr__(self, name, value)  # the first set of each field is __init__'s; __post_init__ checks

    def __delattr__(self, name: str) -> None:
        # A deleted field would be set again unchecked (its first set is taken for __init__'s).
        raise OptionError(f"generation options cannot be deleted ({name}); assign a value instead")

    def __post_init__(self):
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name))
        if self.chat_format not in ("chatml", "raw"):
            raise OptionError(f"chat_format must be 'chatml' or 'raw', got {self.chat_format!r}")
        if self.max_new_tokens < 1:
            raise OptionError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 < self.top_p <= 1:
            raise OptionError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0 or (self.do_sample and self.temperature == 0):
            raise OptionError(f"temperature must be > 0 when sampling, got {self.temperature} (do_sample=False is greedy)")
        if self.top_k < 0:
            raise OptionError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise OptionError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_window_size < 1:
            raise OptionError(f"max_window_size must be >= 1, got {self.max_window_size}")
        if self.eos_token_id < 0 or self.pad_token_id < 0:
            raise OptionError("eos_token_id and pad_token_id must be >= 0")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise OptionError(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "options") -> "GenerationConfig":
        """Build from a dict; names this class does not know (`transformers_version`, ...) are ignored."""
        if not isinstance(d, dict):
            raise OptionError(f"{source}: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("stop"), list):
            d["stop"] = tuple(d["stop"])
        try:
            return cls(**d)
        except OptionError as e:
            raise OptionError(f"{source}: {e}") from None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides) -> "GenerationConfig":
        """A preset name ("lite"), or the generation_config.json of a checkpoint folder or hub id (names it
        does not know, such as `transformers_version`, are ignored); `overrides` are then applied."""
        revision = overrides.get("revision")
        overrides = {k: v for k, v in overrides.items() if k not in IGNORED_LOAD_KWARGS}
        name = os.fspath(name_or_path)
        if name in PRESETS:
            return cls(**PRESETS[name]).updated(**overrides)
        from .hub import resolve_checkpoint

        path = Path(resolve_checkpoint(name_or_path, revision=revision)) / "generation_config.json"
        d = read_json(path, OptionError) if path.is_file() else {}
        return cls.from_dict(d, str(path)).updated(**overrides)

    def updated(self, **overrides) -> "GenerationConfig":
        """A copy with `overrides` applied. Unknown names are an error, never silently ignored."""
        unknown = sorted(set(overrides) - _FIELD_NAMES)
        if unknown:
            raise OptionError(_unknown_options(unknown))
        if isinstance(overrides.get("stop"), (str, list)):  # one string, or a JSON list
            stop = overrides["stop"]
            overrides["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return replace(self, **overrides)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FIELD_NAMES = frozenset(f.name for f in fields(GenerationConfig))


def _unknown_options(names: list[str]) -> str:
    """The error for option names this class does not know: the known names, and what to write instead of
    a transformers name spelled differently here."""
    hints = "".join(f"; instead of {n}, write {TRANSFORMERS_NAMES[n]}" for n in names if n in TRANSFORMERS_NAMES)
    return f"unknown generation option(s) {names}; known: {sorted(_FIELD_NAMES)}{hints}"


_INT = ("max_new_tokens", "top_k", "eos_token_id", "pad_token_id", "max_window_size")
_FLOAT = ("temperature", "top_p", "repetition_penalty")


def _check_type(name: str, value) -> None:
    """Refuse values of the wrong type (JSON nulls, lists, floats for counts, strings for booleans)."""
    def bad(expected: str):
        shown = "null" if value is None else f"{value!r} ({type(value).__name__})"
        return OptionError(f"{name} must be {expected}, got {shown}")

    if name in _INT and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("an integer")
    if name in _FLOAT and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise bad("a finite number")
    if name == "do_sample" and not isinstance(value, bool):
        raise bad("true or false")
    if name == "seed" and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("an integer or null")
    if name == "chat_format" and not isinstance(value, str):
        raise bad("a string")
    if name == "stop" and not (isinstance(value, tuple) and all(isinstance(s, str) and s for s in value)):
        raise bad("a list of non-empty strings")
