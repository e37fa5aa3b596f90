"""Fetching an `audio_url` (server flag --allow-urls): only public addresses, one deadline, clean 400s.

Nothing here leaves this machine: refused URLs are checked against a guard on socket.create_connection
and a listener on loopback that must see no connection, and the fetches that should succeed go to local
servers on 127.0.0.1 reached by monkeypatching the address rule to allow just that address.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from qwen_audio.server import fetch
from qwen_audio.server.fetch import MAX_REDIRECTS, fetch_audio, is_public
from qwen_audio.server.protocol import ApiError

TIMEOUT = 1.5  # the fetch's whole budget in the deadline tests
DRIP = 0.3  # seconds between dripped bytes: far inside any per-recv timeout

# IPv6 forms that carry a non-public IPv4 address (127.0.0.1 unless said), and every other non-public form.
EMBEDDED = [
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:0:7f00:1",  # IPv4-translated (::ffff:0:0/96)
    "64:ff9b::7f00:1",  # NAT64 well-known prefix
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::7f00:1",  # NAT64 local-use prefix (refused whatever it carries)
    "64:ff9b:1::808:808",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:808:808:0:f7f7:f7f7:f7f7",  # Teredo with a public server and client: 2001::/32 is not global
]
NOT_PUBLIC = EMBEDDED + [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "192.0.0.8", "192.0.2.1", "198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255",
    "::", "::1", "fe80::1", "fe80::1%lo", "fec0::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1",
    "2001:db8::1", "100::1", "3fff::1",
    "", "not-an-address", "127.1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "64:ff9b::808:808", "::ffff:8.8.8.8"]

# URLs with a host that is refused; "{p}" is the loopback listener's port, so a connection would be seen.
REFUSED_URLS = [f"http://[{a}]:{{p}}/a.wav" for a in EMBEDDED] + [
    "http://127.0.0.1:{p}/a.wav", "https://127.0.0.1:{p}/a.wav", "http://localhost:{p}/a.wav",
    "http://2130706433:{p}/", "http://0x7f.1:{p}/", "http://017700000001:{p}/", "http://127.1:{p}/",
    "http://0.0.0.0:{p}/", "http://0:{p}/", "http://[::]:{p}/", "http://[::1]:{p}/",
    "http://[fe80::1%25lo]:{p}/", "http://[fec0::1]:{p}/", "http://[fd00::1]:{p}/",
    "http://10.0.0.1:{p}/", "http://169.254.169.254:{p}/latest/meta-data/", "http://100.64.0.1:{p}/",
    "http://224.0.0.1:{p}/", "http://[ff02::1]:{p}/",
]

MALFORMED = [
    "http://1.2.3.4:99999/", "http://[::1/x", "http://example.com:abc/", "http://example.com:0/",
    "http://" + "a" * 64 + ".example/", "http://a..example/", "http://\u0000/", "http://\u0000example.com/",
    "", "http://", "http:///a.wav", "http://:80/a.wav", "//example.com/a.wav", "example.com/a.wav",
    "ftp://example.com/a.wav", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)",
    "data:audio/wav;base64,AAAA", "http://exa mple.com/", "http://example.com/a b.wav",
    "http://example.com/\r\nX-Injected: 1", "\thttp://example.com/", "http://example.com/\x7f",
    "http://example.com\\x/", "http://[v1.x]/", "http://[example.com]/", "http://user:pw@example.com/",
    "ftp://example.com/" + "x" * 100_000,
]


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every thread a test starts (servers, the fetch's watchdog and resolver) is gone when it ends."""
    before = set(threading.enumerate())
    yield
    end = time.monotonic() + 3
    while (left := [t for t in threading.enumerate() if t not in before]) and time.monotonic() < end:
        time.sleep(0.05)
    assert not left, f"threads left running: {left}"


@pytest.fixture
def no_outside_connections(monkeypatch):
    """Fail (without connecting) any connection fetch makes to a host other than 127.0.0.1 or ::1."""
    attempts = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        attempts.append(address)
        if address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError(f"test guard: no connection to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(fetch.socket, "create_connection", guarded)
    return attempts


@pytest.fixture
def only_loopback_v4(monkeypatch):
    """The address rule, for this test only, allowing 127.0.0.1 (and nothing else)."""
    monkeypatch.setattr(fetch, "is_public", lambda address: address == "127.0.0.1")


@pytest.fixture
def listeners():
    """(port, sockets): listening on 127.0.0.1 and, where it exists, ::1, at the same port."""
    for _ in range(20):
        v4 = socket.socket(socket.AF_INET)
        v4.bind(("127.0.0.1", 0))
        port = v4.getsockname()[1]
        socks = [v4]
        if socket.has_ipv6:
            v6 = socket.socket(socket.AF_INET6)
            try:
                v6.bind(("::1", port))
                socks.append(v6)
            except OSError as e:
                v6.close()
                if e.errno == 98:  # EADDRINUSE: try another port
                    v4.close()
                    continue
        break
    for s in socks:
        s.listen(16)
        s.setblocking(False)
    yield port, socks
    for s in socks:
        s.close()


def accepted(socks) -> int:
    """How many connections wait on the listeners (a connection closed since still counts)."""
    n = 0
    for s in socks:
        while True:
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                break
            conn.close()
            n += 1
    return n


def bounded(fn, limit: float = 10.0) -> tuple[BaseException | object, float]:
    """(what fn raised or returned, seconds): in a thread, so a fetch that hangs fails the test instead."""
    box = {}

    def run():
        start = time.monotonic()
        try:
            box["outcome"] = fn()
        except BaseException as e:
            box["outcome"] = e
        box["seconds"] = time.monotonic() - start

    worker = threading.Thread(target=run, name="test-fetch", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        pytest.fail(f"the fetch was still running after {limit} s")
    return box["outcome"], box["seconds"]


class Routes(http.server.BaseHTTPRequestHandler):
    """The local audio server's answers, by path."""

    protocol_version = "HTTP/1.1"
    seen: list  # (path, Host header) of each request, set per server

    def log_message(self, *args):
        pass

    def send(self, status: int, body: bytes = b"", headers: dict | None = None, length: bool = True):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Host")))
        if self.path == "/audio":
            self.send(200, b"RIFF" * 25)
        elif self.path == "/redirect":
            self.send(302, headers={"Location": "/audio"})
        elif self.path == "/big":
            self.send(200, b"x" * 1000)
        elif self.path == "/big-unsized":
            self.send(200, b"x" * 1000, length=False)
            self.close_connection = True
        elif self.path == "/short":  # promises more than it sends
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
        elif self.path == "/loop":
            self.send(302, headers={"Location": "/loop"})
        elif self.path == "/to-ftp":
            self.send(302, headers={"Location": "ftp://127.0.0.1/a.wav"})
        elif self.path == "/to-bad":
            self.send(302, headers={"Location": "http://[::1/x"})
        elif self.path == "/to-inside":
            self.send(302, headers={"Location": f"http://[::1]:{self.server.server_port}/audio"})
        elif self.path.startswith("/slow/"):  # each hop well inside a per-step timeout, together past the budget
            time.sleep(0.6)
            self.send(302, headers={"Location": f"/slow/{int(self.path[6:]) + 1}"})
        else:
            self.send(404)


@pytest.fixture
def audio_server():
    """(port, seen) of a local HTTP server answering `Routes`, stopped and joined at the end."""
    seen = []
    handler = type("Handler", (Routes,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = False  # so server_close joins the request threads
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-audio-server")
    serving.start()
    yield server.server_port, seen
    server.shutdown()
    server.server_close()
    serving.join()


def drip_server(prefix: bytes):
    """A fixture factory: (port) of a server that answers `prefix`, then one byte every DRIP s forever."""

    @pytest.fixture
    def serve():
        stop = threading.Event()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)

        def handle(conn):
            with conn:
                try:
                    conn.settimeout(0.5)
                    if prefix:
                        conn.recv(65536)  # the request
                        conn.sendall(prefix)
                    while not stop.wait(DRIP):
                        if prefix:
                            conn.sendall(b"x")
                except OSError:  # the client shut the connection down
                    pass

        def serve_forever():
            conns = []
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                conns.append(threading.Thread(target=handle, args=(conn,), name="test-drip-conn"))
                conns[-1].start()
            for t in conns:
                t.join()

        serving = threading.Thread(target=serve_forever, name="test-drip-server")
        serving.start()
        yield listener.getsockname()[1]
        stop.set()
        serving.join()
        listener.close()

    return serve


drip_headers = drip_server(b"HTTP/1.1 200 OK\r\n")  # then the headers never end
drip_body = drip_server(b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nConnection: close\r\n\r\n")
drip_sized_body = drip_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
silent = drip_server(b"")  # accepts and says nothing (a TLS handshake that never ends)


def assert_timed_out(outcome, seconds):
    assert isinstance(outcome, ApiError), f"expected a url_timeout ApiError, got {outcome!r}"
    assert (outcome.status, outcome.code, outcome.param) == (400, "url_timeout", "audio_url"), outcome
    assert f"longer than {TIMEOUT:g} s" in outcome.message
    assert seconds < TIMEOUT + 2, f"the fetch took {seconds:.1f} s with a {TIMEOUT} s budget"


# --- the address rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_rule_refuses_non_public_addresses(address):
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_rule_accepts_public_addresses(address):
    assert is_public(address)


# --- refused and malformed URLs -----------------------------------------------------------------


@pytest.mark.parametrize("template", REFUSED_URLS)
def test_refused_urls_never_connect(template, listeners, no_outside_connections):
    port, socks = listeners
    url = template.format(p=port)
    with pytest.raises(ApiError) as e:
        fetch_audio(url, 1000, 2.0)
    assert (e.value.status, e.value.param) == (400, "audio_url")
    assert e.value.code in ("url_not_allowed", "invalid_url"), e.value
    assert no_outside_connections == [], f"{url} was connected to"
    assert accepted(socks) == 0, f"{url} reached the loopback listener"


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_400s(url, monkeypatch, no_outside_connections):
    def no_lookups(*args, **kwargs):
        raise AssertionError(f"a malformed URL was looked up: {args}")

    monkeypatch.setattr(fetch.socket, "getaddrinfo", no_lookups)
    outcome, _ = bounded(lambda: fetch_audio(url, 1000, 2.0))
    assert isinstance(outcome, ApiError), f"{url[:80]!r} raised {outcome!r}"
    assert (outcome.status, outcome.param) == (400, "audio_url")
    assert outcome.code in ("invalid_url", "url_not_allowed"), outcome
    assert len(outcome.message) < 300  # a huge URL is not echoed back whole
    assert no_outside_connections == []


# --- the deadline -------------------------------------------------------------------------------


@pytest.mark.usefixtures("only_loopback_v4")
@pytest.mark.parametrize("server", ["drip_headers", "drip_body", "drip_sized_body"])
def test_a_dripping_server_cannot_outlast_the_deadline(server, request):
    port = request.getfixturevalue(server)
    outcome, seconds = bounded(lambda: fetch_audio(f"http://127.0.0.1:{port}/a.wav", 10_000_000, TIMEOUT))
    assert_timed_out(outcome, seconds)


@pytest.mark.usefixtures("only_loopback_v4")
def test_a_tls_handshake_cannot_outlast_the_deadline(silent):
    outcome, seconds = bounded(lambda: fetch_audio(f"https://127.0.0.1:{silent}/a.wav", 1000, TIMEOUT))
    assert_timed_out(outcome, seconds)


@pytest.mark.usefixtures("only_loopback_v4")
def test_redirects_share_one_deadline(audio_server):
    port, seen = audio_server
    outcome, seconds = bounded(lambda: fetch_audio(f"http://127.0.0.1:{port}/slow/0", 1000, TIMEOUT))
    assert_timed_out(outcome, seconds)
    assert 2 <= len(seen) <= MAX_REDIRECTS  # it got into the chain, and stopped before running out of hops


# --- ordinary fetches ---------------------------------------------------------------------------


@pytest.mark.usefixtures("only_loopback_v4")
def test_fetch_returns_the_body_and_follows_a_redirect(audio_server):
    port, seen = audio_server
    assert fetch_audio(f"http://127.0.0.1:{port}/audio", 1000, 5.0) == b"RIFF" * 25
    assert fetch_audio(f"http://127.0.0.1:{port}/redirect", 1000, 5.0) == b"RIFF" * 25
    assert [path for path, _ in seen] == ["/audio", "/redirect", "/audio"]
    assert {host for _, host in seen} == {f"127.0.0.1:{port}"}


@pytest.mark.usefixtures("only_loopback_v4")
@pytest.mark.parametrize("path", ["/big", "/big-unsized"])
def test_fetch_enforces_max_bytes(audio_server, path):
    port, _ = audio_server
    with pytest.raises(ApiError) as e:
        fetch_audio(f"http://127.0.0.1:{port}{path}", 100, 5.0)
    assert (e.value.status, e.value.code) == (413, "too_large")
    assert fetch_audio(f"http://127.0.0.1:{port}{path}", 1000, 5.0) == b"x" * 1000


@pytest.mark.usefixtures("only_loopback_v4")
@pytest.mark.parametrize(("path", "code"), [
    ("/loop", "url_not_allowed"),  # more than MAX_REDIRECTS
    ("/to-ftp", "invalid_url"),
    ("/to-bad", "invalid_url"),
    ("/to-inside", "url_not_allowed"),  # ::1 is not allowed, even with the rule loosened to 127.0.0.1
    ("/short", "url_not_allowed"),  # a body cut short is not audio
    ("/missing", "url_not_allowed"),
])
def test_bad_answers_and_redirects_are_400s(audio_server, path, code, no_outside_connections):
    port, seen = audio_server
    outcome, _ = bounded(lambda: fetch_audio(f"http://127.0.0.1:{port}{path}", 10_000, 5.0))
    assert isinstance(outcome, ApiError), outcome
    assert (outcome.status, outcome.code) == (400, code), outcome
    assert all(address[0] == "127.0.0.1" for address in no_outside_connections)
    assert len(seen) <= MAX_REDIRECTS + 1
