"""Who may talk to a server on this machine: the Host and Origin checks that browsers make necessary.

A page of another site can make a visitor's browser send requests to a server on loopback: a form
or `text/plain` POST needs no CORS preflight (cross-site request forgery), and a domain that
re-resolves to 127.0.0.1 makes even same-origin requests reach it (DNS rebinding). So:

* `host_allowed`: the Host header must name the server as it was bound. An IP literal cannot be
  rebound, so literals that reach the bound address are accepted (any literal on a wildcard bind);
  a name must be `localhost` (loopback and wildcard binds), the bound name, or in --allowed-hosts.
* `origin_allowed`: a request that changes state and carries an Origin header must come from the
  server's own origin (the web page) or from one of the --cors-origin origins.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

WILDCARDS = ("", "0.0.0.0", "::")


def split_host(host: str) -> str:
    """The host of a Host header value, lower case, without port, brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_allowed(host: str, bind: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a request whose Host header is `host` may be answered by a server bound to `bind`."""
    if not host:  # HTTP/1.0 without Host: not a browser
        return True
    name, bind = split_host(host), split_host(bind)
    if "*" in allowed or name in (split_host(a) for a in allowed):
        return True
    ip, bound = _ip(name), _ip(bind)
    wildcard = bind in WILDCARDS
    loopback = bind == "localhost" or (bound is not None and bound.is_loopback)
    if ip is not None:
        return wildcard or ip == bound or (loopback and ip.is_loopback)
    return name == bind or (name == "localhost" and (wildcard or loopback))


def origin_allowed(origin: str | None, host: str, cors_origins: tuple[str, ...] = ()) -> bool:
    """Whether a state-changing request with this Origin header may go on. No Origin: not sent by a
    browser's cross-site request (they always send one on POST), so allowed. The page's own origin
    has the Host header as its authority."""
    if origin is None:
        return True
    origin = origin.strip()
    if "*" in cors_origins or origin in cors_origins:
        return True
    try:
        parts = urlsplit(origin)
        authority = parts.netloc
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(authority) and authority.lower() == host.strip().lower()
