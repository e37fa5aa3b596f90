"""The `qwen-audio` console script: the installed entry point in a subprocess against the tiny checkpoint,
and the command's error handling and output in-process with a scripted backend (a real `Backend`
subclass, so its streams are the library's ChatStream and TranscriptStream)."""

import io
import json
import os
import re
import subprocess
import sys
import warnings
import wave
from dataclasses import asdict
from pathlib import Path

import pytest

from qwen_audio import cli
from qwen_audio.backend import Backend, Segment, Transcript, TurnStats, Word
from qwen_audio.errors import AudioDecodeError, AudioTruncatedWarning, SlowPathWarning
from qwen_audio.messages import plain_text
from qwen_audio.options import GenerationConfig
from qwen_audio.transcribe import FORMATTERS

from .conftest import AUDIO, TINY
from .conftest import SHARED as FIXTURES

SPEECH = AUDIO / "1272-128104-0000.flac"  # 5.9 s
SHORT = AUDIO / "1272-128104-0000-middle_classes.wav"
GEN = ["--greedy", "--max-new-tokens", "8"]
GEN_KW = {"do_sample": False, "max_new_tokens": 8}
FORMATS = ("text", "json", "srt", "vtt")
INTERNAL_HINT = "(set QWEN_AUDIO_DEBUG=1 for the traceback)"
NOISE = ("Traceback", "BrokenPipe", "Exception ignored")  # what a quiet exit never prints


def script() -> list[str]:
    """The installed console script next to this interpreter, else `python -m qwen_audio.cli`."""
    exe = Path(sys.executable).parent / "qwen-audio"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "qwen_audio.cli"]


def env(**extra) -> dict:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", **extra}


def run(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(script() + [str(a) for a in args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", env=env(), timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny_path():
    if not (TINY / "config.json").is_file() or not SPEECH.is_file():
        pytest.skip(f"tiny fixture or tutorial audio not found under {FIXTURES} (set QWEN_AUDIO_FIXTURES)")
    return TINY


def fresh(path):
    """A newly loaded model, so its caches see the same calls as the subprocess's."""
    import qwen_audio

    return qwen_audio.load(path)


# ---- a scripted backend -----------------------------------------------------------------------------


class Tok:
    @staticmethod
    def from_list_format(items):
        from qwen_audio.tokenizer import from_list_format

        return from_list_format(items)


class Scripted(Backend):
    """A backend that answers from a script, through the real `Backend` interface.

    Chat: "bad" in a question is undecodable audio (raised before any text, as a backend does);
    `fail_next` is raised by the next answer before any text; the word "boom" raises `fail("boom")`
    mid-answer. `seen` records (query, history) of every call; `closed` counts answers closed while
    suspended. Transcription yields `segments` (an exception in the list is raised there), calling
    `before(i)` before the i-th segment is produced; `transcribe_error` is raised before any.
    """

    def __init__(self, answers=(), fail=KeyboardInterrupt, segments=(), language="en", before=None):
        self.generation_config = GenerationConfig()
        self.answers, self.fail, self.fail_next = list(answers), fail, None
        self.seen, self.closed = [], 0
        self.segments, self.language, self.before = list(segments), language, before
        self.transcribe_error = None
        self.requests = []

    def default_tokenizer(self):
        return Tok()

    def chat_stream(self, tokenizer, query, history=None, *args, **kwargs):
        self.seen.append((query, list(history or [])))
        return super().chat_stream(tokenizer, query, history, *args, **kwargs)

    def _answer(self, tokenizer, conversation, cfg, cancel):
        if "bad" in plain_text(conversation.question.query):
            raise AudioDecodeError("bad.wav: cannot decode audio")
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        answer = self.answers.pop(0)

        def pieces():
            words = answer.split(" ")
            try:
                for i, word in enumerate(words):
                    if word == "boom":
                        raise self.fail("boom")
                    yield (" " if i else "") + word
            except GeneratorExit:
                self.closed += 1
                raise
            return TurnStats(0, 0, len(words), "stop")

        return pieces()

    def _transcribe(self, tokenizer, source, request, cfg):
        self.requests.append((source, request, cfg))
        if self.transcribe_error is not None:
            raise self.transcribe_error

        def segments():
            for i, s in enumerate(self.segments):
                if self.before is not None:
                    self.before(i)
                if isinstance(s, BaseException):
                    raise s
                yield s

        duration = max((s.end for s in self.segments if isinstance(s, Segment)), default=0.0)
        return self.language, segments(), lambda: duration, duration


def in_process(monkeypatch, capsys, model, argv, lines=()):
    """Run `qwen-audio ARGV` in this process with `model` as the loaded model; (exit status, captured)."""
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: (model, Tok()))
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr()


def chat_in_process(monkeypatch, capsys, model, lines):
    return in_process(monkeypatch, capsys, model, ["chat", "-q"], lines)


# ---- ask ------------------------------------------------------------------------------------------------


def test_ask_prints_what_model_chat_returns(tiny_path):
    from qwen_audio.grounding import render_seconds

    question = "What does the speaker say?"
    raw = run("ask", "--model", tiny_path, "--audio", SPEECH, "--audio", SHORT, question, *GEN, "--raw")
    shown = run("ask", "--model", tiny_path, "--audio", SPEECH, "--audio", SHORT, question, *GEN)
    assert raw.returncode == 0, raw.stderr
    assert "loading model" in raw.stderr
    model, tok = fresh(tiny_path)
    query = tok.from_list_format([{"audio": str(SPEECH)}, {"audio": str(SHORT)}, {"text": question}])
    response, _ = model.chat(tok, query, **GEN_KW)
    assert response
    assert raw.stdout == response + "\n"
    assert shown.stdout == render_seconds(response) + "\n"


def test_ask_json(tiny_path):
    from qwen_audio.grounding import parse_spans

    out = run("ask", "--model", tiny_path, "--audio", SPEECH, "hello?", *GEN, "--json", "--raw", "-q")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    d = json.loads(out.stdout)
    model, tok = fresh(tiny_path)
    response, _ = model.chat(tok, tok.from_list_format([{"audio": str(SPEECH)}, {"text": "hello?"}]), **GEN_KW)
    # One clip: a span points at it unless it names another clip ("Audio 2"), which this question lacks.
    spans = [{**asdict(s), "audio": str(SPEECH) if s.clip in (None, 0) else None} for s in parse_spans(response).spans]
    assert d == {"response": response, "spans": spans, "model": str(tiny_path)}


def test_ask_and_chat_on_a_qwen2_audio_checkpoint(qwen2_audio_folder):
    """The same commands on a Qwen2-Audio folder: answers are the library's, turn 2 of a chat included."""
    import qwen_audio
    from qwen_audio.tokenizer import from_list_format

    folder = qwen2_audio_folder[0]
    out = run("ask", "--model", folder, "--audio", SPEECH, "What does he say?", *GEN, "--json", "-q")
    assert out.returncode == 0, out.stderr
    model, tok = qwen_audio.load(folder)
    query = from_list_format([{"audio": str(SPEECH)}, {"text": "What does he say?"}])
    r1, h1 = model.chat(tok, query, **GEN_KW)
    assert json.loads(out.stdout) == {"response": r1, "spans": [], "model": str(folder)}
    chat = run("chat", "--model", folder, "--audio", SPEECH, *GEN, "-q", stdin="What does he say?\nAnd then?\n")
    assert chat.returncode == 0, chat.stderr
    r2, _ = model.chat(tok, "And then?", history=h1, **GEN_KW)
    assert chat.stdout == f"{r1}\n{r2}\n"


def test_ask_json_spans_name_their_clip(monkeypatch, capsys, tmp_path):
    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    first.write_bytes(b"x")
    second.write_bytes(b"x")
    answer = ('The word "middle classes" starts at <|0.50|> seconds and ends at <|1.25|> seconds. '
              "In the second audio, a dog barks from <|0.10|> to <|0.20|>.")
    code, out = in_process(monkeypatch, capsys, Scripted([answer]),
                           ["ask", "--audio", first, "--audio", second, "where?", "--json"])
    assert code == 0, out.err
    assert json.loads(out.out) == {
        "response": 'The word "middle classes" starts at 0.50 seconds and ends at 1.25 seconds. '
                    "In the second audio, a dog barks from 0.10 to 0.20.",
        "spans": [
            {"start": 0.5, "end": 1.25, "words": "middle classes", "clip": None, "audio": str(first),
             "text": 'The word "middle classes" starts at 0.50 seconds and ends at 1.25 seconds.'},
            {"start": 0.1, "end": 0.2, "words": None, "clip": 1, "audio": str(second),
             "text": "In the second audio, a dog barks from 0.10 to 0.20."},
        ],
        "model": "lite",
    }


def test_a_bad_option_is_one_line(monkeypatch, capsys):
    code, out = in_process(monkeypatch, capsys, Scripted(["never"]), ["ask", "hi", "--top-p", "2"])
    assert code == 1 and out.out == ""
    assert out.err == "qwen-audio: error: top_p must be in (0, 1], got 2.0\n"


# ---- chat -----------------------------------------------------------------------------------------------


def test_chat_over_stdin_keeps_history_through_errors(tiny_path, tmp_path):
    from qwen_audio.grounding import render_seconds

    missing = tmp_path / "missing.wav"
    lines = ["what is this?", f"/audio {missing}", "", "and now?", "/history", "/reset", "again", "/quit",
             "never asked"]
    out = run("chat", "--model", tiny_path, "--audio", SPEECH, *GEN, stdin="\n".join(lines) + "\n")
    assert out.returncode == 0, out.stderr
    assert f"audio file not found: {missing}" in out.stderr
    assert "conversation reset" in out.stderr

    model, tok = fresh(tiny_path)
    q1 = tok.from_list_format([{"audio": str(SPEECH)}, {"text": "what is this?"}])
    r1, h1 = model.chat(tok, q1, **GEN_KW)
    r2, h2 = model.chat(tok, "and now?", history=h1, **GEN_KW)  # the failed /audio changed nothing
    r3, _ = model.chat(tok, "again", **GEN_KW)  # after /reset
    history = "".join(f"[{i}] user: {q}\n[{i}] assistant: {r}\n" for i, (q, r) in enumerate(h2, 1))
    expected = render_seconds(r1) + "\n" + render_seconds(r2) + "\n" + history + render_seconds(r3) + "\n"
    assert out.stdout == expected


def test_ctrl_c_during_an_answer_returns_to_the_prompt_with_history_unchanged(monkeypatch, capsys):
    model = Scripted(["first answer", "half boom never", "third answer"], fail=KeyboardInterrupt)
    code, out = chat_in_process(monkeypatch, capsys, model, ["one", "two", "three"])
    assert code == 0
    assert "interrupted" in out.err
    assert model.seen[2] == ("three", [("one", "first answer")])
    assert out.out == "first answer\nhalf\nthird answer\n"


class InterruptOnce(io.StringIO):
    """An output whose first write is interrupted, as by Ctrl-C in the middle of an answer."""

    armed = True

    def write(self, s):
        if s and self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return super().write(s)


def test_ctrl_c_while_writing_closes_the_stream_at_once():
    model = Scripted(["first answer", "second answer"])
    session = cli.ChatSession(model, Tok(), cli.build_parser().parse_args(["chat"]), out=InterruptOnce(),
                              err=io.StringIO())
    with pytest.raises(KeyboardInterrupt):  # the traceback keeps the stream alive: only close() closes it
        session.handle("one")
    assert model.closed == 1 and session.history == []
    session.handle("two")
    assert session.history == [("two", "second answer")]


def test_a_failing_turn_keeps_the_history(monkeypatch, capsys):
    model = Scripted(["first", "second"])
    code, out = chat_in_process(monkeypatch, capsys, model, ["one", "a bad one", "/nonsense", "two"])
    assert code == 0
    assert "error: bad.wav: cannot decode audio" in out.err and "unknown command /nonsense" in out.err
    assert model.seen[-1] == ("two", [("one", "first")])


def test_any_exception_in_a_turn_is_one_line_and_the_session_goes_on(monkeypatch, capsys):
    model = Scripted(["first", "half boom never", "boom", "third"], fail=ValueError)
    lines = ["one", "two", "three", "zero", "four", "/history"]
    real_answer = model._answer

    def answer(tokenizer, conversation, cfg, cancel):  # the second question fails before any text, once
        if plain_text(conversation.question.query) == "two":
            raise RuntimeError("CUDA error: out of memory\nCompile with TORCH_USE_CUDA_DSA to enable device-side"
                               " assertions.")
        return real_answer(tokenizer, conversation, cfg, cancel)

    model._answer = answer
    code, out = chat_in_process(monkeypatch, capsys, model, lines)
    assert code == 0
    assert out.err.splitlines() == [
        ("error: RuntimeError: CUDA error: out of memory Compile with TORCH_USE_CUDA_DSA to enable device-side "
         "assertions."),
        "error: ValueError: boom",
        "error: ValueError: boom",
    ]
    # "two" failed before its answer began, "three" after "half", "zero" before any text: none is in the history.
    assert model.seen[1] == ("two", [("one", "first")])
    assert model.seen[4] == ("four", [("one", "first")])
    assert out.out == "first\nhalf\nthird\n[1] user: one\n[1] assistant: first\n[2] user: four\n[2] assistant: third\n"


def test_a_turn_error_shows_its_traceback_with_debug(monkeypatch, capsys):
    monkeypatch.setenv("QWEN_AUDIO_DEBUG", "1")
    model = Scripted(["first"])
    model.fail_next = RuntimeError("kaput")
    code, out = chat_in_process(monkeypatch, capsys, model, ["one", "two"])
    assert code == 0 and out.out == "first\n"
    assert "Traceback (most recent call last)" in out.err and out.err.endswith("error: RuntimeError: kaput\n")


def test_export_writes_the_span_of_the_clip_the_answer_names(monkeypatch, capsys, tmp_path):
    if not SPEECH.is_file():
        pytest.skip(f"tutorial audio not found under {AUDIO}")
    answer = 'The word "middle classes" starts at <|0.50|> seconds and ends at <|1.25|> seconds.'
    model = Scripted([answer])
    target = tmp_path / "span one.wav"
    code, out = chat_in_process(monkeypatch, capsys, model,
                                [f"/audio {SPEECH}", "where?", f"/export {target}", f"/export {target} 2"])
    assert code == 0, out.err
    assert out.out == 'The word "middle classes" starts at 0.50 seconds and ends at 1.25 seconds.\n'
    assert model.seen[0][0] == f"Audio 1:<audio>{SPEECH}</audio>\nwhere?"
    with wave.open(str(target)) as w:
        assert (w.getframerate(), w.getnframes()) == (16000, 12000)
    assert "cannot export span 2" in out.err


def test_seconds_renderer_matches_rendering_the_whole_text():
    from qwen_audio.grounding import render_seconds

    text = "a <|2.33|> b <|x|> <c> <|30.00|> <|1."
    for size in (1, 2, 3, 5):
        r = cli.SecondsRenderer()
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        assert "".join(r.push(p) for p in pieces) + r.flush() == render_seconds(text)


# ---- transcribe -----------------------------------------------------------------------------------------

SEGMENTS = [
    Segment(0.0, 2.5, "hello there", (Word("hello", 0.0, 1.0), Word("there", 1.2, 2.5))),
    Segment(2.5, 2.5, ""),  # no text: numbered in SRT, left out of the text
    Segment(2.5, 4.25, "general kenobi"),
]


@pytest.fixture
def clip(tmp_path):
    """A file to transcribe (the scripted backend never reads it)."""
    path = tmp_path / "talk.wav"
    path.write_bytes(b"RIFF")
    return path


def test_transcribe_srt_matches_the_library(tiny_path, tmp_path):
    from qwen_audio.transcribe import to_srt, transcribe

    out = run("transcribe", SPEECH, "--model", tiny_path, "--timestamps", "--format", "srt", *GEN)
    assert out.returncode == 0, out.stderr
    model, tok = fresh(tiny_path)
    expected = to_srt(transcribe(model, tok, str(SPEECH), timestamps=True, progress=False, **GEN_KW))
    assert out.stdout == expected and expected.startswith("1\n00:00:00,000 --> ")

    target = tmp_path / "t.json"
    out = run("transcribe", SPEECH, "--model", tiny_path, "--format", "json", "-o", target, "-q", *GEN)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    d = json.loads(target.read_text(encoding="utf-8"))
    assert d["language"] == "en" and d["duration"] == pytest.approx(5.855, abs=1e-3)


@pytest.fixture(scope="module")
def speech_transcript(tiny_path):
    """The library's own transcript of a short clip, by another instance of the model."""
    model, tok = fresh(tiny_path)
    t = model.transcribe(tok, str(SPEECH), timestamps=True, **GEN_KW)
    assert t.segments and t.text
    return t


@pytest.fixture(scope="module")
def tiny_model(tiny_path):
    return fresh(tiny_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_written_file_is_the_formatters_output(fmt, tiny_model, speech_transcript, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: tiny_model)
    target = tmp_path / f"out.{fmt}"
    assert cli.main(["transcribe", str(SPEECH), "--timestamps", "--format", fmt, "-o", str(target), "-q", *GEN]) == 0
    assert capsys.readouterr() == ("", "")
    assert target.read_text(encoding="utf-8") == FORMATTERS[fmt](speech_transcript)


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_scripted_output_is_the_formatters_output(fmt, language, monkeypatch, capsys, clip, tmp_path):
    model = Scripted(segments=SEGMENTS, language=language)
    expected = FORMATTERS[fmt](model.transcribe(None, str(clip)))
    assert expected == FORMATTERS[fmt](Transcript(("" if language == "zh" else " ").join(["hello there", "general kenobi"]),
                                                  SEGMENTS, language, 4.25))
    target = tmp_path / "out"
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", fmt, "-o", target])
    assert code == 0, out.err
    assert target.read_text(encoding="utf-8") == expected
    assert out.out == "" and out.err.endswith(f"qwen-audio: wrote {target}\n")
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", fmt, "-q"])
    assert code == 0 and out.out == expected and out.err == ""


def test_flags_reach_transcribe_stream(monkeypatch, capsys, clip):
    model = Scripted(segments=SEGMENTS)
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--language", "de", "--task", "translate",
                                                        "--target", "en", "--timestamps", "-q", "--seed", "3"])
    assert code == 0, out.err
    source, request, cfg = model.requests[0]
    assert source == str(clip)
    assert (request.language, request.task, request.target, request.timestamps) == ("de", "translate", "en", True)
    assert (cfg.seed, cfg.do_sample) == (3, False)


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_segments_are_written_as_they_arrive(fmt, monkeypatch, capsys, clip, tmp_path):
    target, seen = tmp_path / "out", {}

    def before(i):  # what the file holds when segment i is about to be transcribed
        seen[i] = target.read_text(encoding="utf-8") if target.exists() else None

    model = Scripted(segments=SEGMENTS, before=before)
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", fmt, "-o", target, "-q"])
    assert code == 0, out.err
    first = FORMATTERS[fmt](Transcript("hello there", SEGMENTS[:1]))
    assert seen[0] == ("WEBVTT\n" if fmt == "vtt" else None)  # nothing opened (or truncated) before any text
    assert seen[1] == (first[:-1] if fmt == "text" else first)  # text: the newline comes at the end
    assert target.read_text(encoding="utf-8") == FORMATTERS[fmt](model.transcribe(None, str(clip)))


def test_segments_reach_stdout_as_they_arrive(monkeypatch, capsys, clip):
    stdout, seen = io.StringIO(), []
    model = Scripted(segments=SEGMENTS, before=lambda i: seen.append(stdout.getvalue()))
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: (model, Tok()))
    monkeypatch.setattr(sys, "stdout", stdout)
    assert cli.main(["transcribe", str(clip), "--format", "srt", "-q"]) == 0
    assert seen[:2] == ["", "1\n00:00:00,000 --> 00:00:02,500\nhello there\n"]


def test_a_failure_midway_keeps_what_was_written(monkeypatch, capsys, clip, tmp_path):
    target = tmp_path / "out.srt"
    model = Scripted(segments=[SEGMENTS[0], RuntimeError("decoder fell over")])
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", "srt", "-o", target, "-q"])
    assert code == 1
    assert target.read_text(encoding="utf-8") == "1\n00:00:00,000 --> 00:00:02,500\nhello there\n"
    assert out.err == (f"qwen-audio: internal error: RuntimeError: decoder fell over; {target} holds the 1 "
                       f"segment(s) transcribed before it (to 2.5 s) {INTERNAL_HINT}\n")

    model = Scripted(segments=[SEGMENTS[0], AudioDecodeError("talk.wav: corrupt frame at 31.2 s")])
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", "text", "-o", target, "-q"])
    assert code == 1 and target.read_text(encoding="utf-8") == "hello there"
    assert out.err == (f"qwen-audio: error: talk.wav: corrupt frame at 31.2 s; {target} holds the 1 segment(s) "
                       "transcribed before it (to 2.5 s)\n")


def test_a_failure_before_any_text_leaves_an_existing_file_as_it_was(monkeypatch, capsys, clip, tmp_path):
    target = tmp_path / "out.json"
    target.write_text("precious\n")
    model = Scripted(segments=[SEGMENTS[0], AudioDecodeError("talk.wav: corrupt frame")])
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", "json", "-o", target, "-q"])
    assert code == 1 and target.read_text() == "precious\n"
    assert out.err == f"qwen-audio: error: talk.wav: corrupt frame; nothing was written to {target}\n"

    model = Scripted(segments=SEGMENTS)
    model.transcribe_error = AudioDecodeError("talk.wav: not audio")  # from transcribe_stream itself
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", "srt", "-o", target, "-q"])
    assert code == 1 and target.read_text() == "precious\n"
    assert out.err == "qwen-audio: error: talk.wav: not audio\n"


def test_ctrl_c_while_transcribing_says_what_was_kept(monkeypatch, capsys, clip, tmp_path):
    target = tmp_path / "out.vtt"
    model = Scripted(segments=[SEGMENTS[0], KeyboardInterrupt()])
    code, out = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", "vtt", "-o", target, "-q"])
    assert code == 130
    assert target.read_text() == "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nhello there\n"
    assert out.err == f"qwen-audio: interrupted; {target} holds the 1 segment(s) transcribed before it (to 2.5 s)\n"


def _unwritable(tmp_path, clip, case):
    if case == "missing folder":
        return tmp_path / "no such folder" / "out.srt"
    if case == "a folder":
        return tmp_path
    if case == "under a file":
        return clip / "out.srt"
    return clip  # the audio itself


@pytest.mark.parametrize("case", ["missing folder", "a folder", "under a file", "the input"])
def test_the_output_path_is_checked_before_loading(case, monkeypatch, capsys, clip, tmp_path):
    import qwen_audio

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(qwen_audio, "load", no_load)
    target = _unwritable(tmp_path, clip, case)
    before = sorted(tmp_path.rglob("*"))
    assert cli.main(["transcribe", str(clip), "--model", str(TINY), "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert "loading model" not in err and len(err.splitlines()) == 1
    assert err.startswith(f"qwen-audio: error: cannot write {target}: ")
    assert sorted(tmp_path.rglob("*")) == before and clip.read_bytes() == b"RIFF"


def test_an_output_check_creates_nothing(monkeypatch, capsys, clip, tmp_path):
    target = tmp_path / "out.srt"
    model = Scripted(segments=SEGMENTS)
    model.transcribe_error = AudioDecodeError("talk.wav: not audio")
    code, _ = in_process(monkeypatch, capsys, model, ["transcribe", clip, "-o", target])
    assert code == 1 and not target.exists()
    model = Scripted(segments=[])  # an empty transcript is an empty file
    code, _ = in_process(monkeypatch, capsys, model, ["transcribe", clip, "--format", "srt", "-o", target, "-q"])
    assert code == 0 and target.read_text() == ""


# ---- broken pipes -------------------------------------------------------------------------------------

SCRIPTED_SITE = '''
import os
if os.environ.get("QWEN_AUDIO_TEST_SCRIPTED"):  # a scripted model for the console script
    import time

    from qwen_audio import cli
    from qwen_audio.backend import Segment, TranscriptStream
    from qwen_audio.tokenizer import from_list_format

    class Tok:
        from_list_format = staticmethod(from_list_format)

    class Slow:
        def chat(self, tokenizer, query, history=None, **kwargs):
            return "an answer", [(query, "an answer")]

        def transcribe_stream(self, tokenizer, source, **kwargs):
            def segments():
                for i in range(50):
                    yield Segment(float(i), i + 1.0, f"segment {i}")
                    time.sleep(0.1)
            return TranscriptStream("en", segments(), lambda: 50.0)

    cli.load_model = lambda *a, **k: (Slow(), Tok())
'''


def scripted_script(tmp_path, *args) -> subprocess.Popen:
    """The console script itself, with a scripted model put in place by a sitecustomize module."""
    (tmp_path / "sitecustomize.py").write_text(SCRIPTED_SITE)
    path = os.pathsep.join(p for p in [str(tmp_path), os.environ.get("PYTHONPATH", "")] if p)
    environ = env(PYTHONPATH=path, QWEN_AUDIO_TEST_SCRIPTED="1")
    environ.pop("PYTHONUNBUFFERED", None)  # stdout buffered, as users have it: the flush at exit meets the pipe
    return subprocess.Popen(script() + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=environ)


def test_transcribing_into_a_closed_pipe_exits_quietly(tmp_path, clip):
    p = scripted_script(tmp_path, "transcribe", clip, "--format", "srt", "-q")
    assert p.stdout.readline() == b"1\n"  # `| head -1`
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == cli.EXIT_BROKEN_PIPE, err  # 0 would mean that no write met the closed pipe
    assert err == ""


def test_asking_into_a_closed_pipe_exits_quietly(tmp_path):
    p = scripted_script(tmp_path, "ask", "hi")
    p.stdout.close()  # before the answer is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == cli.EXIT_BROKEN_PIPE, err
    assert "loading model" not in err and not any(noise in err for noise in NOISE), err


# ---- errors ----------------------------------------------------------------------------------------------


def test_bad_usage_exits_2():
    out = run("ask")
    assert out.returncode == 2 and "question" in out.stderr
    for argv in ([], ["frobnicate"], ["transcribe", "x.wav", "--format", "doc"], ["ask", "q", "--greedy", "--sample"],
                 ["ask", "q", "--max-new-tokens", "many"]):
        assert cli.main(argv) == 2, argv


def test_missing_model_exits_1_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    out = run("ask", "--model", missing, "hi")
    assert out.returncode == 1
    assert str(missing) in out.stderr and out.stderr.strip().splitlines()[-1].startswith("qwen-audio: error:")
    assert "Traceback" not in out.stderr


def test_missing_audio_exits_1_before_loading(tmp_path, capsys):
    assert cli.main(["ask", "--model", str(tmp_path), "--audio", str(tmp_path / "gone.wav"), "hi"]) == 1
    err = capsys.readouterr().err
    assert "gone.wav" in err and "loading" not in err
    assert cli.main(["transcribe", str(tmp_path), "--model", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"qwen-audio: error: {tmp_path} is a folder, not an audio file\n"


@pytest.mark.parametrize("flag, value", [("--max-clips", "0"), ("--timeout", "nan"), ("--header-timeout", "-1"),
                                         ("--max-connections", "0"), ("--max-body-mb", "0")])
def test_serve_limits_are_checked_before_loading(monkeypatch, capsys, flag, value):
    monkeypatch.setattr(cli, "load_model", _load_fails)  # reached only if the flag were taken
    assert cli.main(["serve", flag, value]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"qwen-audio: error: {flag} must be above 0, got ") and err.count("\n") == 1


def test_missing_lite_backend_is_explained(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "qwen_audio.lite", None)  # as if its extras were not installed
    assert cli.main(["ask", "hi"]) == 1
    err = capsys.readouterr().err
    assert "'lite' backend is not available" in err and "pip install 'qwen-audio[lite]'" in err
    assert "internal error" not in err


def _load_fails(*a, **k):
    raise RuntimeError("weights on fire\n  at layer 3")


def test_an_internal_error_is_one_line(monkeypatch, capsys):
    monkeypatch.delenv("QWEN_AUDIO_DEBUG", raising=False)
    monkeypatch.setattr(cli, "load_model", _load_fails)
    assert cli.main(["ask", "hi"]) == 1
    err = f"qwen-audio: internal error: RuntimeError: weights on fire at layer 3 {INTERNAL_HINT}\n"
    assert capsys.readouterr() == ("", err)


def test_qwen_audio_debug_prints_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv("QWEN_AUDIO_DEBUG", "1")
    monkeypatch.setattr(cli, "load_model", _load_fails)
    assert cli.main(["ask", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "_load_fails" in err
    assert err.endswith("qwen-audio: internal error: RuntimeError: weights on fire at layer 3\n")


def test_generation_flags_mirror_keywords():
    args = cli.build_parser().parse_args(
        ["ask", "q", "--greedy", "--max-new-tokens", "5", "--top-p", "0.8", "--top-k", "3", "--temperature", "0.7",
         "--repetition-penalty", "1.1", "--seed", "4", "--max-window-size", "100"])
    assert cli.generation_options(args) == {"do_sample": False, "max_new_tokens": 5, "top_p": 0.8, "top_k": 3,
                                            "temperature": 0.7, "repetition_penalty": 1.1, "seed": 4,
                                            "max_window_size": 100}
    assert cli.generation_options(cli.build_parser().parse_args(["ask", "q"])) == {}
    assert cli.build_parser().parse_args(["ask", "q"]).model == "lite"


def test_interrupting_a_real_answer_leaves_the_model_ready_for_the_same_history(tiny_path):
    model, tok = fresh(tiny_path)
    args = cli.build_parser().parse_args(["chat", *GEN])
    out = InterruptOnce()
    session = cli.ChatSession(model, tok, args, out=out, err=io.StringIO())
    session.attach(str(SPEECH))
    with pytest.raises(KeyboardInterrupt):
        session.handle("what is this?")
    assert session.history == [] and session.pending == [str(SPEECH)]
    session.handle("what is this?")
    session.handle("and now?")
    ref, rtok = fresh(tiny_path)
    q1 = rtok.from_list_format([{"audio": str(SPEECH)}, {"text": "what is this?"}])
    _, h1 = ref.chat(rtok, q1, **GEN_KW)
    _, h2 = ref.chat(rtok, "and now?", history=h1, **GEN_KW)
    assert session.history == h2


# ---- warnings -------------------------------------------------------------------------------------------

MUSIC = AUDIO / "music.wav"  # 97 s: longer than the model's 30 s window
SOURCE_LINE = re.compile(r"^\S+:\d+: \w*Warning:")  # Python's own display: `path:line: Category: message`


def run_with(environ: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run(script() + [str(a) for a in args], capture_output=True, text=True, encoding="utf-8",
                          env=env(**environ), timeout=300, check=False)


def test_a_warning_is_one_line_in_the_console_script(tiny_path):
    if not MUSIC.is_file():  # the shared fixtures are absent (tiny_path has skipped already when they are)
        pytest.skip(f"{MUSIC} not found under {FIXTURES} (set QWEN_AUDIO_FIXTURES)")
    ask = ("ask", "--model", tiny_path, "--dtype", "float32", "--audio", MUSIC, "hi", "--greedy", "--max-new-tokens", "2")
    out = run_with({"PYTHONWARNINGS": ""}, *ask)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    shown = [line for line in lines if line.startswith("qwen-audio: warning:")]
    assert len(shown) == 1 and "music.wav" in shown[0] and "only the first 30 s" in shown[0], out.stderr
    assert not any("sys.exit(main())" in line or SOURCE_LINE.match(line) for line in lines), out.stderr
    quiet = run_with({"PYTHONWARNINGS": "ignore"}, *ask)  # Python's filters still decide what is shown
    assert quiet.returncode == 0 and "warning" not in quiet.stderr.lower(), quiet.stderr
    assert quiet.stdout == out.stdout


class Warns(Scripted):
    """A scripted backend that warns (message, category) for each of `warned` while it prepares an answer."""

    def __init__(self, *warned):
        super().__init__(["an answer"])
        self.warned = warned

    def _answer(self, tokenizer, conversation, cfg, cancel):
        for message, category in self.warned:
            warnings.warn(message, category, stacklevel=2)
        return super()._answer(tokenizer, conversation, cfg, cancel)


def test_a_warning_in_a_command_is_one_line(monkeypatch, capsys):
    before = warnings.showwarning
    model = Warns(("bfloat16 products are emulated;\n  int8 runs faster", SlowPathWarning),
                  ("x.wav: 40.0 s of audio", AudioTruncatedWarning), ("a library changed", FutureWarning))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, out = in_process(monkeypatch, capsys, model, ["ask", "hi"])
    assert code == 0 and out.out == "an answer\n"
    assert out.err == ("qwen-audio: warning: bfloat16 products are emulated; int8 runs faster\n"
                       "qwen-audio: warning: x.wav: 40.0 s of audio\n"
                       "qwen-audio: warning: FutureWarning: a library changed\n")  # not the project's: named
    assert warnings.showwarning is before  # the library's warnings are Python's again


def test_warning_filters_still_decide(monkeypatch, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as `-W ignore` sets it
        code, out = in_process(monkeypatch, capsys, Warns(("slow", SlowPathWarning)), ["ask", "hi"])
    assert code == 0 and out.err == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPathWarning)  # `-W error::...`: the warning is the command's error
        code, out = in_process(monkeypatch, capsys, Warns(("slow", SlowPathWarning)), ["ask", "hi"])
    assert code == 1 and out.err.startswith("qwen-audio: internal error: SlowPathWarning: slow")
