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


@pytest.fixture(autouse=True)
def _quiet_truncation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=AudioTruncatedWarning)
        yield
