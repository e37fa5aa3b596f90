"""Qwen2-Audio at its real shape on this CPU: this project (bfloat16, int8, int4) beside transformers (bfloat16).

    python benchmarks/qwen2_audio_bench.py [--modes bf16,int8,int4,transformers] [--new-tokens 8] [--text-layers 32]

Builds once (in the temp folder) a checkpoint of Qwen/Qwen2-Audio-7B-Instruct's shape with random bfloat16
weights, in the hub's layout (the decoder: 4096 wide, 32 layers of 32 heads, all of them key/value heads, MLP
11008, vocabulary 156032; the encoder: Whisper-large-v3's, 1280 wide, 32 layers; 8.4 B parameters), with
Qwen2's tokenizer files made from lite's Qwen2.5 GGUF and transformers' processor files. Then, each in a fresh
process so that its peak memory is its own: load time and peak resident memory, decode tokens/s against the
memory bound (bytes of weights read per token / the machine's read bandwidth), time to the first token of a
question about a 30 s clip (the processor's output given to `generate` for one token, timed alike on both
sides), and of a second turn in the same conversation (this project keeps the first turn's keys and values;
transformers' generate computes the whole prompt again). Random weights: the speed and memory
are the real model's, the words are not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import AUDIO, machine

FOLDER = Path(tempfile.gettempdir()) / "qwen2-audio-7b-random"
CONFIG = {
    "model_type": "qwen2_audio", "architectures": ["Qwen2AudioForConditionalGeneration"], "audio_token_index": 151646,
    "torch_dtype": "bfloat16",
    "audio_config": {"model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "d_model": 1280, "encoder_layers": 32,
                     "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "max_source_positions": 1500},
    "text_config": {"model_type": "qwen2", "vocab_size": 156032, "hidden_size": 4096, "intermediate_size": 11008,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                    "max_position_embeddings": 8192, "rope_theta": 10000, "rms_norm_eps": 1e-5,
                    "torch_dtype": "bfloat16"},
}
ENDS = [151643, 151645]
# The checkpoint's names of this project's modules (the hub's form; see models/qwen2_audio.py).
HUB_NAMES = (("audio.audio_tower.", "audio_tower."), ("audio.multi_modal_projector.", "multi_modal_projector."),
             ("llm.model.", "language_model.model."), ("llm.lm_head.", "language_model.lm_head."))


def build(folder: Path, text_layers: int, n_shards: int = 8) -> None:
    """The random checkpoint, written shard by shard (never the whole model in memory)."""
    from safetensors.torch import save_file

    from qwen_audio.models.qwen2_audio import Qwen2AudioLM

    config = json.loads(json.dumps(CONFIG))
    config["text_config"]["num_hidden_layers"] = text_layers
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Qwen2AudioLM.from_dict(config).state_dict().items()}
    names = {}
    for ours in shapes:
        new, old = next((new, old) for new, old in [(h, o) for o, h in HUB_NAMES] if ours.startswith(old))
        names[ours] = new + ours[len(old):]
    keys, weight_map, g = sorted(shapes), {}, torch.Generator().manual_seed(0)
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {}
        for k in keys[i::n_shards]:
            t = torch.randn(shapes[k], generator=g) * 0.02
            if k.endswith("norm.weight") or "layer_norm.weight" in k:
                t = t + 1  # norms near one, as trained ones are: activations keep their scale
            part[names[k]] = t.to(torch.bfloat16)
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
        del part
        print(f"  shard {i + 1}/{n_shards} written", flush=True)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ENDS, "pad_token_id": ENDS[0]}))
    write_processor(folder)


def write_processor(folder: Path) -> None:
    """Qwen2's tokenizer files from lite's GGUF plus the audio tokens, and transformers' processor files."""
    import gguf
    import transformers

    from qwen_audio.lite.weights import resolve_llm

    reader = gguf.GGUFReader(str(resolve_llm(which="qwen2.5-0.5b")))
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    first = tokens.index("<|endoftext|>")
    added = dict(enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                            "<|audio_eos|>"], start=first))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens[:first])}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "padding_side": "left", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for i, t in added.items()}}))
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    processor = transformers.Qwen2AudioProcessor(
        feature_extractor=transformers.WhisperFeatureExtractor(feature_size=128), tokenizer=tok)
    with tempfile.TemporaryDirectory() as tmp:
        processor.save_pretrained(tmp)
        saved = json.loads((Path(tmp) / "processor_config.json").read_text())
        (folder / "preprocessor_config.json").write_text(json.dumps(saved["feature_extractor"]))
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": (Path(tmp) / "chat_template.jinja").read_text()}))


# One measurement, in a fresh process.
CASE = r"""
import json, sys, time, warnings
import torch
sys.path.insert(0, {bench!r})
from common import peak_rss_gib
from qwen_audio.audio import load_audio
warnings.simplefilter("ignore")
mode, folder, new_tokens, step_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
clip = load_audio({clip!r})[:480000]
question, follow_up = "What's in this clip? Describe it.", "Is it loud?"
turn1 = [{{"role": "user", "content": [{{"type": "audio", "audio_url": "clip"}}, {{"type": "text", "text": question}}]}}]
turn2 = turn1 + [{{"role": "assistant", "content": "It is music."}},
                 {{"role": "user", "content": [{{"type": "text", "text": follow_up}}]}}]
r = {{"mode": mode}}
t = time.perf_counter()
if mode == "transformers":
    import transformers
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):  # when each new token arrives (the first put is the prompt)
        def __init__(self):
            self.times = []
        def put(self, value):
            self.times.append(time.perf_counter())
        def end(self):
            pass

    processor = transformers.AutoProcessor.from_pretrained(folder)
    model = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16).eval()
    r.update(load_s=time.perf_counter() - t, load_peak_gib=peak_rss_gib(), compute_dtype="bfloat16")

    def run(chat, n):
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, audio=[clip], sampling_rate=16000, return_tensors="pt")
        clock = Clock()
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=clock)
        new = clock.times[1:]
        return new[0] - t0, (new[-1] - new[0]) / max(1, len(new) - 1), inputs["input_ids"].shape[1]

    r["turn1_first_text_s"], r["decode_s_per_token"], r["turn1_prompt"] = run(turn1, new_tokens)
    r["turn2_first_text_s"] = run(turn2, 1)[0]
else:
    import qwen_audio
    kw = {{"dtype": torch.bfloat16}} if mode == "bf16" else {{"quantize": mode}}
    model = qwen_audio.Qwen2AudioForConditionalGeneration.from_pretrained(
        folder, device="cpu", engine=qwen_audio.EngineConfig(step_tokens=step_tokens), **kw)
    processor = qwen_audio.AutoProcessor.from_pretrained(folder)
    r.update(load_s=time.perf_counter() - t, load_peak_gib=peak_rss_gib(), compute_dtype=str(model.model.dtype)[6:])

    def inputs_of(chat):
        return processor(text=processor.apply_chat_template(chat, add_generation_prompt=True), audio=[clip])

    def first_token(chat):  # as transformers' is timed: the processor's output, then generate
        inputs = inputs_of(chat)
        t0 = time.perf_counter()
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
        return time.perf_counter() - t0, inputs["input_ids"].shape[1]

    r["turn1_first_text_s"], r["turn1_prompt"] = first_token(turn1)
    r["turn2_first_text_s"] = first_token(turn2)[0]  # turn 1's keys and values are reused
    # Decoding: turn 1's prompt again (its keys cached), n tokens with no end token, timed as they arrive.
    inputs = inputs_of(turn1)
    cfg = model.options(do_sample=False, max_new_tokens=new_tokens)
    p = model.engine.prepare_ids([inputs["input_ids"][0].tolist()], inputs["input_features"],
                                 inputs["feature_attention_mask"], cfg)[0]
    times = [time.perf_counter() for _ in model.engine.tokens(p, cfg, set())]
    r["decode_s_per_token"] = (times[-1] - times[0]) / (len(times) - 1)
r["peak_gib"] = peak_rss_gib()
print(json.dumps(r))
"""


def read_gbps() -> float:
    big = torch.ones(1 << 30, dtype=torch.uint8)
    words = big.view(torch.int64)
    words.sum()
    t = time.perf_counter()
    for _ in range(5):
        words.sum()
    return 5 * big.numel() / (time.perf_counter() - t) / 1e9


def weight_bytes_per_token(mode: str, text_layers: int) -> float:
    """Bytes of weights one decode step reads: the decoder's linear layers and the output head."""
    c = CONFIG["text_config"]
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    linears, head = text_layers * (4 * d * d + 3 * d * f), v * d
    if mode in ("bf16", "transformers"):
        return 2 * (linears + head)
    if mode == "int8":
        return linears + head
    return linears * (0.5 + 4 / 64) + head  # int4: a bf16 scale and zero every 64 weights; the head int8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="bf16,int8,int4,transformers")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--text-layers", type=int, default=32, help="decoder layers (32: the real model)")
    p.add_argument("--step-tokens", type=int, default=256, help="the scheduler's tokens per forward pass")
    args = p.parse_args()
    folder = FOLDER if args.text_layers == 32 else FOLDER.with_name(f"{FOLDER.name}-{args.text_layers}")
    if not (folder / "config.json").is_file():
        print(f"building {folder} ...", flush=True)
        t = time.perf_counter()
        build(folder, args.text_layers)
        print(f"built in {time.perf_counter() - t:.0f} s", flush=True)
    from qwen_audio.cpu import describe, native_bf16

    gbps = read_gbps()
    print(f"machine: {machine()}; {describe()}; bf16 native: {native_bf16()}; memory read {gbps:.1f} GB/s", flush=True)
    code = CASE.format(bench=str(Path(__file__).parent), clip=str(AUDIO / "music.wav"))
    results = {}
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, "-c", code, mode, str(folder), str(args.new_tokens), str(args.step_tokens)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{mode} failed:\n{out.stderr[-3000:]}", flush=True)
            continue
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {mode}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results[mode].items()})}",
              flush=True)
    print(f"\nQwen2-Audio-7B shape ({args.text_layers} decoder layers), random weights, prompts read "
          f"{args.step_tokens} tokens a step, a 30 s clip "
          f"({results[next(iter(results))]['turn1_prompt'] if results else '?'} prompt tokens):")
    print("| | compute | load s | peak GiB | decode tok/s | % of bound | first token, 30 s clip, s | first token, turn 2, s |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        tps = 1 / r["decode_s_per_token"]
        bound = gbps * 1e9 / weight_bytes_per_token(mode, args.text_layers)
        name = "transformers 5 (bf16)" if mode == "transformers" else f"qwen-audio {mode}"
        print(f"| {name} | {r['compute_dtype']} | {r['load_s']:.1f} | {r['peak_gib']:.1f} | {tps:.2f} | "
              f"{100 * tps / bound:.0f} % | {r['turn1_first_text_s']:.2f} | {r['turn2_first_text_s']:.2f} |")


if __name__ == "__main__":
    main()
