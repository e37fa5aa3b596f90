"""Hostile bytes and hostile clients, against servers started as users start them (`qwen-audio serve`).

Each test here is a probe that once got through: script demuxers reading the server's files, limits
that trusted a container's header, work that went on after a 504 or a disconnect, addresses that
reached loopback, 500s, cross-site requests, slow clients and refused bodies that reset the
connection. What was probed and what holds is listed in the README's "Safe by default".
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from .conftest import TINY, need_shared
from .hostile import FIFO, SCRIPTS, flac_bytes, nothing_opens, with_stated_samples
from .test_server import GREEDY, SPEECH, Server, ask, error, multipart


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}}


def post(server: Server, path: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    """(status, headers, body) of a request with exactly these headers (no Content-Type unless given)."""
    req = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post_json(server: Server, body, path: str = "/v1/chat/completions", **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return post(server, path, data, {"Content-Type": "application/json", **headers})


def health(server: Server) -> dict:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        return json.load(r)


def wait_idle(server: Server, seconds: float) -> float:
    """Seconds until the worker has nothing active (or `seconds`, if it never gets there)."""
    t = time.monotonic()
    while health(server)["active"] and time.monotonic() - t < seconds:
        time.sleep(0.1)
    return time.monotonic() - t


# ---- servers ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The server's working directory: its file, a FIFO named like a clip that scripts name."""
    folder = tmp_path_factory.mktemp("server-home")
    os.mkfifo(folder / FIFO)
    return folder


@pytest.fixture(scope="module")
def tiny(logs, home):
    need_shared()
    server = Server(logs, str(TINY), "--dtype", "float32", "--quiet", "--max-audio-seconds", "60", "--max-clips", "2",
                    "--allow-urls", "--max-body-mb", "1", "--header-timeout", "1.5", "--timeout", "60", cwd=home)
    yield server
    server.stop()


# ---- 1. client bytes never choose a demuxer that opens files ------------------------------------------------


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_demuxers_are_refused_and_open_nothing(tiny, home, script):
    """Scripts naming the server's file (relative to its working directory, absolute, or through file:,
    subfile:, concat: and tee:), as input_audio, a data: URL and an upload: a 400 naming the part."""
    data = SCRIPTS[script](home / FIFO)
    data = data.encode() if isinstance(data, str) else data
    with nothing_opens(home / FIFO):
        chat = post_json(tiny, {"messages": [{"role": "user", "content": [
            part(data), {"type": "text", "text": "what is it?"}]}], **GREEDY})
        data_url = post_json(tiny, {"messages": [{"role": "user", "content": [
            {"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64," + b64(data)}}]}], **GREEDY})
        upload = error(lambda: tiny.client().audio.transcriptions.create(model="qwen-audio-tiny",
                                                                         file=("a.wav", data, "audio/wav")))
        events = post(tiny, "/v1/audio/events", *multipart(("a.wav", data)))
    status, _, body = events  # measured before the model is asked (this one names no sounds): refused as audio
    err = json.loads(body)["error"]
    assert status == 400 and err["code"] == "invalid_audio" and err["param"] == "file" and FIFO not in err["message"], body
    for status, _, body in (chat, data_url):
        err = json.loads(body)["error"]
        assert status == 400 and err["code"] == "invalid_audio" and err["param"] == "messages[0].content[0]", body
        assert FIFO not in err["message"] and str(home) not in err["message"]
    assert upload.status_code == 400 and upload.body["param"] == "file" and FIFO not in upload.body["message"]


def test_real_audio_still_decodes_in_every_way_in(tiny):
    flac = SPEECH.read_bytes()
    r = tiny.client().chat.completions.create(model="qwen-audio-tiny", messages=[{"role": "user", "content": [
        part(flac, "flac"), {"type": "text", "text": "hi"}]}], **GREEDY)
    assert r.choices[0].message.content and r.usage.prompt_tokens > 150
    status, _, _ = post_json(tiny, {"messages": [{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": "data:audio/flac;base64," + b64(flac)}}]}], **GREEDY})
    assert status == 200
    text = tiny.client().audio.transcriptions.create(model="qwen-audio-tiny", file=("a.flac", flac, "audio/flac"))
    assert isinstance(text.text, str)


# ---- 2. limits count what is decoded --------------------------------------------------------------------------


def silent_flac(seconds: float) -> bytes:
    """`seconds` of silence as FLAC whose STREAMINFO says 0 samples (length unknown)."""
    return with_stated_samples(flac_bytes(np.zeros(int(seconds * 16000), np.int16)), 0)


def test_a_long_clip_whose_header_hides_its_length_is_refused(tiny, tmp_path):
    flac = silent_flac(20 * 60)  # 20 minutes, 60 s allowed
    (tmp_path / "long.flac").write_bytes(flac)
    with av.open(str(tmp_path / "long.flac")) as c:
        assert not c.streams.audio[0].duration  # the header says nothing of its length
    status, _, body = post_json(tiny, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, part(flac, "flac")]}], **GREEDY})
    err = json.loads(body)["error"]
    assert status == 400 and err["code"] == "audio_too_long" and err["param"] == "messages[0].content[1]"
    upload = error(lambda: tiny.client().audio.transcriptions.create(model="qwen-audio-tiny",
                                                                     file=("long.flac", flac, "audio/flac")))
    assert upload.status_code == 400 and upload.body["code"] == "audio_too_long" and upload.body["param"] == "file"
    short = silent_flac(50)  # under the limit, length hidden too: answered
    assert post_json(tiny, {"messages": [{"role": "user", "content": [part(short, "flac")]}], **GREEDY})[0] == 200


def test_the_limit_is_on_all_the_audio_of_a_request(tiny):
    forty = silent_flac(40)  # 60 s allowed: one is answered, two in one request are not
    assert post_json(tiny, {"messages": [{"role": "user", "content": [part(forty, "flac")]}], **GREEDY})[0] == 200
    other = silent_flac(41)
    status, _, body = post_json(tiny, {"messages": [
        {"role": "user", "content": [part(forty, "flac")]}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [part(other, "flac")]}], **GREEDY})
    err = json.loads(body)["error"]
    assert status == 400 and err["code"] == "audio_too_long" and err["param"] == "messages[2].content[0]"


def test_clips_per_message_are_capped(tiny):
    flac = SPEECH.read_bytes()
    status, _, body = post_json(tiny, {"messages": [{"role": "user", "content": [part(flac, "flac")] * 3}], **GREEDY})
    err = json.loads(body)["error"]
    assert status == 400 and err["code"] == "too_many_clips" and err["param"] == "messages[0].content"


# ---- 3. a 504 or a disconnect stops the work ---------------------------------------------------------------------


def test_a_client_that_disconnects_from_a_plain_request_frees_its_slot(tiny):
    body = json.dumps({"messages": ask("talk", SPEECH), "temperature": 0, "max_tokens": 8000}).encode()
    with socket.create_connection(("127.0.0.1", tiny.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        t = time.monotonic()
        while not health(tiny)["active"] and time.monotonic() - t < 30:
            time.sleep(0.05)
        assert health(tiny)["active"] == 1
    # The answer would take ~20 s more; the worker lets go of it within a step of noticing (twice a second).
    assert wait_idle(tiny, 15) < 3


def test_after_a_504_the_worker_lets_go_at_the_next_step(logs):
    """lite's open answers once computed a whole 8,000-token prompt in one step (140 s past a 504)."""
    need_shared()
    pytest.importorskip("faster_whisper", reason="lite extras not installed: pip install 'qwen-audio[lite]'")
    server = Server(logs, "lite", "--timeout", "2", "--max-active", "1", "--quiet")
    try:
        huge = "Tell me a story about " + "word " * 20000
        late = error(lambda: server.client().chat.completions.create(model="lite", messages=ask(huge, SPEECH)))
        assert late.status_code == 504 and late.body["type"] == "timeout_error"
        assert wait_idle(server, 120) < 60  # a bounded prompt: one step, then the slot is free
    finally:
        server.stop()


# ---- 4. URLs -------------------------------------------------------------------------------------------------------


def test_ipv6_forms_of_loopback_and_bad_urls_are_400s_that_connect_nowhere(tiny):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        urls = [f"http://[::127.0.0.1]:{port}/a.wav", f"http://[::ffff:0:7f00:1]:{port}/a.wav",
                f"http://[64:ff9b::7f00:1]:{port}/a.wav", f"http://[2002:7f00:1::]:{port}/a.wav",
                "http://1.2.3.4:99999/", "http://[::1/x", "http://2130706433/a.wav", "gopher://x/"]
        for url in urls:
            status, _, body = post_json(tiny, {"messages": [{"role": "user", "content": [
                {"type": "audio_url", "audio_url": {"url": url}}]}], **GREEDY})
            assert status == 400, (url, body)
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing connected


# ---- 5. no 500s --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, code", [
    ({"messages": [{"role": ["user"], "content": "hi"}]}, "invalid_value"),
    ({"messages": [{"role": {"a": 1}, "content": "hi"}]}, "invalid_value"),
    ({"messages": [{"role": "user", "content": "hi \ud800"}]}, "invalid_value"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": ["x"]}, "invalid_value"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "\udc00" * 5}, "model_not_found"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": "AAAA", "format": [[[[["wav"]]]]]}}]}]}, "unsupported_format"),
])
def test_malformed_fields_are_400s(tiny, body, code):
    status, _, raw = post_json(tiny, body)
    assert 400 <= status < 500 and json.loads(raw)["error"]["code"] == code, raw
    raw.decode("utf-8")  # whatever the client sent, the answer is valid UTF-8


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}",
                                 b"\xff\xfe{}", b'{"a": NaN, "messages": [}'])
def test_unreadable_json_is_a_400(tiny, raw):
    status, _, body = post_json(tiny, raw)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_json"


def test_a_vanishing_temperature_samples_as_greedy(tiny):
    r = tiny.client().chat.completions.create(model="qwen-audio-tiny", messages=ask("hi"), temperature=1e-300,
                                              max_tokens=8)
    greedy = tiny.client().chat.completions.create(model="qwen-audio-tiny", messages=ask("hi"), temperature=0,
                                                   max_tokens=8)
    assert r.choices[0].message.content == greedy.choices[0].message.content


MULTIPART_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/events")  # uploads of a `file`


def test_routing_and_multipart_errors_are_openai_errors(tiny):
    for path, method, status in [("/nope", "GET", 404), ("/v1/models", "POST", 405), ("/v1/chat/completions", "GET", 405),
                                 ("/v1/audio/events", "GET", 405)]:
        got, headers, body = post(tiny, path, b"{}" if method == "POST" else None,
                                  {"Content-Type": "application/json"}, method)
        assert got == status and headers["Content-Type"] == "application/json" and json.loads(body)["error"]["message"]
    for route in MULTIPART_ROUTES:
        for ctype, data in [("multipart/form-data", b"abc"),  # no boundary
                            ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nabc")]:
            got, headers, body = post(tiny, route, data, {"Content-Type": ctype})
            assert got == 400 and json.loads(body)["error"]["message"], (route, body)


def test_lite_answers_http_clients_in_their_terms(logs):
    need_shared()
    pytest.importorskip("faster_whisper", reason="lite extras not installed: pip install 'qwen-audio[lite]'")
    server = Server(logs, "lite", "--quiet")
    try:
        status, _, body = post_json(server, {"messages": [{"role": "user", "content": "what is that sound? \ud800"}]})
        assert status == 400 and json.loads(body)["error"]["param"] == "messages[0].content"
        r = server.client().chat.completions.create(model="lite", messages=ask("what is that sound?"))
        text = r.choices[0].message.content
        assert "no audio" in text and "from_list_format" not in text and "tokenizer" not in text
    finally:
        server.stop()


def raw_http(server: Server, data: bytes) -> bytes:
    """What the server answers to `data` sent on a connection of its own, until it closes it (or 5 s)."""
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(5)
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return out


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",  # a malformed chunk, mid-body
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
])
def test_malformed_http_is_a_json_400_and_no_internal_error(tiny, request_bytes):
    before = tiny.log.read_text()
    answer = raw_http(tiny, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["error"]["message"], answer
    time.sleep(0.3)
    assert "Traceback" not in tiny.log.read_text()[len(before):]


def test_fuzzed_requests_never_get_a_500(tiny):
    """A few hundred malformed bodies and parts: every answer is a 2xx or a 4xx OpenAI error, and the
    server stays up."""
    rng = random.Random(15)
    flac = b64(SPEECH.read_bytes())
    oddities = [None, True, -1, 0, 1e-300, 1e308, float("nan"), "", "\ud800", "x" * 3000, [], {}, [[[[]]]],
                {"type": "text"}, 10 ** 30, "data:audio/wav;base64,AAAA", "http://[::1/x", "\u0000"]

    def odd():
        return copy.deepcopy(rng.choice(oddities))  # a fresh one: a shared list mutated later would loop

    def valid() -> dict:
        return {"model": "qwen-audio-tiny", "max_tokens": 2, "temperature": 0, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": flac, "format": "flac"}},
                                         {"type": "text", "text": "what?"}]}]}

    def mutate(node, depth=0):
        """Replace one value somewhere in `node` with an oddity (or drop a key)."""
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if depth > 0 and rng.random() < 0.5:
                node[key] = mutate(node[key], depth + 1)
            elif rng.random() < 0.2:
                del node[key]
            else:
                node[key] = odd()
        elif isinstance(node, list) and node:
            i = rng.randrange(len(node))
            node[i] = mutate(node[i], depth + 1) if rng.random() < 0.6 else odd()
        else:
            return odd()
        return node

    statuses = []
    for i in range(300):
        body = valid()
        for _ in range(rng.randint(1, 3)):
            body = mutate(body, depth=1 if rng.random() < 0.8 else 0)
        data = json.dumps(body).encode()
        if i % 10 == 0:  # bytes, not JSON: cut, flipped
            data = bytearray(data[: rng.randrange(len(data))])
            for _ in range(5):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        status, _, raw = post_json(tiny, data)
        statuses.append(status)
        assert status < 500, (body, raw)
        if status >= 400:
            assert json.loads(raw)["error"]["message"]
    for _ in range(40):  # multipart forms with odd fields
        fields = {"model": odd(), "response_format": rng.choice(["json", "srt", [], "x" * 50]),
                  "language": rng.choice(["en", "zz", "", "\ud800"]), "temperature": rng.choice(["0", "nan", "-1", ""]),
                  "stream": rng.choice(["true", "false", "maybe"])}
        boundary = "b0undary"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{json.dumps(v)[:60]}\r\n'
                 for k, v in fields.items() if rng.random() < 0.7]
        if rng.random() < 0.7:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.flac"\r\n'
                         f"Content-Type: audio/flac\r\n\r\n")
        data = "".join(parts).encode("utf-8", "surrogatepass")
        if parts and parts[-1].endswith("\r\n\r\n"):
            data += SPEECH.read_bytes()[: rng.choice([0, 10, 5000])] + b"\r\n"
        data += f"--{boundary}--\r\n".encode() if rng.random() < 0.8 else b""
        status, _, raw = post(tiny, "/v1/audio/transcriptions", data,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        statuses.append(status)
        assert status < 500, (fields, raw)
    assert health(tiny)["status"] == "ok"
    assert statuses.count(200) > 5 and sum(400 <= s < 500 for s in statuses) > 200  # both kinds were reached


# ---- 6. browsers and slow clients --------------------------------------------------------------------------------


def test_cross_site_requests_are_refused(tiny):
    hi = json.dumps({"messages": [{"role": "user", "content": "hi"}], **GREEDY}).encode()
    status, _, body = post(tiny, "/v1/chat/completions", hi, {"Content-Type": "text/plain"})  # a simple request
    assert status == 415 and json.loads(body)["error"]["code"] == "invalid_content_type"
    status, _, body = post_json(tiny, hi, Origin="https://evil.example")
    assert status == 403 and json.loads(body)["error"]["code"] == "origin_not_allowed"
    for route in MULTIPART_ROUTES:  # a form is a simple request too: refused by its Origin
        status, _, body = post(tiny, route, b"--x--\r\n", {"Content-Type": "multipart/form-data; boundary=x", "Origin": "null"})
        assert status == 403, (route, body)
    assert post_json(tiny, hi, Origin=tiny.url)[0] == 200  # the web page's own origin
    status, headers, _ = post(tiny, "/v1/chat/completions", None, {"Origin": "https://evil.example",
                                                                   "Access-Control-Request-Method": "POST"}, "OPTIONS")
    assert "Access-Control-Allow-Origin" not in headers  # no CORS unless --cors-origin says so


def test_dns_rebinding_is_refused_by_the_host_check(tiny):
    for host in ("evil.example", f"evil.example:{tiny.port}", "127.0.0.1.nip.io"):
        req = urllib.request.Request(tiny.url + "/v1/models", headers={"Host": host})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400 and json.load(e.value)["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{tiny.port}", f"127.0.0.1:{tiny.port}", "localhost"):
        req = urllib.request.Request(tiny.url + "/health", headers={"Host": host})
        assert urllib.request.urlopen(req, timeout=10).status == 200


def test_cors_allowed_hosts_and_the_connection_cap_are_flags(logs):
    need_shared()
    server = Server(logs, str(TINY), "--dtype", "float32", "--quiet", "--cors-origin", "https://app.example",
                    "--allowed-hosts", "audio.internal", "--max-connections", "3")
    try:
        status, headers, _ = post(server, "/v1/chat/completions", None, {
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"}, "OPTIONS")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
        hi = {"messages": [{"role": "user", "content": "hi"}], **GREEDY}
        status, headers, _ = post_json(server, hi, Origin="https://app.example")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert post_json(server, hi, Origin="https://other.example")[0] == 403
        req = urllib.request.Request(server.url + "/health", headers={"Host": "audio.internal:443"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            time.sleep(0.3)
            answer = raw_http(server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the fourth
            assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
        finally:
            [s.close() for s in idle]
        time.sleep(0.3)
        assert health(server)["status"] == "ok"  # room again
    finally:
        server.stop()


def test_headers_sent_a_byte_at_a_time_are_cut_off(tiny):
    t, got, closed = time.monotonic(), b"", False
    with socket.create_connection(("127.0.0.1", tiny.port)) as s:
        s.settimeout(0.2)
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:  # 40 s at this pace
            try:
                s.sendall(bytes([byte]))
                got = s.recv(4096)
                closed = True  # an answer, or b"": the server has ended it
                break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
    assert closed and time.monotonic() - t < 6  # --header-timeout 1.5
    assert got == b"" or got.startswith(b"HTTP/1.1 408")
    assert health(tiny)["status"] == "ok"


def test_a_silent_connection_is_closed(tiny):
    with socket.create_connection(("127.0.0.1", tiny.port)) as s:
        s.settimeout(10)
        t = time.monotonic()
        first = s.recv(4096)  # the 408, then the end
        assert first.startswith(b"HTTP/1.1 408") and time.monotonic() - t < 6


def test_a_refused_body_reaches_a_client_that_writes_it_all_first(tiny):
    """urllib writes the whole body before reading: it must read the 413, not a reset connection."""
    status, _, body = post_json(tiny, b"x" * (30 << 20))  # 30 MB past the 1 MB limit
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert health(tiny)["status"] == "ok"


def test_the_openai_client_gets_413_too(tiny):
    big = error(lambda: tiny.client().chat.completions.create(
        model="qwen-audio-tiny", messages=[{"role": "user", "content": "x" * (2 << 20)}], **GREEDY))
    assert big.status_code == 413 and big.body["code"] == "request_too_large"
