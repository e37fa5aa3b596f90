"""The `qwen-audio` console script: the installed entry point in a subprocess against the tiny checkpoint,
and the chat loop's error handling in-process with a scripted model."""

import io
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from qwen_audio import cli
from qwen_audio.errors import AudioDecodeError

from .conftest import AUDIO, TINY
from .conftest import SHARED as FIXTURES
SPEECH = AUDIO / "1272-128104-0000.flac"  # 5.9 s
SHORT = AUDIO / "1272-128104-0000-middle_classes.wav"
GEN = ["--greedy", "--max-new-tokens", "8"]
GEN_KW = {"do_sample": False, "max_new_tokens": 8}


def script() -> list[str]:
    """The installed console script next to this interpreter, else `python -m qwen_audio.cli`."""
    exe = Path(sys.executable).parent / "qwen-audio"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "qwen_audio.cli"]


def run(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(script() + [str(a) for a in args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=300)


@pytest.fixture(scope="module")
def tiny_path():
    if not (TINY / "config.json").is_file() or not SPEECH.is_file():
        pytest.skip(f"tiny fixture or tutorial audio not found under {FIXTURES} (set QWEN_AUDIO_FIXTURES)")
    return TINY


def fresh(path):
    """A newly loaded model, so its caches see the same calls as the subprocess's."""
    import qwen_audio

    return qwen_audio.load(path)


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
    out = run("ask", "--model", tiny_path, "--audio", SPEECH, "hello?", *GEN, "--json", "--raw", "-q")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    d = json.loads(out.stdout)
    model, tok = fresh(tiny_path)
    response, _ = model.chat(tok, tok.from_list_format([{"audio": str(SPEECH)}, {"text": "hello?"}]), **GEN_KW)
    assert d == {"response": response, "spans": d["spans"], "model": str(tiny_path)}
    assert isinstance(d["spans"], list)


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


class ScriptedChat:
    """A model double with `chat_stream`: answers by a script; "boom" raises mid-answer."""

    def __init__(self, answers, fail=None):
        self.answers, self.fail, self.seen = list(answers), fail, []

    def chat_stream(self, tokenizer, query, history=None, system=None, **gen):
        self.seen.append((query, list(history or [])))
        if "bad" in query:
            raise AudioDecodeError("bad.wav: cannot decode audio")
        answer = self.answers.pop(0)
        fail = self.fail

        class Stream:
            def __iter__(stream):
                for i, word in enumerate(answer.split(" ")):
                    if word == "boom":
                        raise fail()
                    yield (" " if i else "") + word
                stream.response = answer
                stream.history = list(history or []) + [(query, answer)]

        return Stream()


class Tok:
    @staticmethod
    def from_list_format(items):
        from qwen_audio.tokenizer import from_list_format

        return from_list_format(items)


def chat_in_process(monkeypatch, capsys, model, lines):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: (model, Tok()))
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = cli.main(["chat", "-q"])
    return code, capsys.readouterr()


def test_ctrl_c_during_an_answer_returns_to_the_prompt_with_history_unchanged(monkeypatch, capsys):
    model = ScriptedChat(["first answer", "half boom never", "third answer"], fail=KeyboardInterrupt)
    code, out = chat_in_process(monkeypatch, capsys, model, ["one", "two", "three"])
    assert code == 0
    assert "interrupted" in out.err
    assert model.seen[2] == ("three", [("one", "first answer")])
    assert out.out == "first answer\nhalf\nthird answer\n"


def test_a_backend_whose_chat_stream_is_a_plain_generator(monkeypatch, capsys):
    class Plain:
        def chat_stream(self, tokenizer, query, history=None, system=None, **gen):
            self.seen = list(history or [])
            yield from ["hello", " there"]

    model = Plain()
    code, out = chat_in_process(monkeypatch, capsys, model, ["one", "two"])
    assert code == 0 and out.out == "hello there\nhello there\n"
    assert model.seen == [("one", "hello there")]


def test_a_failing_turn_keeps_the_history(monkeypatch, capsys):
    model = ScriptedChat(["first", "second"])
    code, out = chat_in_process(monkeypatch, capsys, model, ["one", "a bad one", "/nonsense", "two"])
    assert code == 0
    assert "error: bad.wav: cannot decode audio" in out.err and "unknown command /nonsense" in out.err
    assert model.seen[-1] == ("two", [("one", "first")])


def test_export_writes_the_span_of_the_clip_the_answer_names(monkeypatch, capsys, tmp_path):
    if not SPEECH.is_file():
        pytest.skip(f"tutorial audio not found under {AUDIO}")
    answer = 'The word "middle classes" starts at <|0.50|> seconds and ends at <|1.25|> seconds.'
    model = ScriptedChat([answer])
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


def test_missing_audio_exits_1_before_loading(tmp_path, capsys):
    assert cli.main(["ask", "--model", str(tmp_path), "--audio", str(tmp_path / "gone.wav"), "hi"]) == 1
    err = capsys.readouterr().err
    assert "gone.wav" in err and "loading" not in err


def test_missing_lite_backend_is_explained(monkeypatch, capsys):
    import qwen_audio

    def no_lite(name, **kw):
        raise ImportError("cannot import name 'load_lite'")

    monkeypatch.setattr(qwen_audio, "load", no_lite)
    assert cli.main(["ask", "hi"]) == 1
    err = capsys.readouterr().err
    assert "'lite' backend is not available" in err and "--model" in err


def test_generation_flags_mirror_keywords():
    args = cli.build_parser().parse_args(
        ["ask", "q", "--greedy", "--max-new-tokens", "5", "--top-p", "0.8", "--top-k", "3", "--temperature", "0.7",
         "--repetition-penalty", "1.1", "--seed", "4", "--max-window-size", "100"])
    assert cli.generation_options(args) == {"do_sample": False, "max_new_tokens": 5, "top_p": 0.8, "top_k": 3,
                                            "temperature": 0.7, "repetition_penalty": 1.1, "seed": 4,
                                            "max_window_size": 100}
    assert cli.generation_options(cli.build_parser().parse_args(["ask", "q"])) == {}


def test_interrupting_a_real_answer_leaves_the_model_ready_for_the_same_history(tiny_path):
    class InterruptOnce(io.StringIO):
        armed = True

        def write(self, s):
            if s and self.armed:
                self.armed = False
                raise KeyboardInterrupt
            return super().write(s)

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
    r1, h1 = ref.chat(rtok, q1, **GEN_KW)
    r2, h2 = ref.chat(rtok, "and now?", history=h1, **GEN_KW)
    assert session.history == h2
