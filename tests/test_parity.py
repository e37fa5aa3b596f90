"""Parity with the published code: goldens made by running it on the tiny official-layout checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_audio.audio import load_clip
from qwen_audio.messages import tutorial_conversation
from qwen_audio.tokenizer import DEFAULT_SYSTEM, chat_prompt

from .conftest import AUDIO, golden_query


def test_tokenizer_ids_and_text(tiny, goldens):
    _, tok = tiny
    for case in goldens[0]["tokenizer"]:
        ids = tok.encode(case["text"])
        assert ids == case["ids"], case["text"]
        assert tok.decode(ids) == case["decoded"]


def test_audio_lengths_and_mels(goldens):
    g, z = goldens
    for case in g["audio"]:
        clip = load_clip(AUDIO / case["file"])
        n = clip.length
        assert [n.after_cnn, n.n_tokens] == case["input_audio_lengths"]
        assert n.span == case["audio_span_tokens"]
        assert np.abs(clip.mel().numpy() - z[case["mel"]]).max() < 1e-4, case["file"]


def test_encoder_outputs(tiny, goldens):
    model, _ = tiny
    g, z = goldens
    for case in g["audio"]:
        clip = load_clip(AUDIO / case["file"])
        with torch.inference_mode():
            out = model.embed_audio(clip.mel()[None], [clip.length])[0].numpy()
        ref = z[case["audio_embeds"]]
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max(), case["file"]


def conversations(goldens):
    for c in goldens[0]["chat"]:
        yield c["turns"]


def test_prompt_ids_and_last_logits(tiny, goldens):
    model, tok = tiny
    z = goldens[1]
    span = lambda audio: load_clip(audio.source).length.span  # noqa: E731
    for turns in conversations(goldens):
        history = []
        for turn in turns:
            query = golden_query(tok, turn["items"])
            prompt = chat_prompt(tok, tutorial_conversation(query, history, DEFAULT_SYSTEM), span)
            assert prompt.ids == turn["context_ids"]
            feats, _ = model.engine.encode(prompt.clips)
            with torch.inference_mode():
                logits = model(torch.tensor([prompt.ids]), audio=feats, last_only=True)[0, -1].numpy()
            ref = z[turn["last_logits"]]
            assert np.abs(logits - ref).max() <= 1e-4 * np.abs(ref).max()
            assert list(np.argsort(-logits, kind="stable")[:10]) == list(np.argsort(-ref, kind="stable")[:10])
            history.append((query, turn["greedy_response"]))


@pytest.mark.parametrize("reuse_kv", [True, False], ids=["cached", "from-scratch"])
def test_greedy_chat_turn_by_turn(tiny, goldens, reuse_kv):
    model, tok = tiny
    model.reuse_kv = reuse_kv
    try:
        for turns in conversations(goldens):
            history = None
            for turn in turns:
                query = golden_query(tok, turn["items"])
                response, history = model.chat(tok, query, history, do_sample=False, max_new_tokens=12)
                assert response == turn["greedy_response"]
    finally:
        model.reuse_kv = True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_answers_as_the_cpu_does(tiny, goldens):
    """Batched answers (left padding, a captured step per padding), transcription and a multi-turn chat
    on a CUDA device in float32, with CUDA graphs even for short answers, equal the CPU's."""
    import qwen_audio
    from qwen_audio import cuda

    cpu, tok = tiny
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    gpu = qwen_audio.load(cpu.name_or_path, dtype=torch.float32, device="cuda")[0]
    saved, cuda.MIN_STEPS = cuda.MIN_STEPS, 1
    try:
        queries = [golden_query(tok, t["items"]) for c in goldens[0]["chat"] for t in c["turns"][:1]]
        opts = dict(do_sample=False, max_new_tokens=24)
        assert [r for r, _ in gpu.chat_batch(tok, queries, **opts)] == [r for r, _ in cpu.chat_batch(tok, queries, **opts)]
        clip = AUDIO / "1272-128104-0000.flac"
        assert gpu.transcribe(tok, clip, timestamps=True).text == cpu.transcribe(tok, clip, timestamps=True).text

        def converse(model) -> list[str]:
            history, answers = None, []
            for q in queries[:2] + ["And then?"]:
                answer, history = model.chat(tok, q, history, **opts)
                answers.append(answer)
            return answers

        assert converse(gpu) == converse(cpu)
    finally:
        cuda.MIN_STEPS = saved
