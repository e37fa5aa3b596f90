"""Weight-only int8 / int4 on the CPU: the numbers, the layers, whole models against float32, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import qwen_audio
import qwen_audio.quantize as quantize
from qwen_audio.quantize import (
    INT8_MM_ROWS,
    PACKED_ROWS,
    PACKED_ROWS_AVX512_FLOAT32,
    QuantEmbedding,
    Quantization,
    QuantLinear,
    int4_layout_is_known,
    int8_products,
    packed_rows,
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
from qwen_audio.quantize import QuantLinear, int4_block, int8_products
w = torch.randn(192, 256, generator=torch.Generator().manual_seed(3)) * 0.02
errors = []
for bits, rows, dtype in ((4, 3, torch.bfloat16), (4, 100, torch.float32), (8, 100, torch.float32)):
    layer = QuantLinear(256, 192, False, bits, 64)
    layer.set_weight(w, dtype)
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(4)).to(dtype)
    dense = x.float() @ layer.dequantize(torch.float32).t()
    errors.append(float((layer(x).float() - dense).abs().max() / dense.abs().max()))
print(int4_block(), int8_products(), *errors)
"""


def test_an_avx2_cpu_reads_its_int4_packing_and_needs_no_int8_products():
    """The CPU int4 kernel packs by the vector width it runs with: 64-row blocks with AVX-512, 32 with AVX2.
    Held to AVX2, the layout must still be read (or int4 would quietly become int8 on AVX2-only CPUs), by the
    packed kernel and by the many-row path (`dequantize_t`). And there oneDNN's int8 product saturates (wrong
    sums): `int8_products` must say no, and int8 layers take the dense product."""
    out = subprocess.run([sys.executable, "-c", AVX2_CHECK], capture_output=True, text=True, check=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    block, products, *errors = out.stdout.split()
    assert block in ("32", "64") and products == "False", out.stdout
    assert float(errors[0]) < 0.02 and max(map(float, errors[1:])) < 1e-5, out.stdout


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 40, 200])  # the packed kernel (few rows) and the paths for many
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
    tol = 1e-4 if dtype == torch.float32 and 2 * rows > packed_rows(bits, dtype) else 0.05
    assert (y.float() - ref).abs().max() <= tol * ref.abs().max()
    exact = F.linear(x.float(), w, b)  # and the dequantized weight is close to the original
    assert F.cosine_similarity(ref.flatten(), exact.flatten(), dim=0) > (0.9999 if bits == 8 else 0.995)


# Many rows: int8 through int8 products (where `int8_products`) or the converted weight, int4 through
# `dequantize_t`. Against the product with the dequantized weight, in float64: float32 within 1e-4 of the
# largest output (int8 products: each row of x in two int8 parts, within 1/64516 of its largest value; the
# dense paths: float32 rounding), bfloat16 within 1e-2 (its rounding of the product and of the output: ~4e-3).
# Rows just over each threshold, and several hundred; 1088 outputs: a part block after full ones.
MANY_ROWS = sorted({*(n + 1 for n in (*PACKED_ROWS.values(), *PACKED_ROWS_AVX512_FLOAT32.values(), *INT8_MM_ROWS)),
                    300, 700})


def many_rows_layer(bits, dtype, n=1088, k=320):
    g = torch.Generator().manual_seed(5)
    layer = QuantLinear(k, n, True, bits, 64)
    layer.set_weight(torch.randn(n, k, generator=g) * 0.02, dtype)
    layer.bias = torch.nn.Parameter(torch.randn(n, generator=g).to(dtype), requires_grad=False)
    return layer


def exact_product(layer, x):
    return x.double() @ layer.dequantize(torch.float64).t() + layer.bias.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# int8 with the int8 products, and as on a CPU without them; int4 (which never uses them)
@pytest.mark.parametrize("bits, products", [(8, True), (8, False), (4, False)])
def test_many_rows_against_the_dequantized_product(bits, dtype, products, monkeypatch):
    if products and not int8_products():
        pytest.skip("this CPU has no exact int8 products (VNNI / AMX)")
    monkeypatch.setattr(quantize, "_INT8_MM", products)
    layer = many_rows_layer(bits, dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    fewest = INT8_MM_ROWS[0] if bits == 8 and products else packed_rows(bits, dtype)  # up to here: packed kernels
    for rows in [r for r in MANY_ROWS if r > fewest]:
        x = torch.randn(rows, layer.in_features, generator=torch.Generator().manual_seed(rows)).to(dtype)
        with torch.inference_mode():
            y = layer(x)
        ref = exact_product(layer, x)
        assert y.dtype == dtype and y.shape == ref.shape
        err = float((y.double() - ref).abs().max() / ref.abs().max())
        assert err <= tol, (rows, err)
        assert F.cosine_similarity(y.double().flatten(), ref.flatten(), dim=0) > 1 - tol ** 2 / 10, rows


def test_dequantize_t_is_dequantize_rows_transposed():
    """The same numbers in float32; in bfloat16 those rounded once (`dequantize_rows` rounds twice there)."""
    layer = many_rows_layer(4, torch.float32)
    rows = torch.empty(512, layer.in_features)
    for start in (0, 512, 1024):
        n = min(512, layer.out_features - start)
        t = layer.dequantize_t(start, torch.empty(layer.in_features, n))
        assert torch.equal(t.t(), layer.dequantize_rows(start, rows[:n]))
        assert torch.equal(layer.dequantize_t(start, torch.empty(layer.in_features, n, dtype=torch.bfloat16)),
                           t.to(torch.bfloat16))


def test_int8_products_keep_what_outliers_would_cost_one_int8_part():
    """Rows whose largest value is ~100x the typical one (as the inputs of an LLM's down projection): one int8
    part per row keeps 2-3 significant bits of the others (~3e-2 error, measured); two parts are ~10x finer
    than rounding x to bfloat16 (1.3e-4 against 1.2e-3 to 2.2e-3)."""
    if not int8_products():
        pytest.skip("this CPU has no exact int8 products (VNNI / AMX)")
    layer = many_rows_layer(8, torch.float32)
    x = torch.randn(64, layer.in_features, generator=torch.Generator().manual_seed(6))
    x[:, 7] *= 100
    x[3] = 0  # a zero row: zeros, not a division by zero
    w = layer.dequantize(torch.float64)
    ref = x.double() @ w.t()

    def err(y):
        return float((y.double() - ref).abs().max() / ref.abs().max())

    with torch.inference_mode():
        y = layer.int8_product(x)
    s = x.abs().amax(1, keepdim=True) / 127
    one_part = (x / s).nan_to_num().round() * s
    assert err(y) < err(x.bfloat16().double() @ w.t()) / 4 and err(one_part.double() @ w.t()) > 10 * err(y)
    assert torch.equal(y[3], torch.zeros_like(y[3]))
    x[5, 2] = float("inf")  # and a row that overflowed stays non-finite, as with the dense product
    with torch.inference_mode():
        assert not torch.isfinite(layer.int8_product(x)[5]).all()


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
    if importlib.util.find_spec("faster_whisper") is not None:  # lite's quantize is its LLM's, checked at load
        with pytest.raises(qwen_audio.OptionError, match="unknown quantize 'int3'"):
            qwen_audio.load("lite", quantize="int3")


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


def test_a_layer_used_in_inference_mode_works_outside_it_on_the_same_thread():
    """The engine computes in inference mode on the reader's own thread; the layer's scratch buffers must
    still take the same thread's calls outside it."""
    torch.manual_seed(0)
    layer = QuantLinear(256, 128, False, 4, 64)
    layer.set_weight(torch.randn(128, 256) * 0.02, torch.float32)
    x = torch.randn(200, 256)
    with torch.inference_mode():
        inside = layer(x)
    assert torch.equal(layer(x), inside)
