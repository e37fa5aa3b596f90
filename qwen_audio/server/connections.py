"""Connections, before any request exists: bounded header time, bounded open connections, JSON errors.

uvicorn's h11 protocol closes a kept-alive connection that idles, but not one that sends a request's
headers a byte at a time (slowloris), and it answers a malformed request in plain text. This
subclass arms a deadline whenever a connection is waiting for a request's headers, refuses
connections past a limit with a JSON 503, and answers malformed requests with a JSON 400.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _raw_response(status: int, reason: str, message: str, code: str, kind: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """An h11 protocol class for `uvicorn.run(http=...)` with these limits."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            self._header_deadline: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(_raw_response(503, "Service Unavailable", f"more than {max_connections} open "
                                              "connections; retry later", "too_many_connections", "server_error"))
                transport.close()
                return
            self._watch_headers()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms uvicorn's keep-alive timer for an idle connection
            self._watch_headers()

        def _watch_headers(self) -> None:
            """Armed while the connection waits for a request's headers and uvicorn's keep-alive timer is
            not watching it (before the first request, or once the next one has begun to arrive)."""
            waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting and self.timeout_keep_alive_task is None:
                if self._header_deadline is None:
                    self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_too_slow)
            else:
                self._disarm()

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(_raw_response(408, "Request Timeout", f"the request's headers took longer than "
                                                   f"{header_timeout_s:g} s", "timeout", "timeout_error"))
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_raw_response(400, "Bad Request", msg, "invalid_http", "invalid_request_error"))
            self.transport.close()

    return GuardedH11Protocol
