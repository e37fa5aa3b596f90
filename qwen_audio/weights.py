"""Read a checkpoint folder into a model built on the meta device: every key and shape checked first."""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .config import read_json
from .errors import CheckpointError
from .quantize import (
    QuantEmbedding,
    Quantization,
    QuantLinear,
    int4_layout_is_known,
    nibbles,
    quantize_modules,
)

# Names in the official checkpoint map one to one onto this project's modules (`transformer.h.0.attn.
# c_attn.weight` is `model.transformer.h[0].attn.c_attn.weight`). Keys matching IGNORED_KEYS are
# buffers that carry no learned weights: the published code's masks and rotary tables, and the
# encoder's sinusoidal positions, which the model computes in float32 (see encoder.py).
IGNORED_KEYS = re.compile(
    r"^transformer\.h\.\d+\.attn\.(masked_bias|bias|rotary_emb\.inv_freq)$"
    r"|^transformer\.rotary_emb\.inv_freq$"
    r"|^transformer\.audio\.positional_embedding$"
)


def _shards(folder: Path) -> tuple[str, dict[str, str]]:
    """('safetensors' | 'bin', {key: shard file name}) from the index, or from a single file."""
    for kind, index, single in (
        ("safetensors", "model.safetensors.index.json", "model.safetensors"),
        ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (folder / index).is_file():
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{folder / index}: not a valid weight index ({e})") from e
            missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
            if missing:
                raise CheckpointError(f"{folder}: shard(s) named in {index} are missing: {', '.join(missing)}")
            return kind, weight_map
        if (folder / single).is_file():
            return kind, {k: single for k in _keys_of(folder / single, kind)}
    raise CheckpointError(f"{folder}: no weights found (expected *.safetensors or pytorch_model*.bin with an index)")


def _keys_of(path: Path, kind: str) -> list[str]:
    return list(_shapes_of(path, kind))


def _shapes_of(path: Path, kind: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of one shard, read from its header without loading the data."""
    try:
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read this weight file ({type(e).__name__}: {e})") from e


def _ignored(key: str) -> bool:
    return IGNORED_KEYS.match(key) is not None


def _v1_name(key: str) -> str | None:
    return None if _ignored(key) else key


@dataclass(frozen=True)
class Layout:
    """How a checkpoint's tensors land in a model: `name` maps a stored key to the model's parameter name
    (None: a stored buffer that carries no weights); `embeddings` are the embedding modules stored quantized;
    `head` is the output layer, kept in int8 when the rest is int4 (its errors reach every logit); `tied`
    maps a parameter the checkpoint may leave out to the one it shares weights with."""

    kind: str  # named in errors: "Qwen-Audio", "Qwen2-Audio"
    name: Callable[[str], str | None] = _v1_name
    embeddings: tuple[str, ...] = ("transformer.wte",)
    head: str = "lm_head"
    tied: dict[str, str] = field(default_factory=dict)


QWEN_AUDIO = Layout("Qwen-Audio")


def check_checkpoint(folder: Path, model: nn.Module, layout: Layout = QWEN_AUDIO) -> tuple[str, dict[str, str]]:
    """Compare every key and shape of the checkpoint with `model`; raise CheckpointError naming the first problem."""
    kind, weight_map = _shards(folder)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found: dict[str, tuple[int, ...]] = {}
    for shard in sorted(set(weight_map.values())):
        shapes = _shapes_of(folder / shard, kind)
        for key, shard_of_key in weight_map.items():
            if shard_of_key == shard and key not in shapes:
                raise CheckpointError(f"{folder / shard}: the index says it holds {key!r}, but it does not")
        for key, shape in shapes.items():
            name = layout.name(key)
            if name is not None:
                found[name] = shape
    for name, source in layout.tied.items():
        if name not in found and source in found:
            found[name] = found[source]
    missing = sorted(set(expected) - set(found))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{folder}: weight {missing[0]!r} is missing from the checkpoint{more}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{folder}: unexpected weight {unexpected[0]!r} in the checkpoint{more}; "
                              f"is this a {layout.kind} checkpoint?")
    for key, shape in expected.items():
        if found[key] != shape:
            raise CheckpointError(
                f"{folder}: weight {key!r} has shape {list(found[key])} in the checkpoint, the model expects {list(shape)}"
            )
    return kind, weight_map


def storage_dtype(folder: Path) -> torch.dtype:
    """The dtype the checkpoint stores its weights in (for dtype='auto')."""
    kind, weight_map = _shards(folder)
    shard = folder / sorted(set(weight_map.values()))[0]
    if kind == "safetensors":
        from safetensors import safe_open

        with safe_open(str(shard), framework="pt") as f:
            names = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
            return names.get(f.get_slice(next(iter(f.keys()))).get_dtype(), torch.float32)
    state = torch.load(shard, map_location="meta", weights_only=True, mmap=True)
    return next(iter(state.values())).dtype


def _tensors(folder: Path, kind: str, weight_map: dict[str, str], layout: Layout = QWEN_AUDIO,
             release: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(the model's name, tensor) of every stored weight, memory-mapped, shard by shard; with `release`, each
    tensor's pages leave this process's memory once the caller has taken what it needs (see `_drop_pages`)."""
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                mapped = _mapped_ranges(path) if release else []
                for key in f.keys():
                    name = layout.name(key)
                    if name is not None:
                        t = f.get_tensor(key)
                        yield name, t
                        _drop_pages(t, mapped)
        else:
            shard_state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            for key, t in shard_state.items():
                name = layout.name(key)
                if name is not None:
                    yield name, t
            del shard_state


QUANTIZED = "quantization.json"  # marks a folder written by `save_quantized`


def saved_quantization(folder: Path) -> Quantization | None:
    """The quantization a folder was saved with (`save_quantized`), or None for a float checkpoint."""
    path = Path(folder) / QUANTIZED
    if not path.is_file():
        return None
    d = read_json(path, CheckpointError)
    if not isinstance(d, dict) or d.get("format") != "qwen-audio-quantized" or d.get("bits") not in (4, 8):
        raise CheckpointError(f"{path}: not a qwen-audio quantization record")
    return Quantization(d["bits"], d.get("group_size", 64))


MADV_DONTNEED = 4  # Linux: drop these pages from the process (a private file mapping re-reads the file)


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process maps `path` (Linux; empty elsewhere)."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            lines = [line.split(maxsplit=5) for line in f]
    except OSError:
        return []
    return [tuple(int(x, 16) for x in parts[0].split("-")) for parts in lines
            if len(parts) == 6 and parts[5].strip() == target]


def _drop_pages(t: torch.Tensor, mapped: list[tuple[int, int]]) -> None:
    """Once a memory-mapped tensor has been read, let its pages go from this process's resident memory: a
    quantized load then peaks near the quantized size, not that plus every shard read so far. Only for
    tensors inside a file mapping (the file stays in the page cache); anything else is left alone. A
    tensor kept as a view of the mapping (a saved int8 weight) reads its pages back when first used."""
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    if not any(a <= start and end <= b for a, b in mapped):
        return
    page = mmap.PAGESIZE
    first, last = start - start % page, -(-end // page) * page
    ctypes.CDLL(None).madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED)


def load_weights(model: nn.Module, folder: str | Path, *, dtype: torch.dtype, device: torch.device | str,
                 quantization: Quantization | None = None, layout: Layout = QWEN_AUDIO) -> nn.Module:
    """Fill `model` (built on the meta device) from `folder`, converting to `dtype` on `device`.

    Every key and shape is checked before any data is read. Without quantization shards are
    memory-mapped and each tensor converted as it is read (no copy when the dtype matches), so peak
    memory stays near the size of the weights in `dtype`. With it, linear and embedding weights are
    quantized as they are read and everything else is copied, so each shard can be let go once read:
    peak memory stays near the quantized size plus one tensor in float32. A folder written by
    `save_quantized` is read as it was saved (int8 weights memory-mapped), with no conversion.
    """
    folder = Path(folder)
    saved = saved_quantization(folder)
    if saved is not None:
        if quantization not in (None, saved):
            raise CheckpointError(f"{folder}: saved as {saved.name}; it cannot be loaded as {quantization.name}")
        if saved.bits == 4 and not int4_layout_is_known():
            raise CheckpointError(f"{folder}: saved as {saved.name}, which needs torch's CPU int4 kernel; this torch "
                                  "packs int4 weights in a way this version does not know")
        quantize_modules(model, saved, dtype, layout.embeddings, layout.head)
        layout = replace(layout, name=_same_name)  # `save_quantized` writes the model's own names
    kind, weight_map = check_checkpoint(folder, model, layout)
    stored = set(weight_map)
    shared = {source: name for name, source in layout.tied.items() if not any(layout.name(k) == name for k in stored)}
    if quantization is None and saved is None:
        state = {key: t.to(device=device, dtype=dtype) for key, t in _tensors(folder, kind, weight_map, layout)}
        state |= {name: state[source] for source, name in shared.items()}
        model.load_state_dict(state, strict=True, assign=True)
    else:
        if saved is None:
            quantize_modules(model, quantization, dtype, layout.embeddings, layout.head)
        for key, t in _tensors(folder, kind, weight_map, layout, release=True):
            for target in (key, shared.get(key)) if key in shared else (key,):
                put_tensor(model, target, t, dtype, device, saved is not None)
    model.init_buffers()
    empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:
        raise CheckpointError(f"{folder}: no data for {empty[0]!r} (and {len(empty) - 1} more)")
    return model


def put_tensor(model: nn.Module, key: str, t: torch.Tensor, dtype: torch.dtype, device, saved: bool = False) -> None:
    """One tensor into a model whose linear and embedding layers may be quantized (`saved`: in the form
    `save_quantized` writes, else a float weight to quantize)."""
    path, _, name = key.rpartition(".")
    module = model.get_submodule(path)
    quantized = isinstance(module, (QuantLinear, QuantEmbedding))
    if quantized and saved and name in ("weight", "scales"):
        module.set_saved(name, t, dtype)
    elif quantized and not saved and name == "weight":
        module.set_weight(t, dtype)
    elif name in module._parameters:
        module._parameters[name] = nn.Parameter(t.to(device=device, dtype=dtype, copy=True), requires_grad=False)
    else:
        module._buffers[name] = t.to(device=device, dtype=dtype, copy=True)


# What a saved quantized folder takes from its source besides the weights: the config and generation files,
# the tokenizer (v1's tiktoken file; Qwen2-Audio's BPE files), Qwen2-Audio's processor and chat template.
COPIED_FILES = ("config.json", "generation_config.json", "qwen.tiktoken", "tokenizer.json", "tokenizer_config.json",
                "vocab.json", "merges.txt", "preprocessor_config.json", "processor_config.json", "chat_template.json",
                "chat_template.jinja")


def _same_name(key: str) -> str:
    return key


def save_quantized(model: nn.Module, quantization: Quantization, folder: str | Path, source: str | Path) -> Path:
    """Write a quantized model as a checkpoint folder that loads with no conversion: its weights (int4 as
    portable `nibbles`), the config, tokenizer and generation files of `source`, and `quantization.json`."""
    folder = Path(folder)
    state = {}
    for name, t in model.state_dict().items():
        path, _, leaf = name.rpartition(".")
        module = model.get_submodule(path) if path else model
        if isinstance(module, QuantLinear) and module.bits == 4 and leaf == "weight":
            t = nibbles(module.codes())
        state[name] = t
    total = sum(t.numel() * t.element_size() for t in state.values())
    save_checkpoint(state, folder, n_shards=max(1, -(-total // (2 << 30))))  # shards of about 2 GiB
    for f in COPIED_FILES:
        if (Path(source) / f).is_file():
            shutil.copy(Path(source) / f, folder / f)
    (folder / QUANTIZED).write_text(json.dumps({"format": "qwen-audio-quantized", "bits": quantization.bits,
                                                "group_size": quantization.group_size}, indent=1))
    return folder


def save_checkpoint(state: dict[str, torch.Tensor], folder: str | Path, *, n_shards: int = 1) -> Path:
    """Write `state` as sharded safetensors with a `model.safetensors.index.json` (the official layout)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i::n_shards]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return folder
