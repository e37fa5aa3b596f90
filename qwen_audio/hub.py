"""Find a checkpoint folder: a local path, the Hugging Face cache, or a download from the hub."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelNotFoundError

# Files a Qwen-Audio checkpoint folder may hold; nothing else is downloaded.
CHECKPOINT_FILES = [
    "config.json",
    "generation_config.json",
    "qwen.tiktoken",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    # Qwen2-Audio's tokenizer (transformers 4.x files, or the tokenizer.json transformers 5 writes)
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    # Qwen2-Audio's processor: the feature extractor and the chat template, in either transformers layout
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
]

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_checkpoint(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """Return a local folder for `name_or_path`.

    A folder is used as it is. A hub id ("Qwen/Qwen-Audio-Chat") is taken from the local Hugging
    Face cache when present, else downloaded with huggingface_hub (which shows progress). With no
    network and no cached copy this fails at once with ModelNotFoundError.
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    name = os.fspath(name_or_path)
    if path.exists():
        raise ModelNotFoundError(f"{name}: is a file; give the checkpoint folder that holds config.json")
    if not _REPO_ID.match(name):
        raise ModelNotFoundError(f"{name}: no such checkpoint folder, and not a hub id like 'Qwen/Qwen-Audio-Chat'")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a core dependency
        raise ModelNotFoundError(f"{name}: huggingface_hub is needed to fetch hub models") from e
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=CHECKPOINT_FILES, local_files_only=True))
    except Exception:
        pass  # not cached: try the network below
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelNotFoundError(f"{name}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=CHECKPOINT_FILES, etag_timeout=10))
    except Exception as e:
        raise ModelNotFoundError(
            f"{name}: not in the local Hugging Face cache and could not be downloaded "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'}). "
            "Check the network, or pass the path of a local checkpoint folder."
        ) from e
