"""Fetch an `audio_url` (only with --allow-urls): http(s) to public addresses only, bounded in size and time.

The host is resolved once, every address it resolves to must be public (not loopback, private,
link-local, multicast or reserved), and the connection goes to that vetted address, so a DNS answer
that changes between the check and the connection cannot reach an inside host. Redirects are followed
by checking each new URL the same way, at most MAX_REDIRECTS times.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urljoin, urlsplit

from .protocol import ApiError

MAX_REDIRECTS = 3


def _refuse(url: str, why: str) -> ApiError:
    return ApiError(400, f"audio_url {url!r} {why}", "audio_url", "url_not_allowed")


def vetted_address(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, address) for `url`, or ApiError when it may not be fetched."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(url, "is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise _refuse(url, "carries credentials")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise _refuse(url, f"names a host that does not resolve ({e.strerror})") from None
    addresses = {info[4][0] for info in infos}
    for a in addresses:
        ip = ipaddress.ip_address(a.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise _refuse(url, f"resolves to {a}, which is not a public address")
    return parts.scheme, parts.hostname, port, sorted(addresses)[0]


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a vetted address, with the certificate checked for the URL's host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_audio(url: str, max_bytes: int, timeout: float) -> bytes:
    """The body at `url` (at most `max_bytes`, within `timeout` seconds per step), or ApiError."""
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, address = vetted_address(url)
        target = urlsplit(url)
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        if scheme == "https":
            conn = _PinnedHTTPS(host, address, port, timeout)
        else:
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host, "User-Agent": "qwen-audio", "Accept": "audio/*"})
            r = conn.getresponse()
            if r.status in (301, 302, 303, 307, 308) and r.getheader("Location"):
                url = urljoin(url, r.getheader("Location"))
                continue
            if r.status != 200:
                raise _refuse(url, f"answered HTTP {r.status}")
            length = r.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ApiError(413, f"audio_url {url!r} is larger than {max_bytes} bytes", "audio_url", "too_large")
            data = r.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ApiError(413, f"audio_url {url!r} is larger than {max_bytes} bytes", "audio_url", "too_large")
            return data
        except (OSError, http.client.HTTPException) as e:
            raise _refuse(url, f"could not be fetched ({type(e).__name__}: {e})") from None
        finally:
            conn.close()
    raise _refuse(url, f"redirects more than {MAX_REDIRECTS} times")
