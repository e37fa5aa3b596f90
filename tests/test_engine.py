"""The engine: prefixes shared by many conversations within a memory budget, state kept out of the weights."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import qwen_audio
from qwen_audio.audio import N_SAMPLES, SAMPLE_RATE, save_wav
from qwen_audio.engine import Engine, EngineConfig, PrefixPool
from qwen_audio.errors import AudioTooShortError, OptionError, PromptError

from .synthetic import synthetic_config, tone, write_checkpoint

GREEDY = dict(do_sample=False, max_new_tokens=8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("engine") / "ckpt", synthetic_config(seq_length=2048), seed=5)


@pytest.fixture
def synth(ckpt):
    """A fresh model per test: the pool starts empty."""
    return qwen_audio.load(ckpt, dtype=torch.float32)


def q(tok, text, *clips):
    return tok.from_list_format([{"audio": c} for c in clips] + [{"text": text}])


def fresh_answer(ckpt, query, history=None, dtype=torch.float32):
    model, tok = qwen_audio.load(ckpt, dtype=dtype)
    model.reuse_kv = False
    return model.chat(tok, query, history, **GREEDY)[0]


def test_two_interleaved_conversations_each_reuse_their_whole_earlier_turns(synth, ckpt):
    model, tok = synth
    a1 = q(tok, "first", (tone(1.0, 300), SAMPLE_RATE))
    b1 = q(tok, "other", (tone(2.0, 700), SAMPLE_RATE))
    sa = model.chat_stream(tok, a1, None, **GREEDY)
    list(sa)
    sb = model.chat_stream(tok, b1, None, **GREEDY)
    list(sb)
    sa2 = model.chat_stream(tok, "and then?", sa.history, **GREEDY)
    list(sa2)
    sb2 = model.chat_stream(tok, "and then?", sb.history, **GREEDY)
    list(sb2)
    for first, second in ((sa, sa2), (sb, sb2)):
        # Turn 1's prompt and as much of its answer as re-encodes to the same ids (random weights write
        # odd tokens) are reused: as much as a conversation that had the model to itself.
        alone, tok2 = qwen_audio.load(ckpt, dtype=torch.float32)
        alone.chat(tok2, first.history[0][0], None, **GREEDY)
        solo = alone.chat_stream(tok2, "and then?", first.history, **GREEDY)
        list(solo)
        assert second.stats.reused_tokens == solo.stats.reused_tokens > first.stats.prompt_tokens
    assert sa2.response == fresh_answer(ckpt, "and then?", sa.history)
    assert sb2.response == fresh_answer(ckpt, "and then?", sb.history)


def test_a_new_conversation_reuses_a_shared_start(synth):
    model, tok = synth
    clip = (tone(1.5, 440), SAMPLE_RATE)
    first = model.chat_stream(tok, q(tok, "what is it?", clip), None, **GREEDY)
    list(first)
    other = model.chat_stream(tok, q(tok, "how long is it?", clip), None, **GREEDY)
    list(other)
    # The system prompt, the label and the whole clip are shared: all of it is reused.
    ids = model.engine.prepare(tok, qwen_audio.messages.tutorial_conversation(
        q(tok, "how long is it?", clip), [], qwen_audio.tokenizer.DEFAULT_SYSTEM), model.generation_config.updated(**GREEDY)).ids
    assert other.stats.reused_tokens >= ids.index(tok.audio_end_id) + 1
    assert len(model.engine.prefixes.entries) == 2  # the first conversation keeps its own prefix


def test_prefixes_stay_within_the_memory_budget_and_answers_do_not_change(ckpt):
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    per_token = model.engine.column_bytes()
    budget = 400 * per_token
    model.engine = qwen_audio.Engine(model, EngineConfig(kv_bytes=budget))
    answers = []
    for i in range(6):
        answers.append(model.chat(tok, q(tok, f"question {i}", (tone(1.0, 200 + 50 * i), SAMPLE_RATE)), None, **GREEDY)[0])
        assert model.engine.prefixes.nbytes <= budget
    assert len(model.engine.prefixes.entries) < 6
    for i in (0, 5):
        assert answers[i] == fresh_answer(ckpt, q(tok, f"question {i}", (tone(1.0, 200 + 50 * i), SAMPLE_RATE)))


def test_pool_takes_over_a_continued_prefix_and_copies_a_branch():
    made = []

    def new_cache(capacity):
        made.append(capacity)
        return qwen_audio.llm.KVCache(1, 1, 1, 2, capacity, torch.float32, "cpu")

    pool = PrefixPool(max_bytes=1 << 20)
    p, n = pool.checkout([1, 2, 3], [], 1.0, 5, 0, new_cache, 16)
    p.cache.k[0][..., :3, :] = torch.tensor([1.0, 2.0, 3.0])[:, None]
    pool.checkin(p, [1, 2, 3, 4], [], keep=True)
    same, n = pool.checkout([1, 2, 3, 4, 5, 6], [], 1.0, 8, 0, new_cache, 16)
    assert same is p and n == 4 and len(made) == 1  # continued whole: taken over, no copy
    pool.checkin(same, [1, 2, 3, 4, 5], [], keep=True)
    branch, n = pool.checkout([1, 2, 9, 9], [], 1.0, 6, 0, new_cache, 16)
    assert branch is not p and n == 2 and len(made) == 2  # a branch copies the shared columns
    assert torch.equal(branch.cache.k[0][..., :2, 0], p.cache.k[0][..., :2, 0])
    assert pool.checkout([1, 2, 3], [], 3.0, 5, 0, new_cache, 16)[1] == 0  # another NTK alpha: nothing shared
    assert pool.checkout([1, 2, 3], [], 1.0, 5, 1, new_cache, 16)[1] == 0  # other weights: nothing shared


def test_an_abandoned_stream_does_not_turn_off_reuse_and_close_hands_back(synth, ckpt):
    model, tok = synth
    r1, h1 = model.chat(tok, q(tok, "hello", (tone(1.0), SAMPLE_RATE)), None, **GREEDY)
    held = model.chat_stream(tok, "go on", h1, **GREEDY)
    it = iter(held)
    next(it)  # the reader keeps the stream but never finishes it
    again = model.chat_stream(tok, "go on", h1, **GREEDY)
    text = "".join(again)
    assert again.stats.reused_tokens == held_reuse(ckpt, h1) > 0  # taken from the prefix of turn 1 or the held answer
    assert text == fresh_answer(ckpt, "go on", h1)
    held.close()
    assert not any(p.busy for p in model.engine.prefixes.entries) and held.history is None
    assert held.response == text[:len(held.response)]


def held_reuse(ckpt, history):
    """What a continuation reuses on a model of its own."""
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    model.chat(tok, history[0][0], None, **GREEDY)
    stream = model.chat_stream(tok, "go on", history, **GREEDY)
    list(stream)
    return stream.stats.reused_tokens


def test_leaving_a_for_loop_hands_the_prefix_back(synth):
    model, tok = synth
    stream = model.chat_stream(tok, "hi there", None, **GREEDY)
    for _ in stream:
        break
    assert not any(p.busy for p in model.engine.prefixes.entries)


def test_moving_the_model_after_a_turn_recomputes_instead_of_crashing(synth, ckpt):
    model, tok = synth
    r1, h1 = model.chat(tok, q(tok, "what?", (tone(1.0), SAMPLE_RATE)), None, **GREEDY)
    model.to(torch.bfloat16)
    stream = model.chat_stream(tok, "and?", h1, **GREEDY)
    assert "".join(stream) == fresh_answer(ckpt, "and?", h1, dtype=torch.bfloat16)
    assert stream.stats.reused_tokens == 0


def test_copies_of_a_model_start_with_their_own_engine(synth):
    model, tok = synth
    r, _ = model.chat(tok, "hello", None, **GREEDY)
    twin = copy.deepcopy(model)
    assert twin.engine is not model.engine and twin.engine.model is twin
    assert twin.chat(tok, "hello", None, **GREEDY)[0] == r


def test_max_new_tokens_far_past_the_window_is_capped(tmp_path):
    cfg = synthetic_config(seq_length=2048, max_position_embeddings=96)
    model, tok = qwen_audio.load(write_checkpoint(tmp_path / "small", cfg, seed=6), dtype=torch.float32)
    stream = model.chat_stream(tok, "hi", None, do_sample=False, max_new_tokens=10**12, eos_token_id=0)
    list(stream)  # a cache of 10^12 columns would fail; the window leaves room for a few dozen
    assert stream.stats.prompt_tokens + stream.stats.new_tokens <= 96
    assert max(p.cache.capacity for p in model.engine.prefixes.entries) <= 96


def test_clips_shorter_than_30_ms_and_stray_tags_are_named(synth):
    model, tok = synth
    with pytest.raises(AudioTooShortError, match="too short"):
        model.chat_stream(tok, q(tok, "what?", (np.full(200, 0.1, np.float32), SAMPLE_RATE)), None, **GREEDY)
    with pytest.raises(PromptError, match="stray </audio>"):
        model.chat(tok, "what </audio> is this", None, **GREEDY)
    with pytest.raises(PromptError, match="spans lines"):
        model.chat(tok, "Audio 1:<audio>a\nb.wav</audio>\nwhat?", None, **GREEDY)


def test_chat_decodes_only_what_the_model_hears(synth, tmp_path, monkeypatch):
    """A long file is read only as far as the 30 s the model hears (the rest is never decoded)."""
    from qwen_audio import audio

    model, tok = synth
    path = save_wav(tmp_path / "long.wav", np.tile(tone(1.0, 300), 300))  # 5 minutes
    read = []
    real = audio.AudioReader.read_pcm

    def counting(self, n=None):
        out = real(self, n)
        read.append(len(out))
        return out

    monkeypatch.setattr(audio.AudioReader, "read_pcm", counting)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.chat(tok, q(tok, "what?", path), None, **GREEDY)
    assert sum(read) == N_SAMPLES + 1
    assert any("300.0 s of audio; only the first 30 s are used" in str(w.message) for w in caught)


def test_clips_of_prompts_prepared_together_are_encoded_in_one_batch(synth, ckpt, monkeypatch):
    """Four questions arrive while the encoder runs for a fifth: their clips (the same length, one of them sent
    twice) are encoded in one batch of three, and every answer equals the same question asked alone."""
    import threading

    model, tok = synth
    engine = model.engine = Engine(model, EngineConfig(batch_clips=True))  # on a CPU the default encodes per prompt
    clips = [(tone(1.0, 300 + 50 * i), SAMPLE_RATE) for i in range(4)]
    queries = [q(tok, "what is it", c) for c in [*clips, clips[1]]]
    alone = [fresh_answer(ckpt, query) for query in queries]
    real, sizes = engine.model.embed_audio, []
    entered, release = threading.Event(), threading.Event()

    def held(mels, lengths, t_max=None):
        sizes.append(len(mels))
        if len(sizes) == 1:
            entered.set()
            assert release.wait(30)
        return real(mels, lengths, t_max)

    monkeypatch.setattr(engine.model, "embed_audio", held)
    got: dict[int, str] = {}

    def ask(i):
        got[i] = model.chat(tok, queries[i], None, **GREEDY)[0]

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    assert entered.wait(30)
    rest = [threading.Thread(target=ask, args=(i,)) for i in range(1, 5)]
    for t in rest:
        t.start()
    while len(engine.encoder._pending) < 4:  # all four wait behind the first pass
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *rest]:
        t.join(60)
    assert sizes == [1, 3]  # clips[1], brought twice, encoded once
    assert [got[i] for i in range(5)] == alone
    assert engine.encoder.batches == 2 and engine.encoder.largest == 4


def test_on_a_cpu_each_prompt_encodes_its_clips_on_its_own_thread_by_default(synth):
    model, tok = synth
    model.chat(tok, q(tok, "what is it", (tone(1.0, 330), SAMPLE_RATE)), None, **GREEDY)
    assert model.engine.encoder.batches == 0
    with pytest.raises(OptionError, match="batch_clips must be True, False or None"):
        EngineConfig(batch_clips="yes")
