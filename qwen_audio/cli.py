"""`qwen-audio`: ask about audio, chat about it, transcribe it. A thin client of the library.

    qwen-audio ask --audio talk.flac "What does the speaker say?"
    qwen-audio chat --model Qwen/Qwen-Audio-Chat --audio talk.flac
    qwen-audio transcribe long.wav --timestamps --format srt -o long.srt
    qwen-audio batch rows.jsonl --out answers.jsonl [--ray auto]
    qwen-audio eval asr --manifest librispeech.jsonl --model Qwen/Qwen-Audio-Chat

Flags mirror the library's keyword arguments (`--max-new-tokens` is `max_new_tokens=`).

Errors are one line on stderr, never a traceback for a user's mistake. Exit status:

    0    done
    1    a failure: a QwenAudioError (bad audio, prompt, option, model...), a file that is missing or
         cannot be written (checked before the model loads), or an internal error, reported as
         `qwen-audio: internal error: Type: message` (QWEN_AUDIO_DEBUG=1 prints its traceback)
    2    bad usage (argparse)
    130  interrupted (Ctrl-C)
    141  stdout was closed by its reader (`qwen-audio transcribe x.wav --format srt | head -1`): the
         status a shell reports for a program ended by SIGPIPE. Nothing is printed; the rest is dropped.

Warnings are one line on stderr too, `qwen-audio: warning: message` (a category that is not the project's
is named before the message); Python's filters (-W, PYTHONWARNINGS) still decide which are shown.

In `chat`, an error in one turn (of any kind) is reported as one line and the session goes on with
its history unchanged. `transcribe` writes each segment as soon as it is transcribed (json: at the end);
with `-o PATH` the path is checked before any work, and after a failure midway PATH keeps what was written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import asdict

from .errors import AudioError, OptionError, QwenAudioError

DEFAULT_MODEL = "lite"  # the embedded offline backend
QUANTIZE_CHOICES = ["int8", "int4", "int4-32", "int4-64", "int4-128"]
QUANTIZE_HELP = "int8 or int4 weights on a CPU (a checkpoint's model; lite's LLM)"
PROG = "qwen-audio"
DEBUG_VARIABLE = "QWEN_AUDIO_DEBUG"  # set (not "0") to print the traceback of an unexpected error
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a program that SIGPIPE ended


# ---- loading ---------------------------------------------------------------------------------------


def load_model(name: str, dtype: str | None = None, device: str | None = None, quiet: bool = False,
               quantize: str | None = None):
    """(model, tokenizer) for `name`, with a line on stderr while it loads."""
    import qwen_audio

    if not quiet:
        print(f"{PROG}: loading model {name}{f' ({quantize})' if quantize else ''} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    loaded = qwen_audio.load(name, dtype=dtype, device=device, **({"quantize": quantize} if quantize else {}))
    if not quiet:
        print(f"{PROG}: model loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return loaded


def generation_options(args: argparse.Namespace) -> dict:
    """The generation keyword arguments given on the command line (others keep the model's defaults)."""
    names = ("max_new_tokens", "top_p", "top_k", "temperature", "repetition_penalty", "seed", "max_window_size")
    gen = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.do_sample is not None:
        gen["do_sample"] = args.do_sample
    return gen


# ---- ask -------------------------------------------------------------------------------------------


def check_files(paths: list[str]) -> None:
    """Fail before the (slow) model load when a local audio path does not exist or is a folder."""
    from .errors import AudioNotFoundError

    for path in paths:
        if "://" in path:
            continue
        if not os.path.exists(path):
            raise AudioNotFoundError(f"audio file not found: {path}")
        if os.path.isdir(path):
            raise AudioError(f"{path} is a folder, not an audio file")


def build_query(audio: list[str], text: str) -> str:
    """The query `from_list_format` makes of the clips, then the text (every backend reads this layout)."""
    from .tokenizer import from_list_format

    return from_list_format([{"audio": a} for a in audio] + [{"text": text}])


def spans_json(response: str, clips: list[str], raw: bool) -> list[dict]:
    """The grounded spans of an answer as dicts, each with the path of the clip it points at (or null)."""
    from .grounding import parse_spans, render_seconds

    out = []
    for span in parse_spans(response).spans:
        d = asdict(span)
        d["text"] = span.text if raw else render_seconds(span.text)
        d["audio"] = clip_for(span, clips, [])
        out.append(d)
    return out


def cmd_ask(args: argparse.Namespace) -> int:
    """One question, one answer on stdout."""
    from .grounding import render_seconds

    check_files(args.audio)
    model, tokenizer = load_model(args.model, args.dtype, args.device, args.quiet, args.quantize)
    query = build_query(args.audio, args.question)
    response, _ = model.chat(tokenizer, query, history=None, system=args.system, **generation_options(args))
    shown = response if args.raw else render_seconds(response)
    if args.json:
        out = {"response": shown, "spans": spans_json(response, args.audio, args.raw), "model": args.model}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(shown)
    return 0


# ---- chat ------------------------------------------------------------------------------------------

CHAT_HELP = """commands:
  /audio PATH        attach a clip to the next question
  /export PATH [N]   write span N (default 1) of the last answer as a WAV file
  /history           show the conversation
  /reset             forget the conversation
  /quit              leave (so does end of input)
anything else is a question."""


class SecondsRenderer:
    """Streamed pieces -> text with `<|2.33|>` shown as `2.33`, holding back a possibly unfinished token."""

    def __init__(self, raw: bool = False):
        self.raw, self.buf = raw, ""

    def push(self, piece: str) -> str:
        from .grounding import render_seconds

        if self.raw:
            return piece
        self.buf += piece
        cut = self.buf.rfind("<")
        if cut < 0 or ">" in self.buf[cut:]:
            cut = len(self.buf)
        ready, self.buf = self.buf[:cut], self.buf[cut:]
        return render_seconds(ready)

    def flush(self) -> str:
        from .grounding import render_seconds

        ready, self.buf = self.buf, ""
        return ready if self.raw else render_seconds(ready)


def clip_for(span, turn_clips: list[str], all_clips: list[str]) -> str | None:
    """The clip a span points at: the one it names ("Audio 2", numbered within its question, else in the
    conversation), else the question's first clip, else the conversation's latest."""
    if span.clip is not None:
        for clips in (turn_clips, all_clips):
            if span.clip < len(clips):
                return clips[span.clip]
        return None
    if turn_clips:
        return turn_clips[0]
    return all_clips[-1] if all_clips else None


class ChatSession:
    """The state of an interactive chat: history, clips waiting for the next question, the last answer."""

    def __init__(self, model, tokenizer, args: argparse.Namespace, out=None, err=None):
        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.history: list[tuple[str, str]] = []
        self.pending: list[str] = []
        self.gen = generation_options(args)

    def say(self, message: str) -> None:
        """A status line (not an answer) on stderr."""
        print(message, file=self.err, flush=True)

    def attach(self, path: str) -> None:
        """Check that `path` decodes, then hold it for the next question."""
        from .audio import load_clip

        load_clip(path)
        self.pending.append(path)
        self.say(f"attached {path} to the next question")

    def ask(self, text: str) -> None:
        """One turn, streamed; history changes only when the answer is complete. On any exception (Ctrl-C
        included) the answer is closed at once, so the model hands back what it holds, and re-raised."""
        query = build_query(self.pending, text)
        stream = self.model.chat_stream(self.tokenizer, query, self.history, system=self.args.system, **self.gen)
        render, wrote = SecondsRenderer(self.args.raw), False
        try:
            for piece in stream:
                shown = render.push(piece)
                if shown:
                    self.out.write(shown)
                    self.out.flush()
                    wrote = True
        except BaseException as e:
            stream.close()
            if wrote and not isinstance(e, BrokenPipeError):  # end the half-written line
                try:
                    self.out.write("\n")
                    self.out.flush()
                except OSError:
                    pass
            raise
        self.out.write(render.flush() + "\n")
        self.out.flush()
        self.history = stream.history
        self.pending = []

    def export(self, rest: str) -> None:
        """`/export PATH [N]`: cut span N (1-based) of the last answer out of the clip it points at."""
        from .grounding import cut, parse_spans
        from .tokenizer import extract_audio_urls

        path, _, number = rest.rpartition(" ")
        if not number.isdigit():
            path, number = rest, "1"
        path, n = path.strip(), int(number)
        if not path:
            raise QwenAudioError("usage: /export PATH [N]")
        if not self.history:
            raise QwenAudioError("nothing to export: no answer yet")
        query, response = self.history[-1]
        spans = parse_spans(response).spans
        if not 1 <= n <= len(spans):
            raise QwenAudioError(f"the last answer has {len(spans)} timestamped span(s); cannot export span {n}")
        span = spans[n - 1]
        all_clips = [u for q, _ in self.history for u in extract_audio_urls(q)]
        clip = clip_for(span, extract_audio_urls(query), all_clips)
        if clip is None:
            raise QwenAudioError("the last answer points at no clip of this conversation")
        cut(clip, span, out_path=path)
        self.say(f"wrote {path}: {span.start:.2f}-{span.end:.2f} s of {clip}")

    def show_history(self) -> None:
        for i, (q, r) in enumerate(self.history, 1):
            print(f"[{i}] user: {q}\n[{i}] assistant: {r}", file=self.out)
        self.out.flush()

    def handle(self, line: str) -> bool:
        """Act on one input line; False means leave. Errors are reported and the session goes on."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self.ask(line)
            return True
        command, _, rest = line.partition(" ")
        rest = rest.strip()
        if command in ("/quit", "/exit"):
            return False
        if command == "/audio":
            if not rest:
                raise QwenAudioError("usage: /audio PATH")
            self.attach(rest)
        elif command == "/export":
            self.export(rest)
        elif command == "/reset":
            self.history, self.pending = [], []
            self.say("conversation reset")
        elif command == "/history":
            self.show_history()
        elif command == "/help":
            self.say(CHAT_HELP)
        else:
            raise QwenAudioError(f"unknown command {command}; /help lists them")
        return True


def _lines(interactive: bool):
    """Input lines: with a prompt on a terminal, quietly from a pipe. Ctrl-C at the prompt is ignored."""
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if not interactive and not line:
            return
        yield line


def cmd_chat(args: argparse.Namespace) -> int:
    """An interactive conversation on stdin/stdout."""
    check_files(args.audio)
    model, tokenizer = load_model(args.model, args.dtype, args.device, args.quiet, args.quantize)
    session = ChatSession(model, tokenizer, args)
    interactive = sys.stdin.isatty()
    for path in args.audio:
        session.attach(path)  # a bad clip given on the command line is an error before the session
    if interactive:
        session.say("type a question, /help for commands, /quit to leave")
    for line in _lines(interactive):
        try:
            if not session.handle(line):
                break
        except KeyboardInterrupt:
            session.say("interrupted; the conversation is as it was before this question")
        except BrokenPipeError:
            raise  # stdout is gone: the session cannot go on (main exits quietly)
        except Exception as e:  # noqa: BLE001 - any failure of one turn leaves the session as it was
            if debug():
                traceback.print_exc(file=session.err)
            session.say(f"error: {describe(e)}")
    return 0


# ---- transcribe --------------------------------------------------------------------------------------


def check_output(path: str, source: str | None = None) -> None:
    """Fail before any work when `path` cannot be written: its folder is missing, it is a folder, it is
    the audio being transcribed, or it cannot be opened for writing. An existing file is not changed."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise QwenAudioError(f"cannot write {path}: it is a folder")
    if not os.path.exists(folder):
        raise QwenAudioError(f"cannot write {path}: folder {folder} does not exist")
    if not os.path.isdir(folder):
        raise QwenAudioError(f"cannot write {path}: {folder} is not a folder")
    existed = os.path.lexists(path)
    if existed and source is not None and os.path.exists(source) and os.path.samefile(path, source):
        raise QwenAudioError(f"cannot write {path}: it is the audio being transcribed")
    try:
        with open(path, "a", encoding="utf-8"):  # "a": a check that truncates nothing
            pass
    except OSError as e:
        raise QwenAudioError(f"cannot write {path}: {e.strerror or e}") from None
    if not existed:
        os.remove(path)  # created only by the check; it is written when the transcript is


class TranscriptWriter:
    """`FORMATTERS[fmt](transcript)` in pieces, as the segments arrive: `start()`, then `segment(s)` for
    each segment, then `end(transcript)`; the pieces concatenate to the formatter's output. SRT cues are
    numbered as they come; text is the segments joined with a space (nothing for zh, ja, yue) and a
    final newline; JSON, one object, is all written by `end`."""

    def __init__(self, fmt: str, language: str):
        from .backend import NO_SPACE_LANGUAGES
        from .transcribe import FORMATTERS, Transcript, to_vtt

        if fmt not in FORMATTERS:
            raise QwenAudioError(f"unknown format {fmt!r}; use one of {', '.join(FORMATTERS)}")
        self.fmt, self.sep = fmt, "" if language in NO_SPACE_LANGUAGES else " "
        self.header = to_vtt(Transcript("")) if fmt == "vtt" else ""  # "WEBVTT\n"
        self.cues = 0  # segments seen (SRT numbers every segment)
        self.texts = 0  # segments with text (text joins only those)

    def start(self) -> str:
        return self.header

    def segment(self, segment) -> str:
        from .transcribe import Transcript, to_srt, to_vtt

        self.cues += 1
        one = Transcript(segment.text, [segment])
        if self.fmt == "srt":  # cues are separated by a blank line; to_srt numbers its one cue 1
            return ("\n" if self.cues > 1 else "") + f"{self.cues}\n" + to_srt(one).partition("\n")[2]
        if self.fmt == "vtt":  # "\n" + the cue
            return to_vtt(one)[len(self.header):]
        if self.fmt == "text" and segment.text:
            self.texts += 1
            return (self.sep if self.texts > 1 else "") + segment.text
        return ""

    def end(self, transcript) -> str:
        from .transcribe import to_json

        if self.fmt == "json":
            return to_json(transcript)
        return "\n" if self.fmt == "text" else ""


class Output:
    """Where a transcript goes: stdout, or a file opened at the first text (a failure before any text
    leaves an existing file as it was). Every write is flushed."""

    def __init__(self, path: str | None):
        self.path, self.file, self.written = path, None, 0
        self.label = path if path is not None else "stdout"

    def open(self) -> None:
        """Open the output (truncating a file) if it is not open yet."""
        if self.file is not None:
            return
        try:
            self.file = sys.stdout if self.path is None else open(  # noqa: SIM115 - closed by close()
                self.path, "w", encoding="utf-8", errors="replace")
        except OSError as e:
            raise QwenAudioError(f"cannot write {self.label}: {e.strerror or e}") from None

    def write(self, text: str) -> None:
        if not text:
            return
        self.open()
        try:
            self.file.write(text)
            self.file.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise QwenAudioError(f"cannot write {self.label}: {e.strerror or e}") from None
        self.written += len(text)

    def close(self) -> None:
        if self.file is not None and self.path is not None:
            self.file.close()


class PartialOutput(Exception):
    """`error` stopped a transcription after part of it was written; `note` says what was kept."""

    def __init__(self, error: BaseException, note: str):
        super().__init__(note)
        self.error, self.note = error, note


def write_transcript(stream, fmt: str, out: Output) -> None:
    """Write `stream`'s segments to `out` as they are transcribed, in format `fmt`."""
    writer = TranscriptWriter(fmt, stream.language)
    out.write(writer.start())
    segments, count, end = iter(stream), 0, 0.0
    while True:
        try:
            segment = next(segments)
        except StopIteration:
            break
        except BrokenPipeError:
            raise
        except BaseException as e:  # Ctrl-C too: say what the output holds
            if out.written and fmt != "json":
                note = f"{out.label} holds the {count} segment(s) transcribed before it (to {end:.1f} s)"
            else:
                note = f"nothing was written to {out.label}"
            raise PartialOutput(e, note) from e
        count, end = count + 1, segment.end
        out.write(writer.segment(segment))
    out.open()  # an empty transcript is an empty file
    out.write(writer.end(stream.transcript))


def cmd_transcribe(args: argparse.Namespace) -> int:
    """A transcript of a whole file in one of the output formats, written as it is transcribed."""
    from .transcribe import task_prompt

    task_prompt(args.language or "en", task=args.task, target=args.target, timestamps=args.timestamps)  # fail fast
    check_files([args.file])
    if args.output is not None:
        check_output(args.output, args.file)
    model, tokenizer = load_model(args.model, args.dtype, args.device, args.quiet, args.quantize)
    stream = model.transcribe_stream(tokenizer, args.file, language=args.language, timestamps=args.timestamps,
                                     task=args.task, target=args.target, progress=not args.quiet,
                                     **generation_options(args))
    out = Output(args.output)
    try:
        write_transcript(stream, args.format, out)
    finally:
        stream.close()
        out.close()
    if args.output is not None and not args.quiet:
        print(f"{PROG}: wrote {args.output}", file=sys.stderr)
    return 0


# ---- serve ------------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """The OpenAI-compatible API and the web page, until Ctrl-C or SIGTERM (in-flight requests finish first)."""
    import logging

    try:
        import uvicorn

        from .server.app import ServerConfig, create_app
        from .server.connections import guarded_protocol
    except ImportError as e:
        raise QwenAudioError(f"serving needs the server extras: pip install 'qwen-audio[server]' ({e})") from None
    limits = {"--max-body-mb": args.max_body_mb, "--max-audio-seconds": args.max_audio_seconds, "--timeout": args.timeout,
              "--header-timeout": args.header_timeout, "--max-active": args.max_active, "--max-queue": args.max_queue,
              "--max-clips": args.max_clips, "--max-connections": args.max_connections}
    for flag, value in limits.items():
        if not value > 0:  # NaN too
            raise OptionError(f"{flag} must be above 0, got {value}")
    api_key = args.api_key or os.environ.get("QWEN_AUDIO_API_KEY") or None
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    name = args.served_model_name or (os.path.basename(os.path.normpath(args.model)) if os.path.isdir(args.model)
                                      else args.model)
    config = ServerConfig(model_name=name, api_key=api_key, allow_urls=args.allow_urls,
                          max_body_bytes=int(args.max_body_mb * (1 << 20)), max_audio_seconds=args.max_audio_seconds,
                          max_clips=args.max_clips, timeout_s=args.timeout, max_active=args.max_active,
                          max_queue=args.max_queue, bind_host=args.host, allowed_hosts=tuple(args.allowed_hosts),
                          cors_origins=tuple(args.cors_origin))
    model, _ = load_model(args.model, args.dtype, args.device, args.quiet, args.quantize)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if not loopback and api_key is None:
        print(f"{PROG}: warning: serving on {args.host} with no API key: anyone who can reach it can use it",
              file=sys.stderr)
    if not args.quiet:
        print(f"{PROG}: serving {name} on http://{args.host}:{args.port} (web page at /, API at /v1)",
              file=sys.stderr, flush=True)
    uvicorn.run(create_app(model, config), host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(args.timeout), http=guarded_protocol(args.header_timeout, args.max_connections))
    return 0


# ---- batch and eval ---------------------------------------------------------------------------------------


def batch_options(args: argparse.Namespace, defaults: dict) -> dict:
    """Generation options of a batch or eval run: `defaults` (greedy, ...) with the flags given."""
    return {**defaults, **generation_options(args)}


def load_options(args: argparse.Namespace) -> dict:
    """`qwen_audio.load` keyword arguments given on the command line (each Ray actor loads with them too)."""
    given = {"dtype": args.dtype, "device": args.device, "quantize": args.quantize}
    return {k: v for k, v in given.items() if v is not None}


def cmd_batch(args: argparse.Namespace) -> int:
    """Answer every row of a manifest into a JSON-lines file; resumable (see qwen_audio.batch)."""
    from .batch import BATCH_DEFAULTS, run_batch

    summary = run_batch(args.manifest, args.out, args.model, workers=args.workers, ray=args.ray,
                        options=batch_options(args, BATCH_DEFAULTS), load_options=load_options(args),
                        gpus_per_worker=args.gpus_per_worker, progress=not args.quiet)
    if not args.quiet:
        errors = f", {summary.errors} of them errors" if summary.errors else ""
        before = f"; {summary.skipped} were there already" if summary.skipped else ""
        print(f"{PROG}: wrote {summary.done} rows to {args.out}{errors}{before} ({summary.seconds:.1f} s)",
              file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run and score an evaluation task; the markdown table on stdout, the reports in --out."""
    from .eval import EVAL_DEFAULTS, evaluate

    report = evaluate(args.task, args.manifest, args.model, out_dir=args.out, ray=args.ray, workers=args.workers,
                      options=batch_options(args, EVAL_DEFAULTS), load_options=load_options(args),
                      gpus_per_worker=args.gpus_per_worker, progress=not args.quiet)
    print(report.markdown(), end="")
    if not args.quiet:
        folder = os.path.dirname(report.results)
        print(f"{PROG}: reports in {os.path.join(folder, 'report.json')} and report.md ({report.seconds:.1f} s)",
              file=sys.stderr)
    return 0


def _scale(p: argparse.ArgumentParser) -> None:
    """Where rows run: flags shared by batch and eval."""
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run on Ray: 'auto' joins the cluster on this machine or "
                   "starts one; ADDRESS joins that cluster (default: a worker pool here)")
    p.add_argument("--workers", type=int, help="rows at a time here (default: the model's: 16 on the faithful model, "
                   "whose scheduler batches them; the cores, at most 4, on lite), or Ray actors "
                   "(default: one per CPU, or per --gpus-per-worker GPUs)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each Ray actor takes (default: 0, CPUs)")


# ---- arguments ------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, chat: bool = True) -> None:
    """Model, device and generation flags, named after the library's keyword arguments."""
    from .tokenizer import DEFAULT_SYSTEM

    p.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder, hub id, or 'lite' (default: %(default)s)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (default: the checkpoint's)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, help=QUANTIZE_HELP)
    if chat:
        p.add_argument("--system", default=DEFAULT_SYSTEM, help="system message (default: %(default)r)")
        p.add_argument("--raw", action="store_true", help="show timestamps as tokens (<|2.33|>), not seconds")
        p.add_argument("--max-window-size", type=int, help="history is cut to fit this many prompt tokens")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, help="new tokens at most")
    sampling = g.add_mutually_exclusive_group()
    sampling.add_argument("--greedy", dest="do_sample", action="store_false", default=None,
                          help="greedy decoding (do_sample=False)")
    sampling.add_argument("--sample", dest="do_sample", action="store_true", default=None, help="sample (do_sample=True)")
    g.add_argument("--top-p", type=float, help="nucleus sampling mass")
    g.add_argument("--top-k", type=int, help="sample among the k likeliest tokens (0: off)")
    g.add_argument("--temperature", type=float, help="sampling temperature")
    g.add_argument("--repetition-penalty", type=float, help="> 1 discourages repeats")
    g.add_argument("--seed", type=int, help="a fixed seed makes sampling reproducible")
    p.add_argument("-q", "--quiet", action="store_true", help="no loading messages or progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The `qwen-audio` argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description="Chat about audio with Qwen-Audio-Chat.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = sub.add_parser("ask", help="ask one question about audio clips", description="Ask one question; print the answer.")
    ask.add_argument("question", help="the question (text)")
    ask.add_argument("--audio", action="append", default=[], metavar="FILE", help="a clip (repeat for several)")
    ask.add_argument("--json", action="store_true", help='print {"response", "spans", "model"} as JSON')
    _common(ask)
    ask.set_defaults(run=cmd_ask)

    chat = sub.add_parser("chat", help="an interactive conversation on stdin/stdout",
                          description="Chat over several turns.\n\n" + CHAT_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_argument("--audio", action="append", default=[], metavar="FILE", help="a clip for the first question")
    _common(chat)
    chat.set_defaults(run=cmd_chat)

    tr = sub.add_parser("transcribe", help="transcribe a recording of any length",
                        description="Transcribe (or translate) a whole recording, 30 s at a time.")
    tr.add_argument("file", help="the audio file")
    tr.add_argument("--language", help="the spoken language: en zh de es ko fr ja it (default: en; lite detects it)")
    tr.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    tr.add_argument("--target", help="language of the text when translating (default: en)")
    tr.add_argument("--timestamps", action="store_true", help="segment times; windows follow segment boundaries")
    tr.add_argument("--format", choices=["text", "json", "srt", "vtt"], default="text", help="output format (default: text)")
    tr.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of stdout")
    _common(tr, chat=False)
    tr.set_defaults(run=cmd_transcribe)

    batch = sub.add_parser("batch", help="answer every row of a manifest (resumable; locally or on Ray)",
                           description="Answer each manifest row ({id, audio, question}, {id, messages} or {id, audio, "
                                       "task: transcribe|translate}) into OUT, one JSON line per row. A rerun skips "
                                       "the ids already in OUT. Greedy unless --sample.")
    batch.add_argument("manifest", help="JSON lines, one row per line, each with a unique id")
    batch.add_argument("--out", required=True, metavar="OUT", help="the results file (JSON lines; appended to)")
    _scale(batch)
    _common(batch, chat=False)
    batch.set_defaults(run=cmd_batch)

    from .eval import ALL, TASKS

    ev = sub.add_parser("eval", help="evaluate a model on a manifest (ASR, translation, classification, ...)",
                        description="Run and score TASK on a manifest's rows: a markdown table on stdout, "
                                    "results.jsonl, report.json and report.md in --out. Greedy, 256 new tokens "
                                    "at most, unless flags say otherwise.")
    ev.add_argument("task", choices=[*TASKS, ALL], help="the task (all: each row names its own)")
    ev.add_argument("--manifest", required=True, help="JSON lines; row formats in qwen_audio.eval.tasks")
    ev.add_argument("--out", metavar="DIR", help="where results and reports go (default: eval-TASK-MODEL); "
                    "a rerun resumes from DIR/results.jsonl")
    _scale(ev)
    _common(ev, chat=False)
    ev.set_defaults(run=cmd_eval)

    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API and a web page",
                           description="Serve /v1/chat/completions, /v1/audio/transcriptions, /v1/audio/translations, "
                                       "/v1/models, /health and a web page at /.")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: $QWEN_AUDIO_API_KEY, else none)")
    serve.add_argument("--served-model-name", help="the model's name in the API (default: --model, or its folder's name)")
    serve.add_argument("--allow-urls", action="store_true", help="fetch audio_url parts (public http(s) addresses only)")
    serve.add_argument("--max-body-mb", type=float, default=25.0, help="larger request bodies get 413 (default: 25)")
    serve.add_argument("--max-audio-seconds", type=float, default=3600.0,
                       help="a request whose audio adds up to more (counted as it is decoded) gets 400 (default: 3600)")
    serve.add_argument("--timeout", type=float, default=600.0, help="seconds a request may run (default: 600)")
    serve.add_argument("--max-active", type=int, default=8,
                       help="answers written at once; the model batches their steps (default: 8)")
    serve.add_argument("--max-queue", type=int, default=32, help="waiting requests beyond this get 429 (default: 32)")
    serve.add_argument("--max-clips", type=int, default=8, help="audio clips per message; more get 400 (default: 8)")
    serve.add_argument("--allowed-hosts", nargs="+", default=[], metavar="NAME",
                       help="Host names to answer besides the bound address (a name behind a proxy; '*': any)")
    serve.add_argument("--cors-origin", nargs="+", default=[], metavar="ORIGIN",
                       help="origins whose web pages may call the API, e.g. https://app.example (default: none)")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a connection may take to send a request's headers (default: 10)")
    serve.add_argument("--max-connections", type=int, default=256,
                       help="open connections at most; more get 503 (default: 256)")
    serve.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder, hub id, or 'lite' (default: %(default)s)")
    serve.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights dtype (default: the checkpoint's)")
    serve.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    serve.add_argument("--quantize", choices=QUANTIZE_CHOICES, help=QUANTIZE_HELP)
    serve.add_argument("-q", "--quiet", action="store_true", help="no loading messages or request lines")
    serve.set_defaults(run=cmd_serve)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def debug() -> bool:
    """Whether QWEN_AUDIO_DEBUG asks for tracebacks."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def user_error(e: BaseException) -> bool:
    """An error the user can act on from its message: the project's, or a file the system refused."""
    return isinstance(e, QwenAudioError) or (isinstance(e, OSError) and e.filename is not None)


def describe(e: BaseException) -> str:
    """One line for an error: the message of a user's error, `Type: message` for anything else."""
    message = one_line(str(e))
    if user_error(e):
        return message or type(e).__name__
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


def report(e: BaseException, note: str = "") -> int:
    """Print the one line for `e` (and its traceback with QWEN_AUDIO_DEBUG); return the exit status."""
    note = f"; {note}" if note else ""
    if isinstance(e, KeyboardInterrupt):
        print(f"{PROG}: interrupted{note}", file=sys.stderr)
        return 130
    if debug():
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    if user_error(e):
        print(f"{PROG}: error: {describe(e)}{note}", file=sys.stderr)
    else:
        hint = "" if debug() else f" (set {DEBUG_VARIABLE}=1 for the traceback)"
        print(f"{PROG}: internal error: {describe(e)}{note}{hint}", file=sys.stderr)
    return 1


def warning_line(message, category: type[Warning]) -> str:
    """One line for a warning, with the errors' prefix; a category that is not the project's is named."""
    text = one_line(str(message))
    own = category.__module__.partition(".")[0] == __package__.partition(".")[0]  # defined in qwen_audio
    return f"{PROG}: warning: {text}" if own else f"{PROG}: warning: {category.__name__}: {text}"


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` while the command runs: one line on stderr, not Python's `file:line: Category:
    message` and the source line (which would point into the console script)."""
    stream = file if file is not None else sys.stderr
    if stream is None:  # no stderr (pythonw): nowhere to say it
        return
    try:
        print(warning_line(message, category), file=stream, flush=True)
    except OSError:  # stderr closed: the warning is lost, as Python's own display loses it
        pass


@contextmanager
def one_line_warnings():
    """Show warnings as `show_warning` does until the block ends. Only the display changes: the filters
    (-W, PYTHONWARNINGS, the library's) still decide which warnings are shown, and the library's
    warnings stay ordinary Python warnings outside the command line."""
    previous = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


def quiet_broken_pipe() -> int:
    """stdout's reader has gone: point stdout at /dev/null so that nothing (not even the flush at exit)
    complains, and return the SIGPIPE status."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stdout): nothing to quiet
        pass
    return EXIT_BROKEN_PIPE


def run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        return args.run(args)
    except BrokenPipeError:
        raise
    except PartialOutput as p:
        return report(p.error, p.note)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - one line, never a traceback (see report)
        return report(e)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module's docstring)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # an odd character must not kill a long answer
        except (AttributeError, ValueError):
            pass
    try:
        with one_line_warnings():
            code = run_command(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()


if __name__ == "__main__":
    sys.exit(main())
