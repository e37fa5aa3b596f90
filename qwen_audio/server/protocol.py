"""OpenAI's wire format, in and out: requests checked into the library's types, results into OpenAI's JSON.

Nothing here touches the model or the network: `chat_request` turns a `/v1/chat/completions` body
into `Message`s and generation options (every problem an `ApiError` naming its field), and the
`*_response` / `*_chunk` functions build the JSON OpenAI's clients expect.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import reprlib
import time
import uuid
from dataclasses import dataclass, field

from ..errors import PromptError
from ..grounding import parse_spans
from ..messages import Audio, Message, Text

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "webm", "m4a", "mp4", "aac", "pcm16")
MAX_STOP = 4  # stop strings per request, as OpenAI's API
MAX_CLIPS = 8  # audio parts per message, unless the server says otherwise (--max-clips)
_DATA_URL = re.compile(r"^data:audio/[\w.+-]+;base64,(?P<data>.*)$", re.S)


@dataclass
class ApiError(Exception):
    """An error answered as OpenAI's `{"error": {message, type, param, code}}` with an HTTP status."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"
    headers: dict = field(default_factory=dict)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    """A checked chat request."""

    messages: list[Message]
    options: dict  # generation keyword arguments for Backend.respond
    stream: bool = False
    include_usage: bool = False
    urls: list[tuple[Audio, str]] = field(default_factory=list)  # audio_url parts: (placeholder, url) to fetch

    def with_fetched(self, fetched: dict[int, Audio]) -> list[Message]:
        """The messages with each placeholder (by id) replaced by its fetched Audio."""
        return [Message(m.role, tuple(fetched.get(id(p), p) for p in m.content)) for m in self.messages]


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


# How a client's value is shown in a message: short, ASCII (a lone surrogate is escaped, not sent as
# invalid UTF-8), and never deep (a list nested 900 levels would make repr() itself fail).
_shower = reprlib.Repr()
_shower.maxstring, _shower.maxother, _shower.maxlevel, _shower.maxlist, _shower.maxdict = 80, 80, 2, 4, 4


def show(value) -> str:
    return _shower.repr(value).encode("ascii", "backslashreplace").decode("ascii")


def parse_json(body: bytes):
    """The request body as JSON, or a 400: not UTF-8, not JSON, nested too deeply for the parser, or a
    number with more digits than Python converts (4300)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise _bad("the request body is JSON nested too deeply", None, "invalid_json") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError, as is a 5,000-digit integer
        raise _bad(f"the request body is not JSON that can be read ({str(e)[:200]})", None, "invalid_json") from None


def _number(body: dict, name: str, lo: float, hi: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
        what = "an integer" if integer else "a number"
        raise _bad(f"{name} must be {what} from {lo} to {hi}, got {show(value)}", name)
    return value


def decode_audio_data(data, param: str) -> bytes:
    """Base64 audio -> bytes (400 naming `param` when it is not base64)."""
    if not isinstance(data, str) or not data:
        raise _bad("audio data must be a non-empty base64 string", param)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("audio data is not valid base64", param, "invalid_base64") from None


def _part(part, param: str, allow_urls: bool) -> Text | Audio | tuple[str, str]:
    """One content part: Text, Audio, or ("url", url) to fetch."""
    if not isinstance(part, dict):
        raise _bad("content parts are objects with a 'type'", param)
    kind = part.get("type")
    if kind == "text":
        return _text(part.get("text"), f"{param}.text")
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise _bad("an input_audio part needs 'input_audio': {data, format}", f"{param}.input_audio")
        fmt = audio.get("format")
        if not isinstance(fmt, str) or fmt not in AUDIO_FORMATS:
            raise _bad(f"unknown audio format {show(fmt)}; use one of {', '.join(AUDIO_FORMATS)}",
                       f"{param}.input_audio.format", "unsupported_format")
        if fmt == "pcm16":
            raise _bad("raw pcm16 has no sample rate here: send wav", f"{param}.input_audio.format", "unsupported_format")
        return Audio(decode_audio_data(audio.get("data"), f"{param}.input_audio.data"), name=param)
    if kind == "audio_url":
        url = (part.get("audio_url") or {}).get("url") if isinstance(part.get("audio_url"), dict) else None
        if not isinstance(url, str):
            raise _bad("an audio_url part needs 'audio_url': {url}", f"{param}.audio_url")
        m = _DATA_URL.match(url)
        if m:  # inline data: nothing is fetched
            return Audio(decode_audio_data(m.group("data"), f"{param}.audio_url.url"), name=param)
        if not allow_urls:
            raise ApiError(400, "audio_url parts are off on this server (start it with --allow-urls); send "
                           "input_audio with base64 data instead", f"{param}.audio_url", "urls_not_allowed")
        if not url.startswith(("http://", "https://")):
            raise _bad("audio_url must be an http(s) or data: URL", f"{param}.audio_url.url")
        return ("url", url)
    raise _bad(f"unsupported content part type {show(kind)}; use text, input_audio or audio_url", f"{param}.type")


def _text(value, param: str) -> Text:
    """A client's text as a Text part (a 400 naming `param` when it is not a string of valid Unicode)."""
    if not isinstance(value, str):
        raise _bad("text must be a string", param)
    try:
        return Text(value)
    except PromptError as e:  # a lone surrogate ("\ud800" in the JSON) is no character
        raise _bad(str(e), param) from None


def chat_request(body, allow_urls: bool = False, max_clips: int = MAX_CLIPS) -> ChatRequest:
    """Check a /v1/chat/completions body. Unknown fields are ignored, as OpenAI's clients send many;
    fields whose meaning this server cannot honour are refused when set to anything but their default.
    A message may hold at most `max_clips` audio parts."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", None)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty list", "messages")
    for name, default in (("n", 1), ("tools", None), ("functions", None), ("logprobs", False),
                          ("frequency_penalty", 0), ("presence_penalty", 0), ("logit_bias", None)):
        if body.get(name) not in (None, default, [], {}):
            raise ApiError(400, f"{name} is not supported by this server", name, "unsupported_parameter")
    messages: list[Message] = []
    urls: list[tuple[Audio, str]] = []
    for i, m in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad("messages are objects with 'role' and 'content'", param)
        role = m.get("role")
        role = "system" if role == "developer" else role
        if not isinstance(role, str) or role not in ("system", "user", "assistant"):
            raise _bad(f"unsupported role {show(m.get('role'))}; use system, user or assistant", f"{param}.role")
        content = m.get("content")
        if isinstance(content, str):
            parts = [_text(content, f"{param}.content")]
        elif isinstance(content, list):
            parts = []
            for j, p in enumerate(content):
                part = _part(p, f"{param}.content[{j}]", allow_urls)
                if isinstance(part, tuple):
                    placeholder = Audio(b"", name=f"{param}.content[{j}]")  # filled once fetched
                    urls.append((placeholder, part[1]))
                    part = placeholder
                parts.append(part)
        else:
            raise _bad("content must be a string or a list of parts", f"{param}.content")
        clips = sum(isinstance(p, Audio) for p in parts)
        if clips > max_clips:
            raise _bad(f"a message may hold at most {max_clips} audio clips on this server, this one has {clips}",
                       f"{param}.content", "too_many_clips")
        if role != "user" and any(isinstance(p, Audio) for p in parts):
            raise _bad(f"audio can only be sent in user messages, not in a {role} message", f"{param}.content")
        if messages and messages[-1].role == role and role != "system":  # consecutive turns of one speaker
            messages[-1] = Message(role, (*messages[-1].content, Text("\n"), *parts))
        elif role == "system" and messages:
            raise _bad("a system message may only come first", param)
        else:
            messages.append(Message(role, tuple(parts)))
    if messages[-1].role != "user":
        raise _bad("the last message must be the user's", "messages")
    options = {}
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if temperature == 0:
        options["do_sample"] = False
    elif temperature is not None:
        options.update(do_sample=True, temperature=float(temperature))
    if top_p is not None and temperature != 0:
        if top_p == 0:
            raise _bad("top_p must be above 0 (use temperature 0 for greedy answers)", "top_p")
        options["top_p"] = float(top_p)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        options["max_new_tokens"] = _number({"max_tokens": max_tokens}, "max_tokens", 1, 1 << 20, integer=True)
    seed = _number(body, "seed", -(1 << 63), (1 << 63) - 1, integer=True)
    if seed is not None:
        options["seed"] = seed
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise _bad(f"stop must be a string or a list of at most {MAX_STOP} non-empty strings", "stop")
    if stop:
        options["stop"] = tuple(stop)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false", "stream")
    stream_options = body.get("stream_options") or {}
    include_usage = bool(stream_options.get("include_usage")) if isinstance(stream_options, dict) else False
    return ChatRequest(messages, options, stream, include_usage, urls)


def spans_json(text: str) -> list[dict]:
    """The grounded spans of an answer: clip index (0-based, when the answer names one), start, end, words."""
    return [{"clip": s.clip, "start": s.start, "end": s.end, "words": s.words} for s in parse_spans(text).spans]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(stats) -> dict:
    prompt, completion = (stats.prompt_tokens, stats.new_tokens) if stats else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_response(cid: str, model: str, text: str, finish: str, stats, timings: dict) -> dict:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage(stats), "x_spans": spans_json(text), "x_timings": timings,
    }


def chat_chunk(cid: str, model: str, delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


# ---- transcriptions and translations -------------------------------------------------------------------

TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass
class TranscriptionRequest:
    """A checked /v1/audio/transcriptions (or translations) form."""

    task: str  # "transcribe" or "translate"
    language: str | None
    response_format: str
    words: bool  # timestamp_granularities[] holds "word"
    stream: bool
    options: dict  # generation keyword arguments


def transcription_request(fields: dict, task: str) -> TranscriptionRequest:
    """Check the form fields (all but `file`); `fields` maps a name to its list of values."""
    def one(name: str, default=None):
        values = fields.get(name) or [default]
        return values[-1]

    fmt = one("response_format", "json")
    if fmt not in TRANSCRIPT_FORMATS:
        raise _bad(f"unknown response_format {show(fmt)}; use one of {', '.join(TRANSCRIPT_FORMATS)}", "response_format")
    granularities = fields.get("timestamp_granularities[]") or fields.get("timestamp_granularities") or []
    for g in granularities:
        if g not in ("word", "segment"):
            raise _bad(f"unknown timestamp granularity {show(g)}; use word or segment", "timestamp_granularities[]")
    if granularities and fmt != "verbose_json":
        raise _bad("timestamp_granularities needs response_format verbose_json", "timestamp_granularities[]")
    language = one("language") or None
    if language is not None and not re.fullmatch(r"[a-z]{2,3}", language):
        raise _bad(f"language must be an ISO-639-1 code such as 'en', got {show(language)}", "language")
    stream = str(one("stream", "false")).lower()
    if stream not in ("true", "false"):
        raise _bad("stream must be true or false", "stream")
    if stream == "true" and fmt not in ("json", "text"):
        raise _bad("streaming gives text deltas: use response_format json or text", "stream")
    options = {}
    temperature = one("temperature")
    if temperature not in (None, ""):
        try:
            t = float(temperature)
        except ValueError:
            raise _bad(f"temperature must be a number, got {show(temperature)}", "temperature") from None
        if not 0 <= t <= 1:
            raise _bad("temperature must be from 0 to 1", "temperature")
        if t > 0:
            options.update(do_sample=True, temperature=t)
    return TranscriptionRequest(task, language, fmt, "word" in granularities, stream == "true", options)


def verbose_json(t, task: str, words: bool) -> dict:
    """OpenAI's verbose_json: the text, language, duration and segments (and words when asked for).
    Scores this library does not compute (avg_logprob, compression_ratio, no_speech_prob) are null."""
    out = {
        "task": task, "language": t.language, "duration": t.duration, "text": t.text,
        "segments": [{"id": i, "seek": int(s.start * 100), "start": s.start, "end": s.end, "text": s.text,
                      "tokens": [], "temperature": 0.0, "avg_logprob": None, "compression_ratio": None,
                      "no_speech_prob": None} for i, s in enumerate(t.segments)],
    }
    if words:
        out["words"] = [{"word": w.text, "start": w.start, "end": w.end} for s in t.segments for w in s.words]
    return out


# ---- sound events ---------------------------------------------------------------------------------------------

EVENT_FIELDS = ("model",)  # the form fields of /v1/audio/events besides `file`


def events_request(fields: dict) -> None:
    """Check the form fields of /v1/audio/events (all but `file`): a field it does not know is a 400, not ignored."""
    for name in fields:
        if name not in EVENT_FIELDS:
            raise _bad(f"{show(name)} is not a field of /v1/audio/events; send 'file' (and 'model')", show(name)[1:-1],
                       "unsupported_parameter")


def events_json(model: str, events) -> dict:
    """The answer of /v1/audio/events: each SoundEvent as {label, start, end, score}, in time order."""
    return {"object": "audio.events", "model": model, "events": [e.to_dict() for e in events]}
