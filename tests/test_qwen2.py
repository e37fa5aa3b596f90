"""The Qwen2 decoder against transformers' (the reference, a test-only extra), on tiny random checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from qwen_audio.errors import CheckpointError
from qwen_audio.models.qwen2 import Qwen2Config, Qwen2LM, load_state

transformers = pytest.importorskip("transformers", reason="the reference: pip install 'qwen-audio[test]'")

TINY = dict(vocab_size=256, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6)


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def pair(request, tmp_path_factory):
    """(ours, transformers') on the same tiny random checkpoint, written by transformers' save_pretrained."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(**TINY, tie_word_embeddings=request.param)
    reference = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # biases start at zero: give them values so that they are checked too
        for name, p in reference.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("qwen2")
    reference.save_pretrained(folder)
    cfg = Qwen2Config.from_dict(json.loads((folder / "config.json").read_text()))
    ours = Qwen2LM(cfg)
    load_state(ours, load_file(folder / "model.safetensors"))
    return ours.eval(), reference


def test_config_reads_both_transformers_layouts():
    v4 = dict(TINY)  # transformers 4.x: rope_theta at the top
    v5 = {k: v for k, v in TINY.items() if k != "rope_theta"} | {"rope_parameters": {"rope_type": "default",
                                                                                     "rope_theta": 10000.0}}
    assert Qwen2Config.from_dict(v4) == Qwen2Config.from_dict(v5)
    assert Qwen2Config.from_dict(v4).n_kv_head == 2 and Qwen2Config.from_dict(v4).head_dim == 16
    with pytest.raises(CheckpointError, match="RoPE scaling"):
        Qwen2Config.from_dict(v4 | {"rope_scaling": {"type": "yarn", "factor": 4.0}})
    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        Qwen2Config.from_dict({k: v for k, v in v4.items() if k != "num_hidden_layers"})


def test_logits_of_a_whole_prompt(pair):
    ours, reference = pair
    tokens = torch.randint(0, TINY["vocab_size"], (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        mine = ours(tokens)
        theirs = reference(tokens).logits
    assert (mine - theirs).abs().max() < 1e-5


def test_ragged_chunks_of_two_sequences_give_the_reference_logits(pair):
    """Two prompts read in chunks, side by side in the same steps, then one decode step each."""
    ours, reference = pair
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 256, (1, 23), generator=g), torch.randint(0, 256, (1, 9), generator=g)
    ca, cb = ours.new_cache(1, 32), ours.new_cache(1, 32)
    with torch.inference_mode():
        ours.step(ours.embed(a[:, :10])[0], [ours.segment(ca, 0, 10)], [])
        x = torch.cat([ours.embed(a[:, 10:])[0], ours.embed(b)[0]])
        first = ours.step(x, [ours.segment(ca, 10, 13), ours.segment(cb, 0, 9)], [12, 21])
        nxt = torch.tensor([[7], [11]])
        second = ours.step(ours.embed(nxt.T)[0], [ours.segment(ca, 23, 1), ours.segment(cb, 9, 1)], [0, 1])
        ref_a = reference(torch.cat([a, nxt[:1]], dim=1)).logits[0]
        ref_b = reference(torch.cat([b, nxt[1:]], dim=1)).logits[0]
    assert (first[0] - ref_a[22]).abs().max() < 1e-5 and (first[1] - ref_b[8]).abs().max() < 1e-5
    assert (second[0] - ref_a[23]).abs().max() < 1e-5 and (second[1] - ref_b[9]).abs().max() < 1e-5


def test_greedy_tokens_equal_the_reference_generate(pair):
    ours, reference = pair
    prompt = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10,
                                      do_sample=False, pad_token_id=0)[0, 12:].tolist()
        cache = ours.new_cache(1, 22)
        logits = ours(prompt, 0, cache)[0, -1]
        got = []
        for i in range(10):
            got.append(int(logits.argmax()))
            logits = ours(torch.tensor([[got[-1]]]), 12 + i, cache)[0, -1]
    assert got == expected


def test_a_checkpoint_that_does_not_fit_is_named(pair):
    ours, _ = pair
    state = dict(ours.state_dict())
    state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="wrong shape.*k_proj"):
        load_state(Qwen2LM(ours.config), state)
    del state["model.norm.weight"]
    with pytest.raises(CheckpointError, match="missing.*model.norm.weight"):
        load_state(Qwen2LM(ours.config), state)
