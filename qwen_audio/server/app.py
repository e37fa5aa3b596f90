"""The OpenAI-compatible HTTP API and the web page, on any `Backend` (a Starlette app).

    POST /v1/chat/completions        messages with text, input_audio (base64) and (--allow-urls) audio_url parts
    POST /v1/audio/transcriptions    multipart: file, language, response_format, timestamp_granularities[], stream
    POST /v1/audio/translations      the same, into English
    GET  /v1/models, /health, /      the model, liveness, the web page

Requests become the library's structured messages (text is only text) and run on one worker thread
(`worker.py`). Every failure is an OpenAI error object with a fitting status; none shows a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..audio import open_source
from ..backend import Backend, Segment
from ..errors import (
    AudioError,
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
from .worker import Job, QueueFull, Worker

log = logging.getLogger("qwen_audio.server")
_PART = re.compile(r"messages\[\d+\]\.content\[\d+\]")


@dataclass(frozen=True)
class ServerConfig:
    """Limits and switches of a server."""

    model_name: str  # what /v1/models lists and responses name
    api_key: str | None = None  # when set, /v1/* needs `Authorization: Bearer <key>`
    allow_urls: bool = False  # fetch audio_url parts (public http(s) addresses only)
    max_body_bytes: int = 25 << 20  # larger request bodies get 413
    max_audio_seconds: float = 3600.0  # longer audio gets 400 (chat hears its first 30 s; transcription all)
    timeout_s: float = 600.0  # a request still running after this gets 504 (or an error event) and is stopped
    max_active: int = 4  # answers written at once, a step each in turn
    max_queue: int = 32  # requests waiting beyond this get 429 with Retry-After
    url_timeout_s: float = 10.0  # per step of fetching an audio_url
    max_url_bytes: int = 25 << 20


class _BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: refuses bodies past the limit (413) and logs one line per request."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, seen = time.perf_counter(), [0], [0]
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode()
        limit = self.max_body_bytes

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise _BodyTooLarge
            return message

        try:
            if declared.isdigit() and int(declared) > limit:
                raise _BodyTooLarge
            await self.app(scope, limited_receive, counted_send)
        except _BodyTooLarge:
            if status[0] == 0:
                err = P.ApiError(413, f"the request body is larger than {limit >> 20} MB", None, "request_too_large")
                await _json(err.body(), 413)(scope, receive, counted_send)
        finally:
            log.info("%s %s %s %.3fs", scope["method"], scope["path"], status[0] or "-", time.perf_counter() - started)


def _json(body: dict, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def api_error(e: BaseException) -> P.ApiError:
    """The OpenAI error for any failure: the library's own errors name their culprit; others say little."""
    if isinstance(e, P.ApiError):
        return e
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
        self.worker = Worker(config.max_active, config.max_queue)
        self.started = time.time()

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
        if name not in (None, "", self.config.model_name):
            raise P.ApiError(404, f"model {name!r} is not served here; this server serves {self.config.model_name!r}",
                             "model", "model_not_found")

    def submit(self, start) -> Job:
        job = Job(start, asyncio.get_running_loop())
        self.worker.submit(job)
        return job

    async def events(self, job: Job, deadline: float, request: Request | None = None) -> AsyncIterator[tuple]:
        """The job's events until it ends; on timeout (or, with `request`, a client gone) the job is stopped."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                job.cancel()
                raise P.ApiError(504, f"the request took longer than {self.config.timeout_s:g} s and was stopped",
                                 None, "timeout", "timeout_error")
            try:
                kind, value = await asyncio.wait_for(job.events.get(), timeout=min(left, 1.0))
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    job.cancel()
                    raise asyncio.CancelledError from None
                continue
            if kind == "error":
                raise value
            yield kind, value
            if kind == "done":
                return

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
        self.check_key(request)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise P.ApiError(400, f"the request body is not JSON ({e})", None, "invalid_json") from None
        req = P.chat_request(body, self.config.allow_urls)
        self.check_model(body.get("model"))
        self.backend.options(**req.options)  # a bad option is a 400 before the request waits in line
        messages = req.messages
        if req.urls:
            fetched = {}
            for placeholder, url in req.urls:
                data = await run_in_threadpool(fetch_audio, url, self.config.max_url_bytes, self.config.url_timeout_s)
                fetched[id(placeholder)] = Audio(data, name=url)
            messages = req.with_fetched(fetched)
        for m in messages:
            for part in m.content:
                if isinstance(part, Audio):
                    await run_in_threadpool(self.check_length, part.source, part.label)
        queued = time.monotonic()
        deadline = queued + self.config.timeout_s
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
            yield _sse(api_error(e).body())
        finally:
            job.cancel()  # the client left, or the answer ended: either way the worker lets go of it

    async def transcriptions(self, request: Request) -> Response:
        return await self.transcribe(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        return await self.transcribe(request, "translate")

    async def transcribe(self, request: Request, task: str) -> Response:
        self.check_key(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise P.ApiError(400, "send multipart/form-data with a 'file' field", None, "invalid_content_type")
        async with request.form(max_files=1, max_fields=32) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise P.ApiError(400, "the 'file' field with the audio is missing", "file", "missing_file")
            data = await upload.read()
            name = upload.filename or "file"
            fields = {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form.keys() if k != "file"}
        req = P.transcription_request(fields, task)
        self.check_model((fields.get("model") or [None])[-1])
        self.backend.options(**req.options)
        await run_in_threadpool(self.check_length, data, name)
        queued = time.monotonic()
        deadline = queued + self.config.timeout_s
        timestamps = req.response_format in ("srt", "vtt", "verbose_json")
        job = self.submit(lambda: self.backend.transcribe_stream(
            None, data, language=req.language, timestamps=timestamps, task=task, **req.options))
        events = await self.first(job, deadline, request)
        if req.stream:
            return StreamingResponse(self.transcript_events(job, events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        async for kind, value in events:
            if kind == "item":
                self.check_segment(value, job)
        t = value.transcript
        if req.response_format == "verbose_json":
            return _json(P.verbose_json(t, task, req.words))
        if req.response_format == "json":
            return _json({"text": t.text})
        media = {"srt": "application/x-subrip", "vtt": "text/vtt"}.get(req.response_format, "text/plain")
        return PlainTextResponse(FORMATTERS[req.response_format](t), media_type=media)

    def check_length(self, data: bytes, name: str) -> None:
        """Refuse audio whose container says it is longer than the limit (400), before it waits in line."""
        with open_source(data, name) as reader:
            total = reader.total_seconds
        if total is not None and total > self.config.max_audio_seconds:
            raise P.ApiError(400, f"{name}: {total:.0f} s of audio, longer than this server's limit of "
                             f"{self.config.max_audio_seconds:g} s", "file", "audio_too_long")

    def check_segment(self, segment: Segment, job: Job) -> None:
        """The same limit for audio whose container states no length: stop when a segment passes it."""
        if segment.end > self.config.max_audio_seconds:
            job.cancel()
            raise P.ApiError(400, f"the audio is longer than this server's limit of {self.config.max_audio_seconds:g} s",
                             "file", "audio_too_long")

    async def transcript_events(self, job: Job, events) -> AsyncIterator[str]:
        texts = []
        try:
            async for kind, value in events:
                if kind == "item":
                    self.check_segment(value, job)
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
            yield _sse(api_error(e).body())
        finally:
            job.cancel()


def _sep(language: str) -> str:
    from ..backend import NO_SPACE_LANGUAGES

    return "" if language in NO_SPACE_LANGUAGES else " "


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _finish(stats) -> str:
    return "length" if stats is not None and stats.stop_reason == "length" else "stop"


def _timings(queued: float, stats) -> dict:
    return {"queue_and_answer_s": round(time.monotonic() - queued, 4),
            "first_text_s": stats.first_text_s if stats else None, "answer_s": stats.total_s if stats else None}


def create_app(backend: Backend, config: ServerConfig) -> Starlette:
    """The Starlette app serving `backend` (its worker starts and stops with the app)."""
    server = Server(backend, config)

    async def handle(request: Request, exc: Exception) -> Response:
        err = api_error(exc)
        return _json(err.body(), err.status, err.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
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
    ]
    # The library's errors, the protocol's and a full queue are answered here; anything else reaches
    # Starlette's last-resort handler, which logs its traceback, after `handle` has answered.
    handled = {P.ApiError: handle, QwenAudioError: handle, QueueFull: handle, Exception: handle}
    app = Starlette(routes=routes, middleware=[Middleware(Guard, max_body_bytes=config.max_body_bytes)],
                    exception_handlers=handled, lifespan=lifespan)
    app.state.server = server
    return app
