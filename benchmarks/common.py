"""Shared helpers for the benchmarks: the machine's description and random checkpoints of any size."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QWEN_AUDIO_FIXTURES", REPO.parent / "shared"))
TINY = SHARED / "fixtures" / "qwen-audio-tiny"
AUDIO = SHARED / "audio"


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM), GiB. Not ru_maxrss: Linux carries that over exec from
    the parent, so a benchmark run after a memory-hungry build would report the build's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def random_checkpoint(folder: Path, cfg, *, n_shards: int = 1, seed: int = 0) -> Path:
    """A checkpoint in the official layout with random bfloat16 weights and the real tokenizer table."""
    from qwen_audio.llm import QwenAudioLM
    from qwen_audio.weights import save_checkpoint

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in QwenAudioLM(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {k: (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16) for k, s in shapes.items()}
    save_checkpoint(state, folder, n_shards=n_shards)
    del state
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    for f in ("generation_config.json", "qwen.tiktoken"):
        shutil.copy(TINY / f, folder / f)
    return folder
