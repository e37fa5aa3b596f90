"""Fetch an `audio_url` (only with --allow-urls): http(s) to public addresses only, bounded in size and time.

The host is resolved once, every address it resolves to must be public (`is_public`: global unicast,
and any IPv4 address an IPv6 form carries public too), and the connection goes to that vetted address,
so a DNS answer that changes between the check and the connection cannot reach an inside host.
Redirects are followed by checking each new URL the same way, at most MAX_REDIRECTS times. The whole
fetch (resolving, connecting, TLS, headers, body and every redirect) shares one deadline.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from urllib.parse import quote, urljoin, urlsplit

from .protocol import ApiError

MAX_REDIRECTS = 3
_CHUNK = 64 * 1024  # body read size: small enough that the clock is looked at often
_SHOWN = 200  # characters of a URL quoted in an error message

# Networks Python 3.11's `is_global` calls global but that are not public unicast (newer Pythons agree
# on most): all of 192.0.0.0/24 (IETF protocol assignments; 3.11 only knows the /29), site-local
# fec0::/10 (deprecated, routed inside a site), 3fff::/20 (documentation) and 5f00::/16 (SRv6 SIDs).
_NOT_GLOBAL = {
    4: (ipaddress.IPv4Network("192.0.0.0/24"),),
    6: tuple(ipaddress.IPv6Network(n) for n in ("fec0::/10", "3fff::/20", "5f00::/16")),
}
# IPv6 forms whose last 32 bits are an IPv4 address: mapped, compatible, translated (RFC 2765), NAT64.
_V4_IN_LOW_BITS = tuple(ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# NAT64 local-use prefix (RFC 8215): where the IPv4 address sits depends on the operator's prefix length.
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_HOSTNAME = re.compile(r"[a-z0-9_.-]+", re.I)  # a host name after IDNA encoding


def _shown(url: str) -> str:
    """`url` quoted for an error message, cut so a huge URL is not echoed back."""
    return repr(url if len(url) <= _SHOWN else url[:_SHOWN] + "...")


def _refuse(url: str, why: str) -> ApiError:
    return ApiError(400, f"audio_url {_shown(url)} {why}", "audio_url", "url_not_allowed")


def _invalid(url: str, why: str) -> ApiError:
    return ApiError(400, f"audio_url {_shown(url)} {why}", "audio_url", "invalid_url")


def _too_large(url: str, max_bytes: int) -> ApiError:
    return ApiError(413, f"audio_url {_shown(url)} is larger than {max_bytes} bytes", "audio_url", "too_large")


# --- the address rule ---------------------------------------------------------------------------


def _global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global unicast by Python's special-purpose tables, plus the few networks 3.11's tables miss."""
    return ip.is_global and not ip.is_multicast and not any(ip in n for n in _NOT_GLOBAL[ip.version])


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses `ip` carries (() for a plain IPv6 address), or None where we cannot tell which."""
    if ip in _NAT64_LOCAL:
        return None
    if any(ip in n for n in _V4_IN_LOW_BITS):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client); Python already undoes the client's bit inversion
    return ()


def is_public(address: str) -> bool:
    """Whether an audio_url may be fetched from IP address `address` (text, as getaddrinfo gives it).

    It must be global and not multicast, and when it is an IPv6 form that carries an IPv4 address
    (mapped, compatible, translated, NAT64, 6to4, Teredo server and client) each carried address must
    be too: those forms are routed to, or translated into, the IPv4 address, and Python's `is_global`
    judges only the IPv6 prefix. A form that carries one where we cannot tell (the local-use NAT64
    prefix), a zone index (only non-global addresses have one) and anything unparsable are refused.
    """
    if "%" in address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if not _global(ip):
        return False
    if ip.version == 4:
        return True
    embedded = _embedded_ipv4(ip)
    return embedded is not None and all(_global(v4) for v4 in embedded)


# --- the deadline -------------------------------------------------------------------------------


class _Expired(Exception):
    """The fetch's deadline passed; fetch_audio answers it as a url_timeout ApiError."""


def _shut(sock: socket.socket) -> None:
    """Shut `sock` down (both ways), waking any thread blocked on it; an already closed one is fine."""
    try:
        # The plain socket method, also for an SSLSocket: its own shutdown would drop the TLS state
        # under the feet of the thread that is reading.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Deadline:
    """One time budget for a whole fetch: resolving, connecting, TLS, headers, body and all redirects.

    Socket timeouts alone cannot bound a fetch: a server sending a byte just inside each timeout keeps
    every recv alive, and http.client reads the headers a line at a time. So each operation gets the
    time left as its timeout, and a watchdog timer shuts the current socket down at the deadline,
    which wakes whatever is blocked on it. Whatever a read returns after that is not trusted
    (`check`): a shut-down socket looks like a server that ended its answer early.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()  # between the watchdog and watch/unwatch: never shut a reused fd
        self._sock: socket.socket | None = None
        self._expired = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Deadline:
        self._timer = threading.Timer(max(self._end - time.monotonic(), 0.0), self._expire)
        self._timer.name = "audio-url-deadline"
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self._timer.join()  # at once after cancel, or after the watchdog's shutdown

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            if self._sock is not None:
                _shut(self._sock)

    def passed(self) -> bool:
        return self._expired or time.monotonic() >= self._end

    def left(self) -> float:
        """Seconds left (> 0), or _Expired."""
        remaining = self._end - time.monotonic()
        if self._expired or remaining <= 0:
            raise _Expired
        return remaining

    def check(self) -> None:
        """_Expired when the deadline has passed: what was read may have been cut by the watchdog."""
        self.left()

    def watch(self, sock: socket.socket) -> socket.socket:
        """Make `sock` the socket the watchdog shuts down, with the time left as its timeout."""
        with self._lock:
            self._sock = sock
            if self._expired:
                _shut(sock)
        # Never 0 (non-blocking): past the deadline the socket is shut down and the caller checks.
        sock.settimeout(max(self._end - time.monotonic(), 1e-3))
        return sock

    def unwatch(self) -> None:
        """Forget the socket before it is closed, so the watchdog cannot touch its reused descriptor."""
        with self._lock:
            self._sock = None

    def arm(self) -> None:
        """Give the watched socket the time left as its timeout before the next blocking step."""
        left = self.left()
        with self._lock:
            if self._sock is not None:
                self._sock.settimeout(left)

    def error(self, url: str) -> ApiError:
        return ApiError(400, f"audio_url {_shown(url)} took longer than {self.seconds:g} s to fetch",
                        "audio_url", "url_timeout")


# --- URLs and addresses -------------------------------------------------------------------------


def _ascii_host(url: str, parts) -> str:
    """The URL's host as sent to DNS and in Host/SNI: IDNA-encoded, or a bracketed IPv6 literal."""
    host = parts.hostname
    if not host:
        raise _invalid(url, "has no host")
    if "[" in parts.netloc:  # a bracketed host must be an IPv6 address, not an IPvFuture or a name
        host = host.replace("%25", "%", 1)  # RFC 6874 writes the zone index's "%" as "%25"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _invalid(url, "has a bracketed host that is not an IPv6 address") from None
        return host
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:  # an empty or 64+ character label, or characters IDNA refuses
        raise _invalid(url, "has a host name that is not valid") from None
    if not _HOSTNAME.fullmatch(host):
        raise _invalid(url, "has a host name that is not valid")
    return host


def _resolve(host: str, port: int, deadline: _Deadline | None) -> list:
    """getaddrinfo for `host`, within the deadline when there is one.

    getaddrinfo has no timeout, so it runs in a daemon thread joined with the time left; a lookup
    still running then is abandoned, and ends on its own with the resolver's timeout.
    """
    if deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    box: list = []

    def lookup():
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as e:  # handed to the caller's thread
            box.append(e)

    worker = threading.Thread(target=lookup, name="audio-url-resolve", daemon=True)
    worker.start()
    worker.join(deadline.left())
    if not box:
        raise _Expired
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def vetted_address(url: str, deadline: _Deadline | None = None) -> tuple[str, str, int, str]:
    """(scheme, host, port, address) for `url`, or ApiError when it may not be fetched.

    `host` is the ASCII (IDNA) host name for Host and the certificate check, `address` the vetted
    address to connect to. Malformed URLs are 400 invalid_url; well-formed ones that may not be
    fetched are 400 url_not_allowed. With a `deadline`, resolving is bounded by it (_Expired).
    """
    if not isinstance(url, str) or any(c.isspace() or not c.isprintable() for c in url):
        # urlsplit would quietly drop some of these (tabs, newlines); refuse them instead
        raise _invalid(str(url), "contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:  # unbalanced brackets, a port that is not a number from 0 to 65535, ...
        raise _invalid(url, f"is not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise _invalid(url, "is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise _refuse(url, "carries credentials")
    if port == 0:
        raise _invalid(url, "has port 0")
    host = _ascii_host(url, parts)
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = _resolve(host, port, deadline)
    except socket.gaierror as e:
        raise _refuse(url, f"names a host that does not resolve ({e.strerror})") from None
    except (OSError, UnicodeError, ValueError) as e:
        raise _invalid(url, f"names a host that cannot be looked up ({type(e).__name__})") from None
    addresses = {info[4][0] for info in infos}
    if not addresses:
        raise _refuse(url, "names a host that does not resolve")
    for a in sorted(addresses):
        if not is_public(a):
            raise _refuse(url, f"resolves to {a}, which is not a public address")
    return parts.scheme, host, port, sorted(addresses)[0]


# --- connections --------------------------------------------------------------------------------


def _open(address: str, port: int, deadline: _Deadline) -> socket.socket:
    """A TCP connection to the vetted address within the time left, watched by the deadline."""
    return deadline.watch(socket.create_connection((address, port), deadline.left()))


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to a vetted address, within a deadline."""

    def __init__(self, host: str, address: str, port: int, deadline: _Deadline):
        super().__init__(host, port, timeout=deadline.left())
        self._address = address
        self._deadline = deadline

    def connect(self):
        self.sock = _open(self._address, self.port, self._deadline)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a vetted address, with the certificate checked for the URL's host name, within a deadline."""

    def __init__(self, host: str, address: str, port: int, deadline: _Deadline):
        super().__init__(host, port, timeout=deadline.left(), context=ssl.create_default_context())
        self._address = address
        self._deadline = deadline

    def connect(self):
        self.sock = _open(self._address, self.port, self._deadline)
        # The handshake is started by hand once the TLS socket is the watched one, so the watchdog
        # can also cut a handshake that a server drips.
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self._deadline.watch(self.sock)
        self.sock.do_handshake()


def _host_header(host: str, port: int, scheme: str) -> str:
    """The Host header: brackets around an IPv6 literal, the port unless it is the scheme's default."""
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


def _request_target(url: str) -> str:
    """Path and query of `url`, with any non-ASCII character percent-encoded (http.client sends ASCII)."""
    target = urlsplit(url)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    return "".join(c if c.isascii() else quote(c) for c in path)


def _read_body(r: http.client.HTTPResponse, url: str, max_bytes: int, deadline: _Deadline) -> bytes:
    """The response body in chunks, the clock checked before each, or 413 past `max_bytes`."""
    data = bytearray()
    while True:
        deadline.arm()
        chunk = r.read1(min(_CHUNK, max_bytes + 1 - len(data)))  # returns as soon as anything arrives
        if not chunk:
            break
        data += chunk
        if len(data) > max_bytes:
            raise _too_large(url, max_bytes)
    if r.length:  # read1 ends quietly at an early end of a Content-Length body
        raise http.client.IncompleteRead(bytes(data), r.length)
    return bytes(data)


def _get(url: str, max_bytes: int, deadline: _Deadline) -> tuple[bytes | None, str | None]:
    """One GET of `url`: (body, None), or (None, Location) for a redirect; ApiError or _Expired otherwise."""
    scheme, host, port, address = vetted_address(url, deadline)
    pinned = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    conn = pinned(host, address, port, deadline)
    r = None
    try:
        conn.request("GET", _request_target(url),
                     headers={"Host": _host_header(host, port, scheme), "User-Agent": "qwen-audio", "Accept": "audio/*"})
        deadline.arm()
        r = conn.getresponse()
        deadline.check()  # a status line and headers cut short by the watchdog are not an answer
        if r.status in (301, 302, 303, 307, 308) and r.getheader("Location"):
            return None, r.getheader("Location")
        if r.status != 200:
            raise _refuse(url, f"answered HTTP {r.status}")
        length = r.getheader("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise _too_large(url, max_bytes)
        data = _read_body(r, url, max_bytes, deadline)
        deadline.check()  # nor is a body that ended because the watchdog shut the socket
        return data, None
    except (OSError, ValueError, http.client.HTTPException) as e:
        if isinstance(e, TimeoutError) or deadline.passed():  # each timeout is the time left
            raise _Expired from None
        raise _refuse(url, f"could not be fetched ({type(e).__name__}: {e})") from None
    finally:
        deadline.unwatch()
        if r is not None:
            r.close()
        conn.close()


def _redirected(url: str, location: str) -> str:
    """The absolute URL a redirect's Location names (it is vetted like any other by the next _get)."""
    try:
        return urljoin(url, location)
    except ValueError:
        raise _invalid(location, f"(a redirect from {_shown(url)}) is not a valid URL") from None


def fetch_audio(url: str, max_bytes: int, timeout: float) -> bytes:
    """The body at `url` (at most `max_bytes`, all of it within `timeout` seconds), or ApiError.

    `timeout` bounds the whole fetch, redirects included; past it the error is 400 url_timeout.
    """
    deadline = _Deadline(timeout)
    try:
        with deadline:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                data, location = _get(current, max_bytes, deadline)
                if data is not None:
                    return data
                current = _redirected(current, location)
            raise _refuse(url, f"redirects more than {MAX_REDIRECTS} times")
    except _Expired:
        raise deadline.error(url) from None
