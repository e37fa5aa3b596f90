"""The OpenAI-compatible HTTP API and the web page, on any `Backend` (a Starlette app).

    POST /v1/chat/completions        messages with text, input_audio (base64) and (--allow-urls) audio_url parts
    POST /v1/audio/transcriptions    multipart: file, language, response_format, timestamp_granularities[], stream
    POST /v1/audio/translations      the same, into English
    POST /v1/audio/events            multipart: file (and model): the named sounds in the clip, with times (not OpenAI's)
    GET  /v1/models, /health, /      the model, liveness, the web page

Requests become the library's structured messages (text is only text) and run on worker threads
(`worker.py`), whose answers the engine's scheduler writes together. Every failure is an OpenAI error
object with a fitting status; none shows a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..audio import decoded_seconds, source_key
from ..backend import Backend
from ..errors import (
    AudioError,
    AudioTooLongError,
    DeviceError,
    NonFiniteError,
    OptionError,
    PromptError,
    QwenAudioError,
    TokenizerError,
)
from ..messages import Audio
from ..transcribe import FORMATTERS
from . import protocol as P
from .fetch import fetch_audio
from .origin import host_allowed, origin_allowed
from .worker import Computed, Job, QueueFull, Worker

log = logging.getLogger("qwen_audio.server")
_PART = re.compile(r"messages\[\d+\]\.content\[\d+\]|file(?=:)")  # how audio parts are named


@dataclass(frozen=True)
class ServerConfig:
    """Limits and switches of a server."""

    model_name: str  # what /v1/models lists and responses name
    api_key: str | None = None  # when set, /v1/* needs `Authorization: Bearer <key>`
    allow_urls: bool = False  # fetch audio_url parts (public http(s) addresses only)
    max_body_bytes: int = 25 << 20  # larger request bodies get 413
    max_audio_seconds: float = 3600.0  # a request's audio, counted as it is decoded (never from headers); more: 400
    max_clips: int = P.MAX_CLIPS  # audio parts per message; more get 400
    timeout_s: float = 600.0  # a request still running after this gets 504 (or an error event) and is stopped
    max_active: int = 8  # answers written at once, each on a worker thread (at most the backend's concurrency())
    max_queue: int = 32  # requests waiting beyond this get 429 with Retry-After
    url_timeout_s: float = 10.0  # the whole fetch of one audio_url (resolve, connect, redirects, body)
    max_url_bytes: int = 25 << 20
    bind_host: str = "127.0.0.1"  # the address the server listens on: Host headers are checked against it
    allowed_hosts: tuple[str, ...] = ()  # more Host names to answer (a name behind a proxy; "*": any)
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API (CORS); none by default


DRAIN_BYTES = 64 << 20  # a refused body is read (and dropped) up to this much before the 413 is sent,
DRAIN_S = 10.0  # ... or for this long: a client that writes its whole body before reading gets the 413
# Each token passes three threads (the scheduler's, the request's worker, the event loop). With Python's
# default 5 ms switch interval the scheduler often waited that long to take the GIL back between two
# kernels: one client's answer took 1.34 s instead of 0.93 s (0.19 B model, 32 tokens; 0.96 s at 0.5 ms).
SWITCH_INTERVAL_S = 0.0005
AUDIO_CHECKS = 2  # clips measured at once beside the worker (each decodes up to --max-audio-seconds)


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class Guard:
    """ASGI middleware, before any route: the Host and Origin checks (DNS rebinding, cross-site requests),
    bodies past the limit (413, counted as received), and one log line per request."""

    def __init__(self, app, config: ServerConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, seen, more = time.perf_counter(), [0], [0], [True]
        body_deadline = time.monotonic() + self.config.timeout_s
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        limit = self.config.max_body_bytes

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def limited_receive():
            if not more[0]:  # the body is in: what comes next is the disconnect, however late
                return await receive()
            try:  # a body sent a byte at a time holds a connection at most --timeout seconds
                message = await asyncio.wait_for(receive(), timeout=max(0.0, body_deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                more[0] = message.get("more_body", False)
                if seen[0] > limit:
                    raise _BodyTooLarge
            return message

        try:
            refused = self.refused(scope, headers)
            if refused is not None:
                await _error(refused)(scope, receive, counted_send)
                return
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _BodyTooLarge
            await self.app(scope, limited_receive, counted_send)
        except _BodyTooLarge:
            if status[0] == 0:
                if "100-continue" not in headers.get("expect", "").lower():  # such a client has sent nothing yet
                    await _drain(receive, more[0])
                err = P.ApiError(413, f"the request body is larger than {limit / (1 << 20):g} MB", None,
                                 "request_too_large")
                await _error(err)(scope, receive, counted_send)
        except _BodyTooSlow:
            if status[0] == 0:
                err = P.ApiError(408, f"the request body took longer than {self.config.timeout_s:g} s to arrive", None,
                                 "timeout", "timeout_error")
                await _error(err)(scope, receive, counted_send)
        finally:
            log.info("%s %s %s %.3fs", scope["method"], P.show(scope["path"])[1:-1], status[0] or "-",
                     time.perf_counter() - started)

    def refused(self, scope, headers: dict) -> P.ApiError | None:
        """Why a request may not be answered at all, or None."""
        c = self.config
        host = headers.get("host", "")
        if not host_allowed(host, c.bind_host, c.allowed_hosts):
            return P.ApiError(400, f"this server does not answer for the host {P.show(host)} (a DNS rebinding guard); "
                              "start it with --allowed-hosts NAME to add a name", None, "host_not_allowed")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not origin_allowed(origin, host, c.cors_origins):
            return P.ApiError(403, f"cross-origin request from {P.show(origin)} refused; start the server with "
                              "--cors-origin ORIGIN to let that site's pages call it", None, "origin_not_allowed",
                              "permission_error")
        return None


async def _drain(receive, more: bool) -> None:
    """Read and drop the rest of a refused body (at most DRAIN_BYTES, DRAIN_S), so that a client that
    writes all of it before reading (urllib, curl) reads the 413 instead of a reset connection."""
    got, deadline = 0, time.monotonic() + DRAIN_S
    while more and got < DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        got += len(message.get("body", b""))
        more = message.get("more_body", False)


def _json(body: dict, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _error(err: P.ApiError) -> Response:
    """An ApiError as OpenAI's error JSON. ASCII: a message never carries invalid UTF-8 out."""
    body = json.dumps(err.body(), ensure_ascii=True).encode("ascii")
    return Response(body, err.status, headers=err.headers, media_type="application/json")


def api_error(e: BaseException) -> P.ApiError:
    """The OpenAI error for any failure: the library's own errors name their culprit; others say little."""
    if isinstance(e, P.ApiError):
        return e
    if isinstance(e, HTTPException):  # Starlette's own: 404, 405, a malformed multipart body
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "invalid_request")
        return P.ApiError(e.status_code, str(e.detail), None, code, headers=dict(e.headers or {}))
    if isinstance(e, ClientDisconnect):  # its body was cut short (or malformed): nobody reads this answer
        return P.ApiError(400, "the client went away before its request had arrived", None, "client_disconnected")
    if isinstance(e, AudioTooLongError):
        named = _PART.match(str(e))
        return P.ApiError(400, str(e), named.group(0) if named else None, "audio_too_long")
    if isinstance(e, QueueFull):
        if e.stopping:
            return P.ApiError(503, str(e), None, "shutting_down", "server_error")
        return P.ApiError(429, str(e), None, "rate_limit_exceeded", "rate_limit_error", {"Retry-After": str(e.retry_after)})
    if isinstance(e, (AudioError, PromptError, OptionError, TokenizerError, DeviceError)):
        code = {AudioError: "invalid_audio", PromptError: "invalid_prompt", OptionError: "invalid_value"}
        kind = next((c for t, c in code.items() if isinstance(e, t)), "invalid_value")
        named = _PART.match(str(e))  # audio parts are named after where they stand: messages[0].content[1]
        return P.ApiError(400, str(e), named.group(0) if named else None, kind)
    if isinstance(e, NonFiniteError):
        return P.ApiError(500, str(e), None, "model_error", "server_error")
    if isinstance(e, QwenAudioError):
        return P.ApiError(400, str(e), None, "invalid_request")
    log.exception("internal error")
    return P.ApiError(500, f"internal error ({type(e).__name__}); the server log has the details", None,
                      "internal_error", "server_error")


class Server:
    """The routes, bound to one backend, its worker and its limits."""

    def __init__(self, backend: Backend, config: ServerConfig):
        self.backend, self.config = backend, config
        # More threads than the backend can use at once only contend (lite's Whisper fills the cores).
        self.worker = Worker(min(config.max_active, backend.concurrency()), config.max_queue)
        self.started = time.time()
        self._measuring = asyncio.Semaphore(AUDIO_CHECKS)
        self._lengths: OrderedDict[tuple, float] = OrderedDict()  # clip identity -> seconds decoded (recent)

    # -- plumbing ---------------------------------------------------------------------------------------

    def check_key(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise P.ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)", None,
                             "invalid_api_key", "authentication_error")

    def check_model(self, name) -> None:
        if name is not None and not isinstance(name, str):
            raise P.ApiError(400, f"model must be a string, got {P.show(name)}", "model", "invalid_value")
        if name not in (None, "", self.config.model_name):
            raise P.ApiError(404, f"model {P.show(name)} is not served here; this server serves "
                             f"{self.config.model_name!r}", "model", "model_not_found")

    async def check_audio(self, clips: list[tuple[object, str]], deadline: float) -> None:
        """Decode each (source, param) to its end, counting samples, beside the worker (AUDIO_CHECKS at a
        time): a request whose audio adds up to more than --max-audio-seconds, or does not decode, is a
        400 naming the part where it went over, before the request waits in line. The lengths of recent
        clips are remembered (a conversation resends its clips every turn) and count without decoding."""
        limit, total = self.config.max_audio_seconds, 0.0
        for source, param in clips:
            key = source_key(source)
            seconds = self._lengths.get(key)
            if seconds is None:
                async with self._measuring:
                    if time.monotonic() > deadline:
                        raise self.timed_out()
                    try:  # at most what is left of the request's budget is decoded
                        seconds = await run_in_threadpool(decoded_seconds, source, max(limit - total, 1e-3), param)
                    except AudioTooLongError:
                        raise self.too_long(param) from None
                self._lengths[key] = seconds
                while len(self._lengths) > 256:
                    self._lengths.popitem(last=False)
            self._lengths.move_to_end(key)
            total += seconds
            if total > limit:
                raise self.too_long(param)

    def too_long(self, param: str) -> P.ApiError:
        return P.ApiError(400, f"{param}: the request's audio is longer than this server's limit of "
                          f"{self.config.max_audio_seconds:g} s (counted as decoded)", param, "audio_too_long")

    def timed_out(self) -> P.ApiError:
        return P.ApiError(504, f"the request took longer than {self.config.timeout_s:g} s and was stopped",
                          None, "timeout", "timeout_error")

    def submit(self, start) -> Job:
        job = Job(start, asyncio.get_running_loop())
        self.worker.submit(job)
        return job

    async def events(self, job: Job, deadline: float, request: Request | None = None) -> AsyncIterator[tuple]:
        """The job's events until it ends. On timeout, or (with `request`) when the client has gone, which
        is looked at twice a second even while events flow, the job is cancelled: the worker lets go
        of it at its next step."""
        look = time.monotonic() + DISCONNECT_CHECK_S
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise self.timed_out()
                if request is not None and now >= look:
                    look = now + DISCONNECT_CHECK_S
                    if await request.is_disconnected():
                        raise asyncio.CancelledError
                try:
                    kind, value = await asyncio.wait_for(job.events.get(), timeout=min(deadline - now, DISCONNECT_CHECK_S))
                except asyncio.TimeoutError:
                    continue
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            job.cancel()  # ended, failed, timed out or abandoned: nothing more is wanted from the worker

    async def first(self, job: Job, deadline: float, request: Request) -> AsyncIterator[tuple]:
        """Wait until the job has started (so its errors can still be a status code), then its events."""
        events = self.events(job, deadline, request)
        async for kind, _ in events:
            if kind == "started":
                return events
        raise P.ApiError(500, "the job ended without starting", None, "internal_error", "server_error")

    # -- routes -----------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok", "model": self.config.model_name, "active": self.worker.active,
                      "queued": self.worker.waiting, "uptime_s": round(time.time() - self.started, 1)})

    async def models(self, request: Request) -> Response:
        self.check_key(request)
        return _json({"object": "list", "data": [{"id": self.config.model_name, "object": "model",
                                                  "created": int(self.started), "owned_by": "qwen-audio"}]})

    async def page(self, request: Request) -> Response:
        html = resources.files("qwen_audio.server").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    async def chat(self, request: Request) -> Response:
        queued = time.monotonic()
        deadline = queued + self.config.timeout_s
        self.check_key(request)
        _need_json(request)
        body = P.parse_json(await request.body())
        req = P.chat_request(body, self.config.allow_urls, self.config.max_clips)
        self.check_model(body.get("model"))
        self.backend.options(**req.options)  # a bad option is a 400 before the request waits in line
        messages = req.messages
        if req.urls:
            fetched = {}
            for placeholder, url in req.urls:
                data = await run_in_threadpool(fetch_audio, url, self.config.max_url_bytes, self.config.url_timeout_s)
                fetched[id(placeholder)] = Audio(data, name=f"{placeholder.name} ({url[:200]})")
            messages = req.with_fetched(fetched)
        clips = [p for m in messages for p in m.content if isinstance(p, Audio)]
        await self.check_audio([(p.source, _PART.match(p.label).group(0)) for p in clips], deadline)
        job = self.submit(lambda: self.backend.respond(messages, **req.options))
        events = await self.first(job, deadline, request)
        cid, model = P.completion_id(), self.config.model_name
        if not req.stream:
            async for _ in events:
                pass  # the stream collects the pieces; once the events end it is complete
            stream = job.stream
            return _json(P.chat_response(cid, model, stream.response, _finish(stream.stats), stream.stats,
                                         _timings(queued, stream.stats)))
        return StreamingResponse(self.chat_events(job, events, cid, model, req.include_usage, queued),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def chat_events(self, job: Job, events, cid: str, model: str, include_usage: bool,
                          queued: float) -> AsyncIterator[str]:
        try:
            yield _sse(P.chat_chunk(cid, model, {"role": "assistant", "content": ""}))
            async for kind, value in events:
                if kind == "item":
                    yield _sse(P.chat_chunk(cid, model, {"content": value}))
                else:
                    stats = value.stats
                    yield _sse(P.chat_chunk(cid, model, {}, _finish(stats), x_spans=P.spans_json(value.response),
                                            x_timings=_timings(queued, stats)))
                    if include_usage:
                        yield _sse({**P.chat_chunk(cid, model, {}), "choices": [], "usage": P.usage(stats)})
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - the status line is sent: the error goes in the stream
            yield _sse(api_error(e).body(), ascii=True)
        finally:
            job.cancel()  # the client left, or the answer ended: either way the worker lets go of it

    async def transcriptions(self, request: Request) -> Response:
        return await self.transcribe(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        return await self.transcribe(request, "translate")

    async def upload(self, request: Request) -> tuple[bytes, dict[str, list[str]]]:
        """(the bytes of the multipart `file` field, the other fields' text values by name)."""
        if _media_type(request) != "multipart/form-data":
            raise P.ApiError(415, "send multipart/form-data with a 'file' field", None, "invalid_content_type")
        async with request.form(max_files=1, max_fields=32) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise P.ApiError(400, "the 'file' field with the audio is missing", "file", "missing_file")
            data = await upload.read()
            fields = {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form.keys() if k != "file"}
        return data, fields

    async def transcribe(self, request: Request, task: str) -> Response:
        queued = time.monotonic()
        deadline = queued + self.config.timeout_s
        self.check_key(request)
        data, fields = await self.upload(request)
        req = P.transcription_request(fields, task)
        self.check_model((fields.get("model") or [None])[-1])
        self.backend.options(**req.options)
        await self.check_audio([(data, "file")], deadline)
        timestamps = req.response_format in ("srt", "vtt", "verbose_json")
        job = self.submit(lambda: self.backend.transcribe_stream(
            None, data, language=req.language, timestamps=timestamps, task=task, **req.options))
        events = await self.first(job, deadline, request)
        if req.stream:
            return StreamingResponse(self.transcript_events(job, events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        async for _ in events:
            pass  # the stream collects the segments; once the events end it is complete
        t = job.stream.transcript
        if req.response_format == "verbose_json":
            return _json(P.verbose_json(t, task, req.words))
        if req.response_format == "json":
            return _json({"text": t.text})
        media = {"srt": "application/x-subrip", "vtt": "text/vtt"}.get(req.response_format, "text/plain")
        return PlainTextResponse(FORMATTERS[req.response_format](t), media_type=media)

    async def sound_events(self, request: Request) -> Response:
        """The named sounds in an uploaded clip, each stretch with its times (`Backend.sound_events`). A model
        that names none is a 400 (an OptionError from the backend), found on a worker as any answer's errors."""
        deadline = time.monotonic() + self.config.timeout_s
        self.check_key(request)
        data, fields = await self.upload(request)
        P.events_request(fields)
        self.check_model((fields.get("model") or [None])[-1])
        await self.check_audio([(data, "file")], deadline)
        audio = Audio(data, name="file")  # its errors then name the part: "file: cannot decode audio (...)"
        job = self.submit(lambda: Computed(self.backend.sound_events(audio)))  # the tagger runs off the event loop
        async for _ in await self.first(job, deadline, request):
            pass
        return _json(P.events_json(self.config.model_name, job.stream.value))

    async def transcript_events(self, job: Job, events) -> AsyncIterator[str]:
        texts = []
        try:
            async for kind, value in events:
                if kind == "item":
                    if value.text:
                        delta = ("" if not texts or value.text[:1].isspace() else _sep(job.stream.language)) + value.text
                        texts.append(delta)
                        yield _sse({"type": "transcript.text.delta", "delta": delta})
                else:
                    yield _sse({"type": "transcript.text.done", "text": value.transcript.text})
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001
            yield _sse(api_error(e).body(), ascii=True)
        finally:
            job.cancel()


DISCONNECT_CHECK_S = 0.5  # how often a waiting request looks whether its client is still there


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _need_json(request: Request) -> None:
    """JSON endpoints take only application/json: a page of another site can send text/plain or a form
    without asking (no CORS preflight), never application/json."""
    if _media_type(request) != "application/json":
        raise P.ApiError(415, "send the request body as JSON with Content-Type: application/json", None,
                         "invalid_content_type")


def _sep(language: str) -> str:
    from ..backend import NO_SPACE_LANGUAGES

    return "" if language in NO_SPACE_LANGUAGES else " "


def _sse(obj: dict, ascii: bool = False) -> str:
    """One server-sent event. Errors go as ASCII: their messages may quote what a client sent."""
    return f"data: {json.dumps(obj, ensure_ascii=ascii)}\n\n"


def _finish(stats) -> str:
    return "length" if stats is not None and stats.stop_reason == "length" else "stop"


def _timings(queued: float, stats) -> dict:
    return {"queue_and_answer_s": round(time.monotonic() - queued, 4),
            "first_text_s": stats.first_text_s if stats else None, "answer_s": stats.total_s if stats else None}


def create_app(backend: Backend, config: ServerConfig) -> Starlette:
    """The Starlette app serving `backend` (its worker starts and stops with the app)."""
    server = Server(backend, config)

    async def handle(request: Request, exc: Exception) -> Response:
        return _error(api_error(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        server.worker.start()
        try:
            yield
        finally:  # uvicorn has let in-flight requests finish; the worker ends once nothing is left
            await run_in_threadpool(server.worker.stop, config.timeout_s)

    routes = [
        Route("/", server.page),
        Route("/health", server.health),
        Route("/v1/models", server.models),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/audio/transcriptions", server.transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", server.translations, methods=["POST"]),
        Route("/v1/audio/events", server.sound_events, methods=["POST"]),
    ]
    # The library's errors, the protocol's and a full queue are answered here; anything else reaches
    # Starlette's last-resort handler, which logs its traceback, after `handle` has answered.
    handled = {P.ApiError: handle, QwenAudioError: handle, QueueFull: handle, HTTPException: handle,
               ClientDisconnect: handle, Exception: handle}
    middleware = [Middleware(Guard, config=config)]
    if config.cors_origins:  # outermost: it answers the preflight; without --cors-origin no CORS header is sent
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                        allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handled, lifespan=lifespan)
    app.state.server = server
    return app
