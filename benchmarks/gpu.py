"""The faithful model on a CUDA GPU: parity, decode with and without CUDA graphs, prefill, encoder, turns.

    python benchmarks/gpu.py [--shape real|tiny] [--device cuda] [--new-tokens 256]

1. Parity on the GPU: the shared goldens (tiny official-layout checkpoint, float32, TF32 off) answered
   greedily, word for word, with every decode step a replayed CUDA graph and with eager steps.
2. The real shape (8.4 B parameters, random bfloat16 weights made on the GPU: the official weights cannot
   be fetched here), measured in one run on one GPU: the GPU's memory-read rate; decode tokens/s at
   batch 1 eager and graphed, against the bound (bytes of weights read per token / read rate); batch 8;
   prefill tokens/s; the audio encoder per 30 s clip; time to first text of the tutorial's first question
   and of its cached turn 2; peak GPU memory.
`--shape tiny --device cpu` runs the same steps on the tiny checkpoint, to check the script anywhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import torch
from common import AUDIO, TINY

import qwen_audio
from qwen_audio import cuda as qcuda
from qwen_audio.api import QwenAudioForCausalLM
from qwen_audio.config import PRESETS, ModelConfig
from qwen_audio.engine import EngineConfig
from qwen_audio.generate import GenerationConfig, generate
from qwen_audio.tokenizer import QwenTokenizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_gbps(device: torch.device) -> float:
    """Memory-read rate: summing 4 GiB (1 GiB on a CPU) of int64, best of 5."""
    n = (4 << 30 if device.type == "cuda" else 1 << 30) // 8
    x = torch.ones(n, dtype=torch.int64, device=device)
    best = float("inf")
    for _ in range(6):
        sync(device)
        t = time.perf_counter()
        x.sum()
        sync(device)
        best = min(best, time.perf_counter() - t)
    del x
    return n * 8 / best / 1e9


def goldens(device: torch.device) -> dict:
    """Greedy answers of the golden conversations on `device`, graphed and eager, against the published ones."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cases = json.loads((TINY / "goldens.json").read_text())["chat"]
    out = {}
    saved = qcuda.MIN_STEPS
    qcuda.MIN_STEPS = 1  # the goldens are 12 tokens long: capture a graph even for them
    try:
        for graphs in (True, False):
            model, tok = qwen_audio.load(TINY, dtype=torch.float32, device=device,
                                         engine=EngineConfig(cuda_graphs=graphs))
            same = total = 0
            for case in cases:
                history = None
                for turn in case["turns"]:
                    items = [{"audio": str(AUDIO / it["audio"])} if "audio" in it else it for it in turn["items"]]
                    response, history = model.chat(tok, tok.from_list_format(items), history, do_sample=False,
                                                   max_new_tokens=12)
                    same += response == turn["greedy_response"]
                    total += 1
            out["graphed" if graphs else "eager"] = f"{same}/{total}"
            del model
    finally:
        qcuda.MIN_STEPS = saved
    return out


def random_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> QwenAudioForCausalLM:
    """The model of shape `cfg` with random weights (N(0, 0.02), norms 1) made directly on `device`."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = QwenAudioForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("ln" in name or "norm" in name):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
        # Special and audio ids (from <|endoftext|> on; some are gaps that decode to nothing) get logit 0,
        # below the top of 151k random ones: answers are plain text and run to their full length.
        n_text = QwenTokenizer.from_pretrained(TINY).eod_id
        model.lm_head.weight[n_text:] = 0.0
    model.init_buffers()
    model.generation_config = GenerationConfig.from_pretrained(TINY)
    model.name_or_path = TINY  # the tokenizer's folder
    return model.eval()


def decode_rate(model, tokens: torch.Tensor, steps: int, graphs: bool) -> tuple[float, float]:
    """(tokens/s per row, seconds of the prefill) of a greedy answer of exactly `steps` tokens."""
    device = model.device
    cfg = GenerationConfig(do_sample=False, max_new_tokens=steps)
    cache = model.new_cache(tokens.shape[0], tokens.shape[1] + steps)
    sync(device)
    t0 = time.perf_counter()
    it = generate(model, tokens, cfg, set(), cache=cache, graphs=graphs)
    next(it)
    sync(device)
    t1 = time.perf_counter()
    n = sum(1 for _ in it)
    sync(device)
    return n / (time.perf_counter() - t1), t1 - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=["real", "tiny"], default="real")
    p.add_argument("--device", default="cuda")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--skip-goldens", action="store_true")
    p.add_argument("--profile", action="store_true", help="profile a cached turn's first text")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    r: dict = {"torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        r["gpu"] = f"{prop.name}, {prop.total_memory / 2**30:.0f} GiB, {prop.multi_processor_count} SMs"
    r["read_GBps"] = read_gbps(device)
    if not args.skip_goldens:
        r["goldens_float32"] = goldens(device)
        print(json.dumps(r), flush=True)

    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = PRESETS["qwen-audio-chat"] if args.shape == "real" else ModelConfig.from_json(TINY / "config.json")
    t = time.perf_counter()
    model = random_model(cfg, device, torch.bfloat16)
    sync(device)
    r["build_s"] = time.perf_counter() - t
    tok = QwenTokenizer.from_pretrained(TINY)
    n_params = sum(q.numel() for q in model.parameters())
    audio_params = sum(q.numel() for q in model.transformer.audio.parameters())
    # Per decode step every LLM weight is read once except the word embedding (one row per token).
    step_bytes = (n_params - audio_params - model.transformer.wte.weight.numel()) * 2
    r.update(params_B=n_params / 1e9, bound_tokens_per_s=r["read_GBps"] * 1e9 / step_bytes)

    prompt = torch.tensor([tok.encode("Hello, who are you? Tell me about the sound of the sea. " * 2)], device=device)
    decode_rate(model, prompt, 32, graphs=True)  # warm up: kernels, cuBLAS handles
    decode_rate(model, prompt, 32, graphs=False)
    for graphs in (False, True):
        rate, _ = decode_rate(model, prompt, args.new_tokens, graphs)
        r["decode_tokens_per_s_" + ("graphed" if graphs else "eager")] = rate
    r["decode_pct_of_bound_graphed"] = 100 * r["decode_tokens_per_s_graphed"] / r["bound_tokens_per_s"]
    with torch.inference_mode():
        cache = model.new_cache(1, 512)
        model(prompt, 0, cache)
        sync(device)
        t = time.perf_counter()
        qcuda.GraphedStep(model, cache, prompt.shape[1], batch=1, pad=None, alpha=None) if device.type == "cuda" else None
        sync(device)
        r["graph_capture_s"] = time.perf_counter() - t
        del cache
    batch8 = prompt.repeat(8, 1)
    rate, _ = decode_rate(model, batch8, args.new_tokens, graphs=True)
    r["batch8_tokens_per_s_total"] = 8 * rate
    print(json.dumps(r), flush=True)

    with torch.inference_mode():
        for n in (512, 2048):
            ids = torch.tensor([tok.encode("word " * (2 * n))[:n]], device=device)
            cache = model.new_cache(1, n)
            model(ids, 0, cache, last_only=True)
            sync(device)
            t = time.perf_counter()
            model(ids, 0, cache, last_only=True)
            sync(device)
            r[f"prefill_{n}_tokens_per_s"] = n / (time.perf_counter() - t)
        from qwen_audio.audio import load_clip

        clip = load_clip(AUDIO / "example-重庆话.wav", max_samples=480000)
        mel = clip.mel()[None].to(device)
        model.embed_audio(mel, [clip.length])
        sync(device)
        t = time.perf_counter()
        model.embed_audio(mel, [clip.length])
        sync(device)
        r["encoder_s_30s_clip"] = time.perf_counter() - t

    # The tutorial's first question and its grounding follow-up (cached turn 2), after a warm-up conversation.
    warm = model.chat_stream(tok, tok.from_list_format([{"audio": str(AUDIO / "es.mp3")}, {"text": "what is it?"}]),
                             None, do_sample=False, max_new_tokens=32)
    list(warm)
    q1 = tok.from_list_format([{"audio": str(AUDIO / "1272-128104-0000.flac")}, {"text": "what does the person say?"}])
    s1 = model.chat_stream(tok, q1, None, do_sample=False, max_new_tokens=64)
    list(s1)
    s2 = model.chat_stream(tok, 'Find the start time and end time of the word "middle classes"', s1.history,
                           do_sample=False, max_new_tokens=64)
    list(s2)
    if args.profile:  # where a cached turn's first text goes: the 25 heaviest calls
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        sp = model.chat_stream(tok, "Say it once more, please.", s2.history, do_sample=False, max_new_tokens=2)
        list(sp)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    s3 = model.chat_stream(tok, "And what does the person say after that?", s2.history, do_sample=False, max_new_tokens=64)
    list(s3)
    r.update(turn3_first_text_s=s3.stats.first_text_s, turn3_reused_tokens=s3.stats.reused_tokens)
    r.update(turn1_first_text_s=s1.stats.first_text_s, turn1_prompt_tokens=s1.stats.prompt_tokens,
             turn1_tokens_per_s=(s1.stats.new_tokens - 1) / (s1.stats.total_s - s1.stats.first_text_s),
             turn2_first_text_s=s2.stats.first_text_s, turn2_reused_tokens=s2.stats.reused_tokens)
    if device.type == "cuda":
        r["peak_gpu_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, indent=1), flush=True)


if __name__ == "__main__":
    main()
