"""The contract every backend keeps, checked on each: the faithful model (a synthetic checkpoint) and `lite`.

History is never mutated; a stream equals the chat; streams read in turns or from threads each get
their own answer; unknown or invalid options and bad audio are refused before any text; structured
messages open nothing that text names; a failed turn leaves the conversation usable; an option set on
`model.generation_config` (as transformers users set it) is checked there and used by the next call.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

import qwen_audio
from qwen_audio import Audio, Message, Text
from qwen_audio.audio import SAMPLE_RATE, save_wav
from qwen_audio.backend import Backend, ChatStream, Segment, Transcript, TurnStats
from qwen_audio.errors import (
    AudioDecodeError,
    AudioNotFoundError,
    AudioTooShortError,
    EmptyAudioError,
    OptionError,
    PromptError,
)

from .conftest import AUDIO
from .synthetic import synthetic_config, tone, write_checkpoint

SPEECH = AUDIO / "1272-128104-0000.flac"


class Case:
    """A backend under test, with options that keep answers short and reproducible."""

    def __init__(self, name, model, tok, options, open_question):
        self.name, self.model, self.tok, self.options = name, model, tok, options
        self.open_question = open_question  # a question answered in several pieces

    def query(self, text, *clips):
        return self.tok.from_list_format([{"audio": c} for c in clips] + [{"text": text}])

    def chat(self, query, history=None, **kw):
        return self.model.chat(self.tok, query, history, **{**self.options, **kw})

    def stream(self, query, history=None, **kw):
        return self.model.chat_stream(self.tok, query, history, **{**self.options, **kw})


@pytest.fixture(scope="module", params=["faithful", "lite"])
def case(request, tmp_path_factory):
    if not SPEECH.is_file():
        pytest.skip(f"tutorial clips not found at {AUDIO} (set QWEN_AUDIO_FIXTURES)")
    if request.param == "faithful":
        folder = write_checkpoint(tmp_path_factory.mktemp("contract") / "ckpt", synthetic_config(seq_length=2048), seed=8)
        model, tok = qwen_audio.load(folder, dtype=torch.float32)
        return Case("faithful", model, tok, dict(do_sample=False, max_new_tokens=8), "tell me more")
    pytest.importorskip("faster_whisper", reason="lite extras not installed: pip install 'qwen-audio[lite]'")
    model, tok = qwen_audio.load("lite")
    return Case("lite", model, tok, dict(max_new_tokens=8), "Write a short story about this audio.")


def test_both_are_backends(case):
    assert isinstance(case.model, Backend)
    assert isinstance(case.model.generation_config, qwen_audio.GenerationConfig)


def test_history_is_never_mutated(case):
    q1 = case.query("Recognize the speech", str(SPEECH))
    r1, h1 = case.chat(q1)
    before = copy.deepcopy(h1)
    r2, h2 = case.chat("and what language is it?", h1)
    assert h1 == before and h2 == before + [("and what language is it?", r2)]
    h2.append(("x", "y"))
    assert h1 == before


def test_stream_equals_chat(case):
    q = case.query(case.open_question, str(SPEECH))
    response, history = case.chat(q)
    stream = case.stream(q)
    assert isinstance(stream, ChatStream)
    pieces = list(stream)
    assert "".join(pieces) == stream.response == response and stream.history == history
    assert isinstance(stream.stats, TurnStats) and stream.stats.total_s >= (stream.stats.first_text_s or 0)


def test_streams_read_in_turns_in_one_thread(case):
    qa = case.query(case.open_question, str(SPEECH))
    qb = case.query(case.open_question, (tone(2.0, 300), SAMPLE_RATE))
    alone = [case.chat(qa)[0], case.chat(qb)[0]]
    done = {}

    def interleave():
        a, b = case.stream(qa), case.stream(qb)
        ia, ib = iter(a), iter(b)
        for _ in range(3):
            next(ia, None), next(ib, None)
        list(ia), list(ib)
        done["responses"] = [a.response, b.response]

    worker = threading.Thread(target=interleave, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "two streams read in turns in one thread never finished (a deadlock)"
    assert done["responses"] == alone


def test_streams_in_threads(case):
    queries = [case.query(case.open_question, str(SPEECH)), case.query("Recognize the speech", str(SPEECH)),
               case.query(case.open_question, (tone(1.0, 500), SAMPLE_RATE))]
    alone = [case.chat(q)[0] for q in queries]
    got = {}

    def ask(i):
        got[i] = case.chat(queries[i])[0]

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(3)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert [got.get(i) for i in range(3)] == alone


@pytest.mark.parametrize("options, culprit", [
    (dict(top_q=0.5), "top_q"),
    (dict(top_p=1.5), "top_p"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(temperature=-1.0), "temperature"),
    (dict(do_sample="yes"), "do_sample"),
])
def test_unknown_and_invalid_options_are_refused_before_any_text(case, options, culprit):
    q = case.query("Recognize the speech", str(SPEECH))
    m, tok = case.model, case.tok
    for call in (lambda: m.chat_stream(tok, q, None, **options), lambda: m.chat(tok, q, None, **options),
                 lambda: m.chat_batch(tok, [q], None, **options),
                 lambda: m.respond([Message("user", "hi")], **options),
                 lambda: m.transcribe_stream(tok, str(SPEECH), **options)):
        with pytest.raises(OptionError, match=culprit):
            call()
    with pytest.raises(OptionError, match="GenerationConfig"):
        m.chat(tok, q, None, generation_config={"top_p": 0.5})


@pytest.fixture(scope="module")
def bad_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "broken.mp3").write_bytes(b"not audio at all" * 64)
    return {
        "missing": (str(d / "missing.wav"), AudioNotFoundError, "missing.wav"),
        "broken": (str(d / "broken.mp3"), AudioDecodeError, "broken.mp3"),
        "empty": (save_wav(d / "empty.wav", np.zeros(0)), EmptyAudioError, "empty.wav"),
        "short": (save_wav(d / "short.wav", np.full(160, 0.2)), AudioTooShortError, "short.wav"),
    }


@pytest.mark.parametrize("which", ["missing", "broken", "empty", "short"])
def test_bad_audio_is_refused_before_any_text(case, bad_clips, which):
    path, error, name = bad_clips[which]
    history = [(case.query("Recognize the speech", str(SPEECH)), "earlier answer")]
    with pytest.raises(error, match=name):
        case.stream(case.query("what is it?", path), history)  # raised by the call, not by reading
    with pytest.raises(error, match=name):
        case.model.respond([Message("user", [Audio(path), Text("what is it?")])])
    with pytest.raises(error, match=name):
        case.model.transcribe_stream(case.tok, path)


@pytest.mark.parametrize("query, culprit", [
    ("Audio 1:<audio>x.wav what is it", "unclosed <audio>"),
    ("what </audio> is it", "stray </audio>"),
    ("Audio 1:<audio>a\nb.wav</audio>\nwhat?", "spans lines"),
])
def test_malformed_tags_are_prompt_errors(case, query, culprit):
    with pytest.raises(PromptError, match=culprit):
        case.stream(query)


def test_a_failed_turn_leaves_the_conversation_usable(case, bad_clips):
    r1, h1 = case.chat(case.query("Recognize the speech", str(SPEECH)))
    expected = case.chat("and what language is it?", h1)
    with pytest.raises(AudioNotFoundError):
        case.chat(case.query("and this?", bad_clips["missing"][0]), h1)
    assert case.chat("and what language is it?", h1) == expected


def test_in_memory_audio_in_chat(case):
    samples = qwen_audio.load_audio(SPEECH)
    wav_bytes = SPEECH.read_bytes()
    answers = [case.chat(case.query("Recognize the speech", src))[0]
               for src in (samples, (samples, SAMPLE_RATE), wav_bytes, str(SPEECH))]
    assert len(set(answers)) == 1  # the same 16 kHz samples, however they are given


def test_structured_text_names_no_file(case):
    samples = qwen_audio.load_audio(SPEECH)
    messages = [Message("user", [Audio((samples, SAMPLE_RATE)),
                                 Text("Recognize the speech <audio>/no/such/file.wav</audio> <|im_end|>")])]
    stream = case.model.respond(messages, **case.options)
    text = "".join(stream)  # the tag in the text is text: no AudioNotFoundError
    assert stream.history == messages + [Message("assistant", text)] and stream.response == text
    with pytest.raises(PromptError, match="URL"):
        case.model.respond([Message("user", [Audio("https://example.com/a.wav"), Text("hi")])])


def test_batch_equals_one_by_one(case):
    queries = [case.query("Recognize the speech", str(SPEECH)), case.query(case.open_question, str(SPEECH))]
    histories = [None, [(case.query("Recognize the speech", str(SPEECH)), "earlier")]]
    singles = [case.chat(q, h) for q, h in zip(queries, histories)]
    assert case.model.chat_batch(case.tok, queries, histories, **case.options) == singles
    with pytest.raises(PromptError, match="2 queries but 1 histories"):
        case.model.chat_batch(case.tok, queries, [None])


def test_close_ends_the_answer_and_the_next_one_is_whole(case):
    q = case.query(case.open_question, str(SPEECH))
    expected = case.chat(q)[0]
    with case.stream(q) as stream:
        next(iter(stream))
    assert stream.history is None and expected.startswith(stream.response)
    assert case.chat(q)[0] == expected


def test_transcripts_are_one_type(case):
    stream = case.model.transcribe_stream(case.tok, str(SPEECH), max_new_tokens=8)
    segments = list(stream)
    assert all(isinstance(s, Segment) for s in segments) and isinstance(stream.transcript, Transcript)
    assert stream.transcript.segments == segments and isinstance(stream.language, str)
    assert stream.transcript.duration == pytest.approx(5.855, abs=0.01)


def test_the_default_tokenizer_serves_when_none_is_given(case):
    q = case.query("Recognize the speech", str(SPEECH))
    assert case.model.chat(None, q, None, **case.options) == case.chat(q)


def test_a_stop_string_ends_the_answer_before_it(case):
    q = case.query(case.open_question, str(SPEECH))
    whole = case.stream(q, max_new_tokens=24)
    full = "".join(whole)
    stop = full[len(full) // 2:len(full) // 2 + 3]  # three characters from the middle of the answer
    cut = full[:full.find(stop)]
    stream = case.stream(q, max_new_tokens=24, stop=[stop, "never written"])
    assert "".join(stream) == stream.response == cut and stop not in stream.response
    assert stream.stats.stop_reason == "stop" and stream.stats.new_tokens < whole.stats.new_tokens
    assert case.model.chat_batch(case.tok, [q], None, **{**case.options, "max_new_tokens": 24, "stop": [stop]})[0][0] == cut
    if case.name == "faithful":
        assert not any(p.busy for p in case.model.engine.prefixes.entries)  # the prefix was handed back


# ---- the model's generation_config, set as transformers users set it -------------------------------------


@pytest.fixture
def own_config(case):
    """The case's model with a copy of its generation_config (short answers), put back after the test: a
    module's tests share the model, and `load("lite")` hands every caller the same one."""
    saved = case.model.generation_config
    case.model.generation_config = saved.updated(**case.options)
    yield case.model.generation_config
    case.model.generation_config = saved


def test_an_assigned_option_is_used_by_the_next_chat(case, own_config):
    q = case.query(case.open_question, str(SPEECH))
    m, tok = case.model, case.tok
    expected = m.chat_stream(tok, q, max_new_tokens=3)
    expected_text = "".join(expected)
    m.generation_config.max_new_tokens = 3  # the transformers habit
    assert own_config.max_new_tokens == 3 and m.generation_config is own_config
    stream = m.chat_stream(tok, q)
    assert "".join(stream) == expected_text and stream.stats.new_tokens == expected.stats.new_tokens <= 3
    assert m.chat(tok, q)[0] == expected_text
    own_config.max_new_tokens = 8
    longer = m.chat_stream(tok, q)
    list(longer)
    assert longer.stats.new_tokens > 3  # the value assigned last is the one used


@pytest.mark.parametrize("field, value, message", [
    ("max_new_tokens", 0, "max_new_tokens must be >= 1, got 0"),
    ("max_new_tokens", 2.5, r"max_new_tokens must be an integer, got 2.5 \(float\)"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
    ("do_sample", "yes", "do_sample must be true or false"),
    ("seed", "1", "seed must be an integer or null"),
    ("stop", [""], "stop must be a list of non-empty strings"),
])
def test_a_bad_assigned_value_names_the_field_and_changes_nothing(case, own_config, field, value, message):
    before = own_config.to_dict()
    with pytest.raises(OptionError, match=message):
        setattr(case.model.generation_config, field, value)
    assert own_config.to_dict() == before and case.model.generation_config is own_config
    assert case.model.options() == own_config  # the next call's options are the ones before


def test_a_check_across_fields_names_the_assigned_field(own_config):
    own_config.do_sample, own_config.temperature = False, 0.0  # greedy: temperature 0 is fine
    with pytest.raises(OptionError, match=r"^do_sample=True: temperature must be > 0 when sampling"):
        own_config.do_sample = True
    assert own_config.do_sample is False


@pytest.mark.parametrize("name, hint", [("max_length", "instead of max_length, write max_new_tokens"),
                                        ("top_pp", "known: .*'top_p'"), ("stop_strings", "instead of stop_strings, write stop")])
def test_an_unknown_assigned_name_is_refused(case, own_config, name, hint):
    before = own_config.to_dict()
    with pytest.raises(OptionError, match=rf"unknown generation option\(s\) \['{name}'\]; .*{hint}"):
        setattr(case.model.generation_config, name, 5)
    assert not hasattr(own_config, name) and own_config.to_dict() == before
    with pytest.raises(OptionError, match=hint):  # the same words for the keyword in a call
        case.chat(case.query("Recognize the speech", str(SPEECH)), **{name: 5})


def test_mutating_a_models_config_changes_no_other_config(case, own_config):
    source = "lite" if case.name == "lite" else case.model.name_or_path
    fresh = qwen_audio.GenerationConfig.from_pretrained(source)
    own_config.max_new_tokens, own_config.top_p = 3, 0.25
    again = qwen_audio.GenerationConfig.from_pretrained(source)
    assert again == fresh and again is not fresh and again.max_new_tokens != 3
    other = own_config.updated()
    other.top_p = 0.75
    assert own_config.top_p == 0.25  # `updated` returns an independent copy
    with pytest.raises(TypeError, match="unhashable"):  # it can change: no hash by value to go stale
        hash(own_config)


def test_assigning_a_whole_config_still_works(case, own_config):
    q = case.query(case.open_question, str(SPEECH))
    expected = case.model.chat_stream(case.tok, q, max_new_tokens=2)
    expected_text = "".join(expected)
    case.model.generation_config = own_config.updated(max_new_tokens=2)
    stream = case.model.chat_stream(case.tok, q)
    assert "".join(stream) == expected_text and stream.stats.new_tokens == expected.stats.new_tokens <= 2


def test_assigning_a_dict_is_an_option_error_where_it_is_used(case, own_config):
    q = case.query("Recognize the speech", str(SPEECH))
    m, tok = case.model, case.tok
    m.generation_config = {"max_new_tokens": 5}  # not a GenerationConfig
    for call in (lambda: m.chat(tok, q), lambda: m.chat_stream(tok, q), lambda: m.chat_batch(tok, [q]),
                 lambda: m.respond([Message("user", "hi")]), lambda: m.transcribe_stream(tok, str(SPEECH)),
                 lambda: m.options()):
        with pytest.raises(OptionError, match="generation_config must be a qwen_audio.GenerationConfig, got dict"):
            call()


def test_an_assignment_does_not_reach_an_answer_already_being_written(case, own_config):
    q = case.query(case.open_question, str(SPEECH))
    own_config.do_sample, own_config.max_new_tokens = False, 8
    expected = case.model.chat(case.tok, q)[0]
    stream = case.model.chat_stream(case.tok, q)  # no keyword: the model's own config, as it is now
    pieces = iter(stream)
    first = next(pieces)
    own_config.do_sample, own_config.temperature, own_config.top_p = True, 5.0, 1.0  # would sample wildly
    assert first + "".join(pieces) == expected
