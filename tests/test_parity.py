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
