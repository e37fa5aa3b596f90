"""Model, weights and generation on checkpoints the tests build: shapes, cache equivalence, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

import qwen_audio
from qwen_audio.errors import CheckpointError, ModelNotFoundError, TokenizerError
from qwen_audio.generate import GenerationConfig, generate, next_token
from qwen_audio.llm import QwenAudioLM, ntk_alpha

from .synthetic import synthetic_config, write_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "synthetic")


@pytest.fixture(scope="module")
def model(ckpt):
    return qwen_audio.load(ckpt, dtype=torch.float32, device="cpu")[0]


def test_load_fills_every_weight(ckpt, model):
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    state = {}
    for shard in set(index.values()):
        state.update(load_file(str(ckpt / shard)))
    mine = model.state_dict()
    assert set(mine) == set(state)
    for k, v in state.items():
        assert torch.equal(mine[k], v.float()), k
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.dtype == torch.float32


def test_dtype_auto_is_the_checkpoints(ckpt):
    m = qwen_audio.AutoModelForCausalLM.from_pretrained(ckpt, device_map="cpu")
    assert m.dtype == torch.bfloat16
    assert qwen_audio.AutoModelForCausalLM.from_pretrained(ckpt, fp32=True).dtype == torch.float32


def test_kv_cache_decoding_equals_full_forward(model):
    torch.manual_seed(0)
    tokens = torch.randint(0, 200, (1, 90))  # past seq_length=64: NTK alpha 3 and LogN scaling in play
    alpha = [ntk_alpha(90, model.config.seq_length)]
    assert alpha == [3]
    with torch.inference_mode():
        full = model(tokens, alpha=alpha)
        cache = model.new_cache(1, 90)
        steps = [model(tokens[:, :50], 0, cache, alpha=alpha)]
        steps += [model(tokens[:, i : i + 1], i, cache, alpha=alpha) for i in range(50, 90)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


def test_a_captured_step_sees_the_same_as_a_step_by_column(model):
    """The decode step a CUDA graph replays takes its column as a tensor and attends over the whole cache,
    masked: it must compute what the sliced step does, with padding, NTK alpha and LogN in play, whatever
    stale values lie in the columns after it."""
    torch.manual_seed(2)
    rows = [torch.randint(0, 200, (n,)) for n in (70, 85)]
    width = max(len(r) for r in rows)
    batch = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    pad = torch.tensor([width - len(r) for r in rows])
    alpha = [ntk_alpha(len(r), model.config.seq_length) for r in rows]
    with torch.inference_mode():
        sliced, captured = model.new_cache(2, 120), model.new_cache(2, 120)
        for t in captured.k + captured.v:
            t.normal_()  # stale keys and values past the column must not be seen
        model(batch[:, :60], 0, sliced, pad=pad, alpha=alpha)
        model(batch[:, :60], 0, captured, pad=pad, alpha=alpha)
        for i in range(60, width):
            a = model(batch[:, i : i + 1], i, sliced, pad=pad, alpha=alpha)
            b = model(batch[:, i : i + 1], torch.tensor([i]), captured, pad=pad, alpha=alpha)
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), i
            assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_decoding_equals_eager(ckpt):
    gpu = qwen_audio.load(ckpt, dtype=torch.float32, device="cuda")[0]
    cfg = GenerationConfig(do_sample=False, max_new_tokens=40)
    tokens = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]], device="cuda")
    pad = torch.tensor([0, 2], device="cuda")

    def run(graphs):
        return torch.stack(list(generate(gpu, tokens, cfg, set(), cache=gpu.new_cache(2, 48), pad=pad,
                                         alpha=[1.0, 1.0], graphs=graphs))).tolist()

    assert run(graphs=True) == run(graphs=False)
    cache = gpu.new_cache(2, 48)
    assert cache.capacity == 256  # whole blocks of columns on a GPU
    for _ in range(2):  # the second answer into the same cache replays the step captured for the first
        out = list(generate(gpu, tokens, cfg, set(), cache=cache, pad=pad, alpha=[1.0, 1.0]))
        assert torch.stack(out).tolist() == run(graphs=False)
    assert len(cache.steps) == 1


def test_left_padded_rows_compute_what_they_would_alone(model):
    torch.manual_seed(1)
    rows = [torch.randint(0, 200, (n,)) for n in (30, 80, 55)]
    width = max(len(r) for r in rows)
    batch = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    pad = torch.tensor([width - len(r) for r in rows])
    alpha = [ntk_alpha(len(r), model.config.seq_length) for r in rows]
    with torch.inference_mode():
        together = model(batch, pad=pad, alpha=alpha)
        for b, r in enumerate(rows):
            alone = model(r[None], alpha=[alpha[b]])
            assert torch.allclose(together[b, pad[b]:], alone[0], atol=1e-4, rtol=1e-4)


def test_generate_stops_and_counts(model):
    cfg = GenerationConfig(do_sample=False, max_new_tokens=5)
    tokens = torch.tensor([[1, 2, 3]])
    out = [int(t) for t in generate(model, tokens, cfg, set(), cache=model.new_cache(1, 8))]
    assert len(out) == 5
    first = out[0]
    out = [int(t) for t in generate(model, tokens, cfg, {first}, cache=model.new_cache(1, 8))]
    assert out == [first]


def test_sampling_is_reproducible_with_a_seed(model):
    cfg = GenerationConfig(do_sample=True, top_p=0.9, max_new_tokens=8, seed=123)
    tokens = torch.tensor([[5, 6, 7]])
    run = lambda c: [int(t) for t in generate(model, tokens, c, set(), cache=model.new_cache(1, 16))]  # noqa: E731
    assert run(cfg) == run(cfg)
    assert run(cfg) != run(replace(cfg, seed=124)) or run(cfg) != run(replace(cfg, seed=125))


def test_next_token_filters():
    logits = torch.tensor([[0.0, 3.0, 2.9, -5.0]])
    seen = torch.tensor([[1]])
    greedy = GenerationConfig(do_sample=False)
    assert int(next_token(logits, seen, greedy, None)) == 1
    # repetition penalty divides the seen token's positive logit: 3.0 / 2 < 2.9
    assert int(next_token(logits, seen, replace(greedy, repetition_penalty=2.0), None)) == 2
    g = torch.Generator().manual_seed(0)
    top1 = GenerationConfig(do_sample=True, top_p=0.01)
    assert {int(next_token(logits, seen, top1, g)) for _ in range(20)} == {1}
    topk = GenerationConfig(do_sample=True, top_p=1.0, top_k=2)
    assert {int(next_token(logits, seen, topk, g)) for _ in range(50)} == {1, 2}


def test_generation_config_reads_file_and_rejects_unknown(ckpt):
    cfg = qwen_audio.GenerationConfig.from_pretrained(ckpt)
    assert cfg.top_p == 0.5 and cfg.top_k == 0 and cfg.do_sample and cfg.max_window_size == 6144
    with pytest.raises(qwen_audio.OptionError, match="top_q"):
        cfg.updated(top_q=0.3)
    with pytest.raises(qwen_audio.QwenAudioError, match="max_new_tokens"):
        cfg.updated(max_new_tokens=0)


def copy_ckpt(ckpt, tmp_path):
    return shutil.copytree(ckpt, tmp_path / "copy")


def test_missing_shard(ckpt, tmp_path):
    bad = copy_ckpt(ckpt, tmp_path)
    (bad / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        qwen_audio.load(bad)


def edit_shard(folder, fn):
    shard = folder / "model-00001-of-00002.safetensors"
    state = load_file(str(shard))
    fn(state)
    save_file(state, str(shard))


def test_missing_key(ckpt, tmp_path):
    bad = copy_ckpt(ckpt, tmp_path)
    edit_shard(bad, lambda s: s.pop(sorted(s)[0]))
    with pytest.raises(CheckpointError, match="index says it holds|missing"):
        qwen_audio.load(bad)


def test_unexpected_key(ckpt, tmp_path):
    bad = copy_ckpt(ckpt, tmp_path)
    edit_shard(bad, lambda s: s.update({"transformer.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="unexpected weight 'transformer.extra.weight'"):
        qwen_audio.load(bad)


def test_wrong_shape_names_key_and_both_shapes(ckpt, tmp_path):
    bad = copy_ckpt(ckpt, tmp_path)
    key = {}

    def shrink(s):
        key["k"] = k = next(k for k in sorted(s) if k.endswith("c_attn.weight"))
        s[k] = s[k][:-1].contiguous()

    edit_shard(bad, shrink)
    with pytest.raises(CheckpointError, match=rf"{key['k']}' has shape \[95, 32\].*expects \[96, 32\]"):
        qwen_audio.load(bad)


def test_pytorch_bin_checkpoints_load(ckpt, tmp_path, model):
    folder = tmp_path / "bin"
    folder.mkdir()
    for f in ("config.json", "generation_config.json", "qwen.tiktoken"):
        shutil.copy(ckpt / f, folder / f)
    torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    other = qwen_audio.load(folder, dtype=torch.float32)[0]
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_tokenizer_that_disagrees_with_config(ckpt, tmp_path):
    bad = copy_ckpt(ckpt, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["audio"]["audio_start_id"] += 1
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TokenizerError, match="audio_start_id"):
        qwen_audio.AutoTokenizer.from_pretrained(bad)


def test_unknown_model_names(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="no such checkpoint folder"):
        qwen_audio.load(tmp_path / "missing" / "folder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="Qwen/Qwen-Audio-Chat.*not in the local Hugging Face cache"):
        qwen_audio.load("Qwen/Qwen-Audio-Chat")


def test_hub_download_failure_is_reported_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ModelNotFoundError, match="could not be downloaded"):
        qwen_audio.load("Qwen/Qwen-Audio-Chat")


def test_meta_build_has_no_storage():
    with torch.device("meta"):
        m = QwenAudioLM(synthetic_config())
    assert all(p.is_meta for p in m.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_float32(ckpt, model, dtype):
    half = qwen_audio.load(ckpt, dtype=dtype, device="cpu")[0]
    assert half.dtype == dtype and half.transformer.audio.conv1.weight.dtype == dtype
    tokens = torch.randint(0, 200, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref, out = model(tokens), half(tokens)
    assert out.dtype == torch.float32  # logits come back in float32 for sampling
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_bad_device_and_dtype_are_reported(ckpt):
    if not torch.cuda.is_available():
        with pytest.raises(qwen_audio.QwenAudioError, match="cuda"):
            qwen_audio.AutoModelForCausalLM.from_pretrained(ckpt, device_map="cuda")
    with pytest.raises(qwen_audio.DeviceError, match="unknown dtype 'float8'"):
        qwen_audio.load(ckpt, dtype="float8")
    assert qwen_audio.load(ckpt, dtype="bf16")[0].dtype == torch.bfloat16


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 32.0, r"field hidden_size must be a non-negative integer, got 32.0 \(float\)"),
    ("num_hidden_layers", None, r"field num_hidden_layers must be a non-negative integer, got null"),
    ("vocab_size", [1], r"field vocab_size must be a non-negative integer, got \[1\] \(list\)"),
    ("use_logn_attn", "yes", r"field use_logn_attn must be true or false"),
    ("layer_norm_epsilon", -1, r"field layer_norm_epsilon must be a positive number"),
    ("audio", {"n_state": 16}, r"field audio.n_head is missing"),
])
def test_bad_config_values_name_the_file_and_field(ckpt, tmp_path, field, value, message):
    bad = copy_ckpt(ckpt, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg[field] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"config.json: {message}"):
        qwen_audio.load(bad)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{not utf-8", "config.json: not UTF-8"),
    (b'{"hidden_size": 32,', "config.json: not valid JSON"),
    (b"[1, 2]", 'config.json: not a Qwen-Audio config'),
])
def test_unreadable_config_names_the_file(ckpt, tmp_path, content, message):
    bad = copy_ckpt(ckpt, tmp_path)
    (bad / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        qwen_audio.load(bad)


@pytest.mark.parametrize("field, value, message", [
    ("top_p", None, "top_p must be a finite number, got null"),
    ("max_new_tokens", 12.5, r"max_new_tokens must be an integer, got 12.5 \(float\)"),
    ("do_sample", "true", "do_sample must be true or false"),
    ("top_k", [40], r"top_k must be an integer, got \[40\]"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
])
def test_bad_generation_config_values_name_the_file_and_field(ckpt, tmp_path, field, value, message):
    bad = copy_ckpt(ckpt, tmp_path)
    gen = json.loads((bad / "generation_config.json").read_text())
    gen[field] = value
    (bad / "generation_config.json").write_text(json.dumps(gen))
    with pytest.raises(qwen_audio.OptionError, match=rf"generation_config.json: {message}"):
        qwen_audio.load(bad)
    (bad / "generation_config.json").write_bytes(b"{oops")
    with pytest.raises(qwen_audio.OptionError, match="generation_config.json: not valid JSON"):
        qwen_audio.GenerationConfig.from_pretrained(bad)


def test_generation_config_presets_take_the_tutorials_keywords():
    cfg = qwen_audio.GenerationConfig.from_pretrained("lite", trust_remote_code=True)
    assert cfg.do_sample is False and cfg.repetition_penalty > 1
    with pytest.raises(qwen_audio.OptionError, match="top_q"):
        qwen_audio.GenerationConfig.from_pretrained("lite", top_q=0.1)
    cfg.top_p = 0.1  # a preset is built anew each time: changing one copy changes no other
    assert cfg.top_p == 0.1 and qwen_audio.GenerationConfig.from_pretrained("lite").top_p == 0.9


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", 3.5])
def test_bad_device_strings_are_device_errors(ckpt, device):
    with pytest.raises(qwen_audio.DeviceError, match="device"):
        qwen_audio.load(ckpt, device=device)


def test_nan_weights_are_named_when_the_model_computes_nan(ckpt, tmp_path):
    bad = copy_ckpt(ckpt, tmp_path)
    key = {}

    def poison(s):
        key["k"] = k = next(k for k in sorted(s) if k.endswith("mlp.c_proj.weight"))
        s[k] = torch.full_like(s[k], float("nan"))

    edit_shard(bad, poison)
    model, tok = qwen_audio.load(bad, dtype=torch.float32)
    with pytest.raises(qwen_audio.NonFiniteError, match=rf"NaN.*{key['k']}.*damaged"):
        model.chat(tok, "hello", None, do_sample=False, max_new_tokens=3)


def test_an_audio_token_the_model_writes_is_a_word_in_decode_steps(model):
    """Audio features go into a prompt's first pass only; a decode step that feeds back an `<audio>` the
    model wrote embeds it as a word, as the published code does."""
    start = model.config.audio.audio_start_id
    with torch.inference_mode():
        cache = model.new_cache(1, 8)
        model(torch.tensor([[1, 2, 3]]), 0, cache, audio=[])
        out = model(torch.tensor([[start]]), 3, cache)  # no audio: a decode step
    assert torch.isfinite(out).all()
    with pytest.raises(qwen_audio.PromptError, match="1 <audio> and 0 </audio>"):
        model(torch.tensor([[1, start]]), audio=[])  # a prompt whose span has no clip is refused
