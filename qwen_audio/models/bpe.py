"""Byte-level BPE tokenizers of the Qwen2 family (Qwen2-Audio, Qwen2.5) and SmolLM2, built with `tokenizers`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..errors import CheckpointError

# Qwen2's pre-tokenizer split (its tokenizer.json): contractions, letters, single digits, punctuation runs,
# newlines, spaces. The GGUF names it by `tokenizer.ggml.pre` = "qwen2".
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_of() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2's): the character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_OF = _byte_of()


class BpeTokenizer:
    """A byte-level BPE rebuilt from a vocabulary and merges with `tokenizers` (from a GGUF file's metadata,
    or a checkpoint folder's files: `from_folder`).

    `pre` is the file's `tokenizer.ggml.pre`: "smollm" (every digit on its own, then GPT-2's
    byte-level split) or "qwen2" (Qwen2's split regex, NFC first). Two encoders over one vocabulary:
    `encode` (content) recognises no special token, so text that spells `<|im_end|>` is encoded as
    the characters it is; control tokens enter a prompt only as the ids of `special_id`. `decode`
    drops control tokens.
    """

    def __init__(self, tokens: list[str], merges: list[str], special: list[str], pre: str = "smollm"):
        if pre not in ("smollm", "qwen2"):
            raise CheckpointError(f"unknown BPE pre-tokenizer {pre!r} (known: smollm, qwen2)")
        self.tokens = list(tokens)
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.pre = pre
        self.content = self._build(merges)
        self.full = self._build(merges)
        self.full.add_special_tokens(special)  # only so that decoding knows which ids to skip
        self.special = frozenset(special)

    def _build(self, merges: list[str]):
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

        tok = Tokenizer(models.BPE(vocab=dict(self.vocab), merges=[tuple(m.split(" ", 1)) for m in merges]))
        if self.pre == "qwen2":
            tok.normalizer = normalizers.NFC()
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
        else:
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
            )
        tok.decoder = decoders.ByteLevel()
        return tok

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as plain text: no special token is recognised in it."""
        return self.content.encode(text, add_special_tokens=False).ids

    def special_id(self, token: str) -> int:
        if token not in self.special:
            raise CheckpointError(f"the LLM's vocabulary has no control token {token}")
        return self.vocab[token]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes of `ids` (a control token as its own text), for decoding a stream token by token."""
        out = bytearray()
        for i in ids:
            token = self.tokens[i]
            out += token.encode() if token in self.special else bytes(_BYTE_OF[c] for c in token)
        return bytes(out)

    def decode(self, ids: Sequence[int]) -> str:
        return self.full.decode(list(ids), skip_special_tokens=True)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "BpeTokenizer":
        """A Qwen2 tokenizer from a checkpoint folder: `tokenizer.json` (what transformers 5 writes), else
        `vocab.json` + `merges.txt` with the added tokens of `tokenizer_config.json` (the hub's 4.x files).
        Added tokens marked special are control tokens: `special_id` gives them, text never spells them."""
        folder = Path(folder)
        try:
            if (folder / "tokenizer.json").is_file():
                data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
                vocab, merges = data["model"]["vocab"], data["model"]["merges"]
                added = {int(t["id"]): (t["content"], bool(t.get("special"))) for t in data.get("added_tokens", [])}
            else:
                vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
                lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
                merges = [m for m in lines if m and not m.startswith("#version")]
                config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
                added = {int(i): (t["content"], bool(t.get("special")))
                         for i, t in config.get("added_tokens_decoder", {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{folder}: no readable Qwen2 tokenizer files ({type(e).__name__}: {e})") from None
        merges = [m if isinstance(m, str) else " ".join(m) for m in merges]  # tokenizer.json may hold pairs
        tokens = [""] * (max([*vocab.values(), *added]) + 1)
        for t, i in vocab.items():
            tokens[i] = t
        for i, (t, _) in added.items():
            tokens[i] = t
        return cls(tokens, merges, [t for t, special in added.values() if special], "qwen2")
