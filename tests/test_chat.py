"""Conversations: history handling, exact caching, streaming, batching and failure atomicity."""

from __future__ import annotations

import copy

import pytest
import torch

import qwen_audio
from qwen_audio.audio import SAMPLE_RATE, save_wav
from qwen_audio.errors import AudioNotFoundError, PromptError
from qwen_audio.llm import ntk_alpha
from qwen_audio.messages import tutorial_conversation
from qwen_audio.tokenizer import DEFAULT_SYSTEM, chat_prompt

from .synthetic import synthetic_config, tone, write_checkpoint

GREEDY = dict(do_sample=False, max_new_tokens=10)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    cfg = synthetic_config(seq_length=2048)  # prompts stay under it: NTK alpha is 1 throughout
    return qwen_audio.load(write_checkpoint(tmp_path_factory.mktemp("chat") / "ckpt", cfg, seed=3), dtype=torch.float32)


@pytest.fixture(scope="module")
def synth_ntk(tmp_path_factory):
    cfg = synthetic_config(seq_length=64)  # every prompt is past it: alpha grows with the prompt
    return qwen_audio.load(write_checkpoint(tmp_path_factory.mktemp("ntk") / "ckpt", cfg, seed=4), dtype=torch.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three in-memory clips of different lengths and a file clip."""
    path = save_wav(tmp_path_factory.mktemp("clips") / "file.wav", tone(2.5, 330))
    return {"short": (tone(1.0, 200), SAMPLE_RATE), "long": (tone(4.0, 500), SAMPLE_RATE),
            "mid": (tone(2.0, 800, 8000), 8000), "file": str(path)}


def conversation(tok, clips):
    """Four turns: clips in the first, none in the second, a longer clip added in the third."""
    return [
        tok.from_list_format([{"audio": clips["short"]}, {"audio": clips["file"]}, {"text": "compare"}]),
        "and then?",
        tok.from_list_format([{"audio": clips["long"]}, {"text": "and this one?"}]),
        "summarise",
    ]


def run(model, tok, queries, **kw):
    history, responses, stats = None, [], []
    for q in queries:
        stream = model.chat_stream(tok, q, history, **{**GREEDY, **kw})
        pieces = list(stream)
        assert "".join(pieces) == stream.response
        responses.append(stream.response)
        stats.append(stream.stats)
        history = stream.history
    return responses, history, stats


def cached_and_fresh(model, tok, queries):
    """Run the conversation recomputing every turn, then with the caches; both must agree."""
    model.reuse_kv = False
    try:
        fresh = run(model, tok, queries)
    finally:
        model.reuse_kv = True
    cached = run(model, tok, queries)
    assert cached[:2] == fresh[:2]  # responses and history
    return cached


def test_cached_turns_equal_recomputing_from_scratch(synth, clips):
    model, tok = synth
    queries = conversation(tok, clips)
    _, history, stats = cached_and_fresh(model, tok, queries)
    assert stats[1].reused_tokens > 0.8 * stats[1].prompt_tokens  # turn 2 costs only its new tokens
    # Turn 3 adds a clip longer than the others: every clip's features change, so the cache is
    # reused exactly up to the first clip and recomputed from there.
    ids = chat_prompt(tok, tutorial_conversation(queries[2], history[:2], DEFAULT_SYSTEM), model.engine.span).ids
    assert stats[2].reused_tokens == ids.index(tok.audio_start_id)
    assert stats[3].reused_tokens > 0.8 * stats[3].prompt_tokens


def test_ntk_alpha_change_forces_recompute(synth_ntk, clips):
    model, tok = synth_ntk
    _, _, stats = cached_and_fresh(model, tok, conversation(tok, clips))
    alphas = [ntk_alpha(s.prompt_tokens, 64) for s in stats]
    assert len(set(alphas)) > 1 and any(a == b for a, b in zip(alphas, alphas[1:]))
    for before, now, s in zip(alphas, alphas[1:], stats[1:]):
        assert (s.reused_tokens == 0) == (before != now)


def test_chat_does_not_mutate_history(synth, clips):
    model, tok = synth
    history = [("hello", "hi")]
    before = copy.deepcopy(history)
    response, new = model.chat(tok, "more", history, **GREEDY)
    assert history == before and new == before + [("more", response)]


def test_failed_turn_leaves_history_and_caches_intact(synth, clips):
    model, tok = synth
    queries = conversation(tok, clips)
    r1, h1 = model.chat(tok, queries[0], None, **GREEDY)
    r2, h2 = model.chat(tok, queries[1], h1, **GREEDY)
    pool = [(list(p.ids), p.busy) for p in model.engine.prefixes.entries]
    bad = tok.from_list_format([{"audio": "/no/such/clip.wav"}, {"text": "?"}])
    with pytest.raises(AudioNotFoundError, match="/no/such/clip.wav"):
        model.chat(tok, bad, h2, **GREEDY)
    assert [(list(p.ids), p.busy) for p in model.engine.prefixes.entries] == pool  # nothing was touched
    r3, _ = model.chat(tok, queries[3], h2, **GREEDY)
    model.reuse_kv = False
    try:
        assert model.chat(tok, queries[3], h2, **GREEDY)[0] == r3
    finally:
        model.reuse_kv = True


def test_abandoned_stream_keeps_the_cache_usable(synth, clips):
    model, tok = synth
    queries = conversation(tok, clips)
    expected = model.chat(tok, queries[0], None, **GREEDY)[0]
    stream = model.chat_stream(tok, queries[0], None, do_sample=False, max_new_tokens=10)
    next(iter(stream), None)  # the reader goes away after one piece (or Ctrl-C)
    del stream
    assert model.chat(tok, queries[0], None, **GREEDY)[0] == expected


def test_batch_equals_one_by_one(synth, clips):
    model, tok = synth
    queries = conversation(tok, clips)
    h = model.chat(tok, queries[0], None, **GREEDY)[1]
    cases = [(queries[0], None), ("hello there", None), (queries[2], h), ("x", [("a", "b")])]
    single = [model.chat(tok, q, hist, **GREEDY) for q, hist in cases]
    batched = model.chat_batch(tok, [q for q, _ in cases], [hist for _, hist in cases], **GREEDY)
    assert batched == single


def test_batch_of_tiny_goldens(tiny, goldens):
    from .conftest import golden_query

    model, tok = tiny
    firsts = [c["turns"][0] for c in goldens[0]["chat"]]
    out = model.chat_batch(tok, [golden_query(tok, t["items"]) for t in firsts], None, do_sample=False, max_new_tokens=12)
    assert [r for r, _ in out] == [t["greedy_response"] for t in firsts]


def test_prompt_longer_than_the_window(synth):
    model, tok = synth
    with pytest.raises(PromptError, match="longer than the model's window of 4096"):
        model.chat(tok, "hello " * 5000, None, **GREEDY)


def test_malformed_prompts(synth):
    model, tok = synth
    with pytest.raises(PromptError, match="unclosed <audio>"):
        model.chat(tok, "Audio 1:<audio>x.wav what is it", None, **GREEDY)
    with pytest.raises(PromptError, match="query must be a string"):
        model.chat(tok, [{"text": "hi"}], None, **GREEDY)
    with pytest.raises(PromptError, match="pairs"):
        model.chat(tok, "hi", ["not a pair"], **GREEDY)


def test_stream_never_splits_utf8(tiny, goldens):
    """The golden answers contain multi-byte characters split across tokens (one even decodes to U+FFFD)."""
    from .conftest import golden_query

    model, tok = tiny
    for c in goldens[0]["chat"]:
        history = None
        for turn in c["turns"]:
            stream = model.chat_stream(tok, golden_query(tok, turn["items"]), history, do_sample=False, max_new_tokens=12)
            pieces = list(stream)
            assert "".join(pieces) == turn["greedy_response"] == stream.response
            history = stream.history


def test_sampled_chat_is_reproducible_with_a_seed(synth):
    model, tok = synth
    a = model.chat(tok, "hello", None, do_sample=True, top_p=0.9, seed=7, max_new_tokens=8)
    b = model.chat(tok, "hello", None, do_sample=True, top_p=0.9, seed=7, max_new_tokens=8)
    assert a == b


def test_base_model_config_is_refused_by_chat(synth):
    model, tok = synth
    with pytest.raises(PromptError, match="chat_format 'chatml'.*'raw'"):
        model.chat(tok, "hi", None, chat_format="raw")


def test_interleaved_streams_and_threads_match_sequential_answers(synth, clips):
    import threading

    model, tok = synth
    queries = conversation(tok, clips)
    alone = [model.chat(tok, q, None, **GREEDY)[0] for q in queries[:3]]
    # Two streams of one thread, advanced in turns: the second may not touch the first's cache.
    a = model.chat_stream(tok, queries[0], None, **GREEDY)
    b = model.chat_stream(tok, queries[2], None, **GREEDY)
    ia, ib = iter(a), iter(b)
    for _ in range(3):
        next(ia, None), next(ib, None)
    list(ia), list(ib)
    assert [a.response, b.response] == [alone[0], alone[2]]
    # Threads: each conversation gets what it would alone.
    results = {}

    def worker(i):
        results[i] = model.chat(tok, queries[i], None, **GREEDY)[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert [results[i] for i in range(3)] == alone
    assert model.chat(tok, queries[1], model.chat(tok, queries[0], None, **GREEDY)[1], **GREEDY)[0] == \
        model.chat(tok, queries[1], [(queries[0], alone[0])], **GREEDY)[0]
