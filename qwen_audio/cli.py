"""`qwen-audio`: ask about audio, chat about it, transcribe it. A thin client of the library.

    qwen-audio ask --audio talk.flac "What does the speaker say?"
    qwen-audio chat --model Qwen/Qwen-Audio-Chat --audio talk.flac
    qwen-audio transcribe long.wav --timestamps --format srt -o long.srt

Flags mirror the library's keyword arguments (`--max-new-tokens` is `max_new_tokens=`). Errors are one
line on stderr: exit status 1 for a failure, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

from .errors import QwenAudioError

DEFAULT_MODEL = "lite"  # the embedded offline backend
PROG = "qwen-audio"


# ---- loading ---------------------------------------------------------------------------------------


def load_model(name: str, dtype: str | None = None, device: str | None = None, quiet: bool = False):
    """(model, tokenizer) for `name`, with a line on stderr while it loads (the lite backend imported lazily)."""
    import qwen_audio

    if not quiet:
        print(f"{PROG}: loading model {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        loaded = qwen_audio.load(name, dtype=dtype, device=device)
    except ImportError as e:
        if str(name) != "lite":
            raise
        raise QwenAudioError(
            f"the embedded 'lite' backend is not available in this installation ({e}); "
            "pass --model with a checkpoint folder or a hub id such as Qwen/Qwen-Audio-Chat"
        ) from e
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
    """Fail before the (slow) model load when a local audio path does not exist."""
    from .errors import AudioNotFoundError

    for path in paths:
        if "://" not in path and not os.path.exists(path):
            raise AudioNotFoundError(f"audio file not found: {path}")


def build_query(tokenizer, audio: list[str], text: str) -> str:
    """The query `tokenizer.from_list_format` makes of the clips, then the text."""
    return tokenizer.from_list_format([{"audio": a} for a in audio] + [{"text": text}])


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
    model, tokenizer = load_model(args.model, args.dtype, args.device, args.quiet)
    query = build_query(tokenizer, args.audio, args.question)
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
        """One turn, streamed; history changes only when the answer is complete."""
        query = build_query(self.tokenizer, self.pending, text)
        stream = self.model.chat_stream(self.tokenizer, query, self.history, system=self.args.system, **self.gen)
        pieces, got = iter(stream), []
        render = SecondsRenderer(self.args.raw)
        try:
            for piece in pieces:
                got.append(piece)
                self.out.write(render.push(piece))
                self.out.flush()
        except BaseException:
            getattr(pieces, "close", lambda: None)()  # let the model's generator release what it holds
            self.out.write("\n")
            self.out.flush()
            raise
        self.out.write(render.flush() + "\n")
        self.out.flush()
        # A ChatStream knows its history; a backend whose chat_stream is a plain generator does not.
        response = getattr(stream, "response", None)
        response = "".join(got) if response is None else response
        self.history = getattr(stream, "history", None) or [*self.history, (query, response)]
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
    model, tokenizer = load_model(args.model, args.dtype, args.device, args.quiet)
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
        except QwenAudioError as e:
            session.say(f"error: {e}")
        except KeyboardInterrupt:
            session.say("interrupted; the conversation is as it was before this question")
    return 0


# ---- transcribe --------------------------------------------------------------------------------------


def cmd_transcribe(args: argparse.Namespace) -> int:
    """A transcript of a whole file in one of the output formats."""
    from .transcribe import FORMATTERS, task_prompt, transcribe

    task_prompt(args.language or "en", task=args.task, target=args.target, timestamps=args.timestamps)  # fail fast
    check_files([args.file])
    model, tokenizer = load_model(args.model, args.dtype, args.device, args.quiet)
    result = transcribe(model, tokenizer, args.file, language=args.language, timestamps=args.timestamps,
                        progress=not args.quiet, task=args.task, target=args.target, **generation_options(args))
    text = FORMATTERS[args.format](result)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        if not args.quiet:
            print(f"{PROG}: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


# ---- arguments ------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, chat: bool = True) -> None:
    """Model, device and generation flags, named after the library's keyword arguments."""
    from .tokenizer import DEFAULT_SYSTEM

    p.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder, hub id, or 'lite' (default: %(default)s)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype (default: the checkpoint's)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    if chat:
        p.add_argument("--system", default=DEFAULT_SYSTEM, help="system message (default: %(default)r)")
        p.add_argument("--raw", action="store_true", help="show timestamps as tokens (<|2.33|>), not seconds")
        p.add_argument("--max-window-size", type=int, help="history is cut to fit this many prompt tokens")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, help="new tokens at most")
    sampling = g.add_mutually_exclusive_group()
    sampling.add_argument("--greedy", dest="do_sample", action="store_false", default=None, help="greedy decoding (do_sample=False)")
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
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # an odd character must not kill a long answer
        except (AttributeError, ValueError):
            pass
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        return args.run(args)
    except QwenAudioError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
