"""Weight-only int8 / int4 on the CPU: the numbers, the layers, whole models against float32, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import qwen_audio
from qwen_audio.quantize import (
    PACKED_ROWS,
    QuantEmbedding,
    Quantization,
    QuantLinear,
    int4_layout_is_known,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)

from .conftest import AUDIO, TINY, golden_query, need_shared
from .synthetic import synthetic_config, write_checkpoint


def test_int8_rounds_each_weight_to_within_half_a_step():
    w = torch.randn(96, 160, generator=torch.Generator().manual_seed(0))
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and scales.shape == (96,)
    assert ((q.float() * scales[:, None] - w).abs() <= scales[:, None] / 2 + 1e-7).all()


def test_int4_rounds_each_group_to_within_half_a_step_and_the_packing_is_understood():
    w = torch.randn(128, 256, generator=torch.Generator().manual_seed(1))
    codes, sz = quantize_int4(w, 64)
    assert codes.min() >= 0 and codes.max() <= 15 and sz.shape == (4, 128, 2)
    scales, zeros = sz[..., 0].t(), sz[..., 1].t()  # [N, groups]
    back = ((codes.reshape(128, 4, 64).float() - 8) * scales[..., None] + zeros[..., None]).reshape(128, 256)
    assert ((back - w).abs() <= scales.repeat_interleave(64, dim=1) / 2 + 1e-6).all()
    assert int4_layout_is_known()
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
    assert torch.equal(unpack_int4(packed, 128, 256), codes)


AVX2_CHECK = """
import torch
from qwen_audio.quantize import QuantLinear, int4_block
w = torch.randn(192, 256, generator=torch.Generator().manual_seed(3)) * 0.02
layer = QuantLinear(256, 192, False, 4, 64)
layer.set_weight(w, torch.bfloat16)
x = torch.randn(3, 256, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
dense = x.float() @ layer.dequantize(torch.float32).t()
err = (layer(x).float() - dense).abs().max() / dense.abs().max()
print(int4_block(), float(err))
"""


def test_int4_weights_are_read_back_as_an_avx2_cpu_packs_them():
    """The CPU int4 kernel packs by the vector width it runs with: 64-row blocks with AVX-512, 32 with AVX2.
    Held to AVX2, the layout must still be read (or int4 would quietly become int8 on AVX2-only CPUs)."""
    out = subprocess.run([sys.executable, "-c", AVX2_CHECK], capture_output=True, text=True, check=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"})
    block, err = out.stdout.split()
    assert block in ("32", "64") and float(err) < 0.02, out.stdout


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 40, 200])  # the packed kernel (few rows) and the dense product (many)
def test_quant_linear_computes_with_its_dequantized_weight(bits, dtype, rows):
    g = torch.Generator().manual_seed(2)
    w, b, x = torch.randn(128, 256, generator=g) * 0.05, torch.randn(128, generator=g), torch.randn(2, rows, 256, generator=g)
    layer = QuantLinear(256, 128, True, bits, 64)
    layer.set_weight(w, dtype)
    layer.bias = torch.nn.Parameter(b.to(dtype))
    y = layer(x.to(dtype))
    ref = F.linear(x.float(), layer.dequantize(torch.float32), b)
    assert y.shape == (2, rows, 128) and y.dtype == dtype
    # Few rows go through the packed kernels, which compute in bfloat16 whatever x's dtype.
    tol = 1e-4 if dtype == torch.float32 and rows > PACKED_ROWS[bits] else 0.05
    assert (y.float() - ref).abs().max() <= tol * ref.abs().max()
    exact = F.linear(x.float(), w, b)  # and the dequantized weight is close to the original
    assert F.cosine_similarity(ref.flatten(), exact.flatten(), dim=0) > (0.9999 if bits == 8 else 0.995)


def test_quant_embedding_rows():
    w = torch.randn(50, 16, generator=torch.Generator().manual_seed(3))
    emb = QuantEmbedding(50, 16, torch.float32)
    emb.set_weight(w, torch.float32)
    ids = torch.tensor([[0, 7, 49]])
    assert emb(ids).shape == (1, 3, 16) and (emb(ids) - w[ids]).abs().max() < w.abs().max() / 127


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A synthetic checkpoint whose layers the int4 kernel takes (out features multiples of 64)."""
    from qwen_audio.config import AudioConfig

    base = synthetic_config()
    audio = AudioConfig(n_mels=80, n_ctx=1500, n_state=64, n_head=2, n_layer=1, output_dim=128,
                        audio_start_id=base.audio.audio_start_id)
    cfg = synthetic_config(dim=128, n_head=2, head_dim=64, ffn_dim=256, seq_length=2048, audio=audio)
    # Weights at the usual init scale (std 0.02), so activations are as in a trained model.
    return write_checkpoint(tmp_path_factory.mktemp("wide") / "ckpt", cfg, seed=11, std=0.02)


def next_logits(model, tok, texts):
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tok.encode(text)])
            out.append(model(ids)[0].float())
    return torch.cat(out)


def test_whole_models_agree_with_float32(wide):
    texts = ["hello world, the world", "the hello the world " * 3, "hello"]
    full, tok = qwen_audio.load(wide, dtype=torch.float32)
    ref = next_logits(full, tok, texts)
    for spec, cosine, agree in (("int8", 0.999, 0.95), ("int4-64", 0.995, 0.9), ("int4-32", 0.995, 0.9)):
        model, _ = qwen_audio.load(wide, dtype=torch.float32, quantize=spec)
        assert isinstance(model.transformer.h[0].mlp.w1, QuantLinear)
        assert model.transformer.h[0].mlp.w1.bits == (8 if spec == "int8" else 4)
        assert model.lm_head.bits == 8  # the head stays int8: its logits choose every token
        got = next_logits(model, tok, texts)
        cos = F.cosine_similarity(got, ref, dim=-1)
        assert cos.min() > cosine, (spec, cos.min())
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= agree, spec


def test_quantized_layers_take_a_quarter_and_an_eighth_of_float32(wide):
    full = dict(qwen_audio.load(wide, dtype=torch.float32)[0].named_modules())

    def ratio(spec, bits):
        model = qwen_audio.load(wide, dtype=torch.float32, quantize=spec)[0]
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear) and m.bits == bits]
        small = sum(m.weight.nbytes + m.scales.nbytes for _, m in layers)
        return small / sum(full[n].weight.nbytes for n, _ in layers)

    assert 0.25 < ratio("int8", 8) < 0.27  # 1 byte a weight, and a float32 scale a row
    assert 0.125 < ratio("int4-64", 4) < 0.16  # half a byte a weight, and a scale and a zero every 64


def test_quantized_conversations_are_exact_with_and_without_caches(wide):
    import numpy as np

    model, tok = qwen_audio.load(wide, quantize="int8")
    assert model.dtype in (torch.bfloat16, torch.float32)  # the CPU's compute type, not the storage's
    clip = (np.sin(np.arange(24000) / 7).astype(np.float32) * 0.3, 16000)
    q1 = tok.from_list_format([{"audio": clip}, {"text": "hello"}])
    r1, h1 = model.chat(tok, q1, None, do_sample=False, max_new_tokens=8)
    stream = model.chat_stream(tok, "the world", h1, do_sample=False, max_new_tokens=8)
    cached = "".join(stream)
    assert stream.stats.reused_tokens > 0
    model.reuse_kv = False
    assert model.chat(tok, "the world", h1, do_sample=False, max_new_tokens=8)[0] == cached


@pytest.mark.parametrize("spec", ["int8", "int4"])
def test_a_saved_quantized_checkpoint_loads_as_it_was(wide, tmp_path, spec):
    model, tok = qwen_audio.load(wide, quantize=spec)
    folder = model.save_quantized(tmp_path / spec)
    again, tok2 = qwen_audio.load(folder)
    assert again.quantization == model.quantization and tok2.encode("hello") == tok.encode("hello")
    ids = torch.tensor([tok.encode("hello world, the world")])
    with torch.inference_mode():
        assert torch.equal(again(ids), model(ids))
    with pytest.raises(qwen_audio.CheckpointError, match="cannot be loaded as"):
        qwen_audio.load(folder, quantize="int4-32" if spec == "int8" else "int8")
    with pytest.raises(qwen_audio.OptionError, match="not quantized"):
        qwen_audio.load(wide)[0].save_quantized(tmp_path / "float")


def test_goldens_in_int8(goldens):
    """The published last-position logits of every golden chat turn, against the tiny checkpoint in int8:
    close, with the published choice among int8's top few. (How many greedy answers stay equal is a
    report: benchmarks/cpu_quant.py prints it.)"""
    need_shared()
    import numpy as np

    from qwen_audio.messages import tutorial_conversation
    from qwen_audio.tokenizer import DEFAULT_SYSTEM, chat_prompt

    model, tok = qwen_audio.load(TINY, dtype=torch.float32, quantize="int8")
    g, z = goldens
    for c in g["chat"]:
        history = []
        for turn in c["turns"]:
            query = golden_query(tok, turn["items"])
            prompt = chat_prompt(tok, tutorial_conversation(query, history, DEFAULT_SYSTEM), model.engine.span)
            feats, _ = model.engine.encode(prompt.clips)
            with torch.inference_mode():
                logits = model(torch.tensor([prompt.ids]), audio=feats, last_only=True)[0, -1].numpy()
            ref = z[turn["last_logits"]]
            cos = float(logits @ ref / (np.linalg.norm(logits) * np.linalg.norm(ref)))
            assert cos > 0.999, cos
            assert int(ref.argmax()) in np.argsort(-logits)[:3]
            history.append((query, turn["greedy_response"]))


def test_bad_quantize_requests():
    with pytest.raises(qwen_audio.OptionError, match="unknown quantize 'int3'"):
        Quantization.parse("int3")
    assert Quantization.parse("int4-128") == Quantization(4, 128)
    need_shared()
    with pytest.raises(qwen_audio.DeviceError):
        qwen_audio.load(TINY, device="cuda", quantize="int8")
    with pytest.raises(qwen_audio.OptionError, match="built-in 'lite'"):
        qwen_audio.load("lite", quantize="int8")


def test_cli_quantize_flag():
    need_shared()
    from qwen_audio import cli

    clip = str(AUDIO / "es.mp3")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["ask", "--model", str(TINY), "--quantize", "int8", "--dtype", "float32", "--audio", clip,
                         "what?", "--greedy", "--max-new-tokens", "6", "--json", "--raw", "-q"]) == 0
    model, tok = qwen_audio.load(TINY, dtype="float32", quantize="int8")
    expected = model.chat(tok, tok.from_list_format([{"audio": clip}, {"text": "what?"}]), None, do_sample=False,
                          max_new_tokens=6)[0]
    assert json.loads(buf.getvalue())["response"] == expected


def test_emulated_bfloat16_is_named_with_a_faster_choice(wide, monkeypatch):
    monkeypatch.setenv("QWEN_AUDIO_NATIVE_BF16", "0")  # as on an AVX2-only CPU
    with pytest.warns(qwen_audio.SlowPathWarning, match="quantize='int8'"):
        qwen_audio.load(wide, dtype=torch.bfloat16)
    assert qwen_audio.load(wide, quantize="int8")[0].dtype == torch.float32  # the fast path there
    monkeypatch.setenv("QWEN_AUDIO_NATIVE_BF16", "1")
    assert qwen_audio.load(wide, quantize="int8")[0].dtype == torch.bfloat16
