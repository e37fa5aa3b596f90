"""The scheduler: many answers per forward pass, prompts read in chunks, each answer as it would be alone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import torch

import qwen_audio
from qwen_audio.audio import SAMPLE_RATE
from qwen_audio.engine import Engine, EngineConfig
from qwen_audio.errors import OptionError
from qwen_audio.messages import tutorial_conversation

from .conftest import golden_query
from .synthetic import synthetic_config, tone, write_checkpoint

GREEDY = dict(do_sample=False, max_new_tokens=12)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("sched") / "ckpt", synthetic_config(seq_length=64), seed=11)


def test_ragged_step_computes_what_each_sequence_computes_alone(ckpt):
    model, _ = qwen_audio.load(ckpt, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    # Three sequences: a prompt read in two chunks, one decoding past the training length (LogN, another
    # NTK alpha), one short; each has its own cache.
    lengths, starts, alphas = [9, 1, 5], [0, 80, 0], [1.0, 3.0, 1.0]
    prompts = [torch.randint(0, model.config.vocab_size, (1, s + n), generator=g) for s, n in zip(starts, lengths)]
    with torch.inference_mode():
        alone, caches = [], []
        for p, s, a in zip(prompts, starts, alphas):
            cache = model.new_cache(1, p.shape[1])
            if s:
                model(p[:, :s], 0, cache, alpha=[a])
            alone.append(model(p[:, s:], s, cache, alpha=[a])[0, -1])
            caches.append(model.new_cache(1, p.shape[1]))
            if s:
                model(p[:, :s], 0, caches[-1], alpha=[a])
        # The same through ragged steps: the first sequence's prompt as 4 + 5 tokens.
        first = model.segment(caches[0], 0, 4, alphas[0])
        model.step(model.embed(prompts[0][:, :4])[0], [first], [3])
        segments = [model.segment(caches[0], 4, 5, alphas[0]), model.segment(caches[1], 80, 1, alphas[1]),
                    model.segment(caches[2], 0, 5, alphas[2])]
        x = torch.cat([model.embed(prompts[0][:, 4:])[0], model.embed(prompts[1][:, 80:])[0],
                       model.embed(prompts[2])[0]])
        logits = model.step(x, segments, [4, 5, 10])
    for i in range(3):
        assert torch.allclose(logits[i], alone[i], atol=1e-5, rtol=1e-5), i
        assert torch.allclose(caches[i].k[1], model_cache_after(model, prompts[i], alphas[i]).k[1], atol=1e-5)


def model_cache_after(model, prompt, alpha):
    cache = model.new_cache(1, prompt.shape[1])
    with torch.inference_mode():
        model(prompt, 0, cache, alpha=[alpha])
    return cache


def test_golden_answers_under_load_equal_the_goldens(tiny, goldens):
    """Every golden conversation at once, each from a thread of its own, through one scheduler: word for word."""
    model, tok = tiny
    chats = goldens[0]["chat"]
    got: dict[int, list[str]] = {}
    errors = []
    steps0 = model.engine.scheduler.steps

    def run(c: int) -> None:
        try:
            history, out = None, []
            for turn in chats[c]["turns"]:
                response, history = model.chat(tok, golden_query(tok, turn["items"]), history, **GREEDY)
                out.append(response)
            got[c] = out
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(len(chats))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for c, chat in enumerate(chats):
        assert got[c] == [t["greedy_response"] for t in chat["turns"]], c
    turns = sum(len(c["turns"]) for c in chats)
    assert model.engine.scheduler.steps - steps0 < turns * GREEDY["max_new_tokens"]  # steps were shared


def test_golden_answers_equal_the_goldens_when_caches_are_preempted(tiny, goldens):
    """The goldens' first questions as one batch, on a budget that holds the first two prompts (177 and 238
    tokens, clips and all) and 10 more columns, caches growing 2 columns at a time: as the two answers grow,
    the second is preempted, waits, and is read again, its clip columns computed again from the features it
    holds (on an engine that keeps no clips or features for others); every answer is the golden, word for word."""
    model, tok = tiny
    saved = model.engine
    chats = goldens[0]["chat"]
    queries = [golden_query(tok, c["turns"][0]["items"]) for c in chats]
    lengths = [len(saved.prepare(tok, tutorial_conversation(q, [], qwen_audio.tokenizer.DEFAULT_SYSTEM),
                                 model.options(**GREEDY)).ids) for q in queries]
    model.engine = Engine(model, EngineConfig(kv_bytes=(lengths[0] + lengths[1] + 10) * saved.column_bytes(),
                                              grow_tokens=2, reuse=False, feature_bytes=0, clip_bytes=0))
    try:
        got = [r for r, _ in model.chat_batch(tok, queries, None, **GREEDY)]
        assert got == [c["turns"][0]["greedy_response"] for c in chats]
        assert model.engine.scheduler.preemptions > 0 and model.engine.scheduler.peak_running >= 2
    finally:
        model.engine = saved


@pytest.mark.parametrize("step_tokens", [17, 64])
def test_prompts_read_in_small_chunks_give_the_golden_answers(tiny, goldens, step_tokens):
    """A 750-token clip span read 17 tokens at a time: the greedy answers are the goldens' (their smallest
    margin between the top two logits is 0.024)."""
    model, tok = tiny
    saved = model.engine
    model.engine = Engine(model, EngineConfig(step_tokens=step_tokens, reuse=False))
    try:
        for chat in goldens[0]["chat"]:
            history = None
            for turn in chat["turns"]:
                response, history = model.chat(tok, golden_query(tok, turn["items"]), history, **GREEDY)
                assert response == turn["greedy_response"]
    finally:
        model.engine = saved


def test_a_short_question_is_answered_while_a_long_prompt_is_read(ckpt, monkeypatch):
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    model.engine = Engine(model, EngineConfig(step_tokens=24, max_batch=4))
    alone = model.chat(tok, "hi", None, do_sample=False, max_new_tokens=2)[0]
    real = type(model).step
    monkeypatch.setattr(type(model), "step", lambda *a: (time.sleep(0.05), real(*a))[1])  # a slower model
    long_query = tok.from_list_format([{"audio": (tone(20.0), SAMPLE_RATE)}, {"text": "describe it"}])
    long_stream = model.chat_stream(tok, long_query, None, do_sample=False, max_new_tokens=4)
    reader = threading.Thread(target=lambda: list(long_stream))
    reader.start()
    scheduler = model.engine.scheduler
    while scheduler.steps < 1:  # the long prompt is being read
        time.sleep(0.001)
    before = scheduler.steps
    short = model.chat(tok, "hi", None, do_sample=False, max_new_tokens=2)[0]
    took = scheduler.steps - before
    reader.join()
    assert short == alone
    # 20 s of audio is 500 prompt positions, 21 steps of 24 tokens: the short question was read in one
    # step and its second token came in the next (one more while it was being prepared, at most).
    assert long_stream.stats.prompt_tokens > 480
    assert took <= 3, took


def test_cancel_from_another_thread_ends_the_answer_at_the_next_step(ckpt):
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    model.engine = Engine(model, EngineConfig(step_tokens=24))
    query = tok.from_list_format([{"audio": (tone(25.0), SAMPLE_RATE)}, {"text": "describe it"}])
    stream = model.chat_stream(tok, query, None, do_sample=False, max_new_tokens=50)
    pieces = []
    reader = threading.Thread(target=lambda: pieces.extend(stream))
    reader.start()
    while model.engine.scheduler.steps < 2:  # the prompt is being read
        time.sleep(0.001)
    stream.cancel()
    reader.join(60)
    assert not reader.is_alive()
    assert stream.history is None and stream.stats is None  # a cancelled answer is not a turn
    for _ in range(200):  # nothing is left running or waiting
        if not model.engine.scheduler.alive():
            break
        time.sleep(0.01)
    assert not model.engine.scheduler.alive()
    assert not any(p.busy for p in model.engine.prefixes.entries)
    assert model.engine.scheduler.steps < 30  # 25 s of audio is 26 steps of 24 tokens: it stopped early
    # The model answers the next question as ever.
    assert model.chat(tok, "hi", None, **GREEDY)[0] == qwen_audio.load(ckpt, dtype=torch.float32)[0].chat(
        tok, "hi", None, **GREEDY)[0]


def test_admission_waits_for_memory_and_every_answer_completes(ckpt):
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    column = model.engine.column_bytes()
    budget = 80 * column  # room for one answer of ~40 prompt + 12 new tokens at a time, not two
    model.engine = Engine(model, EngineConfig(kv_bytes=budget))
    alone = [qwen_audio.load(ckpt, dtype=torch.float32)[0].chat(tok, f"question {i}", None, **GREEDY)[0]
             for i in range(4)]
    peak, answers, stop = [0], [None] * 4, threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], model.engine.scheduler.running)
            time.sleep(0.0005)

    def run(i):
        answers[i] = model.chat(tok, f"question {i}", None, **GREEDY)[0]

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert answers == alone
    assert peak[0] == 1  # never two at once: their caches together exceed the budget


def run_at_once(model, tok, questions: list[str], **options) -> list[str]:
    """Each question from a thread of its own, all at once; the answers in order."""
    answers: list = [None] * len(questions)

    def run(i):
        answers[i] = model.chat(tok, questions[i], None, **options)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.parametrize("options", [dict(do_sample=False, max_new_tokens=24),
                                     dict(do_sample=True, top_k=5, top_p=0.9, seed=7, max_new_tokens=24)])
def test_caches_grow_as_answers_write_and_preempted_answers_go_on_unchanged(ckpt, options):
    """Caches start at prompt + 4 columns and grow by 4; the budget holds two answers' prompts but not their
    whole answers, so the answers that joined last are preempted, wait, and are read again: every answer
    (greedy, and sampled with a seed) is the one it is alone, and no cache is left checked out."""
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    questions = [f"question number {i}" for i in range(4)]
    alone = [qwen_audio.load(ckpt, dtype=torch.float32)[0].chat(tok, q, None, **options)[0] for q in questions]
    prompt = len(model.engine.prepare(tok, tutorial_conversation(questions[0], [], qwen_audio.tokenizer.DEFAULT_SYSTEM),
                                      model.options(**options)).ids)
    column = model.engine.column_bytes()
    budget = (2 * (prompt + 4) + 8) * column  # two answers join; both cannot reach their 24 new tokens
    model.engine = Engine(model, EngineConfig(kv_bytes=budget, grow_tokens=4))
    assert run_at_once(model, tok, questions, **options) == alone
    scheduler = model.engine.scheduler
    assert scheduler.peak_running >= 2 and scheduler.preemptions > 0
    assert not any(p.busy for p in model.engine.prefixes.entries)
    assert model.engine.prefixes.nbytes <= budget


def test_reserving_whole_answers_admits_fewer_than_growing_caches(ckpt):
    """With `grow_tokens` as large as the answers, each answer holds its whole cache from the start (the
    scheduler's old admission): the same budget runs one answer at a time, and nothing is preempted."""
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    options = dict(do_sample=False, max_new_tokens=24)
    questions = [f"question number {i}" for i in range(3)]
    prompt = len(model.engine.prepare(tok, tutorial_conversation(questions[0], [], qwen_audio.tokenizer.DEFAULT_SYSTEM),
                                      model.options(**options)).ids)
    budget = (prompt + 24 + prompt + 4) * model.engine.column_bytes()
    peaks = []
    for grow in (24, 4):
        model.engine = Engine(model, EngineConfig(kv_bytes=budget, grow_tokens=grow))
        run_at_once(model, tok, questions, **options)
        peaks.append((model.engine.scheduler.peak_running, model.engine.scheduler.preemptions))
    assert peaks[0] == (1, 0)
    assert peaks[1][0] >= 2


def test_closing_an_answer_with_unread_ids_and_no_other_reader_ends_it(ckpt):
    """One reader's steps write the other answer's ids too; closing that answer with its ids unread, when
    no one else is reading, runs the step that retires it (it used to wait for a reader that never came)."""
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    engine = model.engine
    cfgs = [model.options(do_sample=False, max_new_tokens=n) for n in (60, 30)]
    first, second = (engine.tokens(engine.prepare(tok, tutorial_conversation(q, [], "sys"), cfg), cfg, set())
                     for q, cfg in zip(("hello", "hi there"), cfgs))
    assert len(list(second)) == 30
    assert not first.seq.out.empty() and not first.seq.ended.is_set()
    closer = threading.Thread(target=first.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive() and first.seq.ended.is_set()
    assert not any(p.busy for p in engine.prefixes.entries)


def test_a_failed_step_fails_its_answers_and_the_next_ones_run(ckpt, monkeypatch):
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    expected = model.chat(tok, "hello", None, **GREEDY)[0]
    model.engine.prefixes.clear()
    real = type(model).step
    calls = [0]

    def flaky(self, x, segments, last):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("a kernel failed")
        return real(self, x, segments, last)

    monkeypatch.setattr(type(model), "step", flaky)
    with pytest.raises(RuntimeError, match="a kernel failed"):
        model.chat(tok, "hello", None, **GREEDY)
    assert not any(p.busy for p in model.engine.prefixes.entries)
    assert model.chat(tok, "hello", None, **GREEDY)[0] == expected


def test_chat_batch_is_written_side_by_side_and_equals_chat(ckpt):
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    queries = [tok.from_list_format([{"audio": (tone(1.0 + i, 300 + 100 * i), SAMPLE_RATE)}, {"text": f"q{i}"}])
               for i in range(3)] + ["plain text"]
    steps0 = model.engine.scheduler.steps
    batch = model.chat_batch(tok, queries, None, **GREEDY)
    steps = model.engine.scheduler.steps - steps0
    fresh, _ = qwen_audio.load(ckpt, dtype=torch.float32)
    assert [r for r, _ in batch] == [fresh.chat(tok, q, None, **GREEDY)[0] for q in queries]
    assert steps < 2 * GREEDY["max_new_tokens"]  # four answers in about the steps of one


def test_engine_config_is_checked():
    with pytest.raises(OptionError, match="step_tokens"):
        EngineConfig(step_tokens=8, max_batch=8)
    with pytest.raises(OptionError, match="max_batch"):
        EngineConfig(max_batch=0)
    with pytest.raises(OptionError, match="grow_tokens"):
        EngineConfig(grow_tokens=0)
    with pytest.raises(OptionError, match="kv_bytes"):
        EngineConfig(kv_bytes=0)  # running answers need their caches
    with pytest.raises(OptionError, match="feature_bytes"):
        EngineConfig(feature_bytes=-1)
    assert EngineConfig(feature_bytes=0, clip_bytes=0).clip_bytes == 0  # keep no clips or features: allowed


def test_a_process_that_exits_mid_answer_stops_the_scheduler_first(ckpt, tmp_path):
    """At exit every answer under way is ended after its step (a daemon thread killed inside a kernel can
    abort the process): a check registered before qwen_audio's runs after it and finds none left."""
    script = tmp_path / "leave.py"
    script.write_text(f"""
import atexit
atexit.register(lambda: print("running at exit:", model.engine.scheduler.alive(), flush=True))
import torch, qwen_audio
model, tok = qwen_audio.load({str(ckpt)!r}, dtype=torch.float32)
stream = model.chat_stream(tok, "hello", None, do_sample=False, max_new_tokens=100000, eos_token_id=0)
pieces = iter(stream)
next(pieces)  # kept: the answer goes on
print("left", flush=True)
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["left", "running at exit: False"]


def test_an_answer_closed_from_inside_a_step_ends_at_the_next_one(ckpt, monkeypatch):
    """A stream's generator finalized on the thread running a step (the garbage collector can run it
    there) closes its answer without waiting for itself; the next step retires it, the others go on."""
    model, tok = qwen_audio.load(ckpt, dtype=torch.float32)
    model.engine = Engine(model, EngineConfig(step_tokens=64))
    cfg = model.options(do_sample=False, max_new_tokens=6)
    engine = model.engine
    p1 = engine.prepare(tok, tutorial_conversation("hello", [], "sys"), cfg)
    p2 = engine.prepare(tok, tutorial_conversation("hi there", [], "sys"), cfg)
    stop = engine.stop_ids(tok, cfg)
    first, second = engine.tokens(p1, cfg, set()), engine.tokens(p2, cfg, stop)
    real, closed = type(model).step, []

    def step(*a):
        if not closed:
            closed.append(True)
            second.close()  # as a finalizer inside the step would
        return real(*a)

    monkeypatch.setattr(type(model), "step", step)
    done = []
    reader = threading.Thread(target=lambda: done.append(list(first)))
    reader.start()
    reader.join(60)
    assert not reader.is_alive() and len(done[0]) == 6  # no deadlock; the first answer is whole
    assert second.seq.ended.is_set() and not any(e.busy for e in engine.prefixes.entries)
