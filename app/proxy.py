"""Who the client is and which address it used, believing forwarded headers only from proxies.

`X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` are believed only when the
connection itself comes from an address in `TRUSTED_PROXIES`; from anyone else they are
removed, so nothing further in can believe them by accident. Rate limits (per client IP),
log lines and the URLs this server writes all read the result.

Why our own middleware rather than uvicorn's `--forwarded-allow-ips`: it works whatever
runs the app (uvicorn, another ASGI server, the tests' in-process transport), one setting
drives all three headers (uvicorn's ignores `X-Forwarded-Host`), and the URL base needs to
know the request came through a trusted proxy. `timeless serve` turns uvicorn's own
handling off, which would otherwise have rewritten the client before this layer saw it.
"""

import ipaddress
import re
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import WILDCARD_HOSTS, Settings, TrustedNetwork
from app.log import client_ip_var

_FORWARDED_FOR: Final = b"x-forwarded-for"
_FORWARDED_PROTO: Final = b"x-forwarded-proto"
_FORWARDED_HOST: Final = b"x-forwarded-host"
_FORWARDED: Final = frozenset({_FORWARDED_FOR, _FORWARDED_PROTO, _FORWARDED_HOST})
_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
# host[:port], a name or an IPv4/bracketed IPv6 address: nothing that could bend a URL.
_HOST: Final = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")

# The scope of the request being served, as this layer passed it on: its origin is worked out
# only when a URL is written (`request_origin`), not for every request.
_request_scope: ContextVar[Scope | None] = ContextVar("request_scope", default=None)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxyMiddleware:
    """Rewrites the client address, scheme and Host from a trusted proxy's headers."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[TrustedNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # Most requests carry no forwarded header at all: then there is nothing to remove or
        # believe, and the scope is passed on as it came (this runs on every request).
        # (The header names are looked up in C: a dict of them, against the set.)
        if not _FORWARDED.isdisjoint(dict(scope["headers"])):
            scope = dict(scope)
            headers: list[tuple[bytes, bytes]] = list(scope["headers"])
            forwarded = [(name, value) for name, value in headers if name in _FORWARDED]
            kept = [(name, value) for name, value in headers if name not in _FORWARDED]
            peer = scope.get("client")
            if peer is not None and self._is_trusted(_address(peer[0])):
                kept = self._apply(scope, forwarded, kept)
            scope["headers"] = kept
        client = scope.get("client")
        served = _request_scope.set(scope)
        client_ip = client_ip_var.set(client[0] if client else None)
        try:
            await self.app(scope, receive, send)
        finally:
            _request_scope.reset(served)
            client_ip_var.reset(client_ip)

    def _apply(
        self,
        scope: Scope,
        forwarded: list[tuple[bytes, bytes]],
        headers: list[tuple[bytes, bytes]],
    ) -> list[tuple[bytes, bytes]]:
        values: dict[bytes, list[str]] = {}
        for name, value in forwarded:
            items = [item.strip() for item in value.decode("latin-1").split(",")]
            values.setdefault(name, []).extend(item for item in items if item)
        hops = values.get(_FORWARDED_FOR, [])
        if hops:
            scope["client"] = (self._client(scope["client"][0], hops), 0)
        # The last value is the one the nearest (trusted) proxy wrote.
        proto = values.get(_FORWARDED_PROTO, [""])[-1].lower()
        if proto in _SCHEMES:
            scheme = _SCHEMES[proto]
            websocket = scope["type"] == "websocket"
            scope["scheme"] = scheme.replace("http", "ws") if websocket else scheme
        host = values.get(_FORWARDED_HOST, [""])[-1]
        if _HOST.match(host):
            headers = [(name, value) for name, value in headers if name != b"host"]
            headers.append((b"host", host.encode("latin-1")))
        return headers

    def _client(self, peer: str, hops: list[str]) -> str:
        """Walk the chain from the nearest hop while it is a trusted proxy.

        The first address that is not one is the client; each entry to its left was written
        by the client itself and proves nothing. An entry that is not an address stops the
        walk at the last good one.
        """
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            client = str(address)
            if not self._is_trusted(address):
                break
        return client

    def _is_trusted(self, address: IpAddress | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)


def _address(value: str) -> IpAddress | None:
    """An IP address from a peer or a forwarded hop ("1.2.3.4", "1.2.3.4:80", "[::1]:80")."""
    text = value.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A server listening on "::" sees IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def request_origin() -> str | None:
    """scheme://host[:port] of the request being served, as the client reached it (through a
    trusted proxy, as the proxy received it); None outside a request or when the Host header
    is missing or unusable."""
    scope = _request_scope.get()
    if scope is None:
        return None
    host = next((value for name, value in scope["headers"] if name == b"host"), b"")
    text = host.decode("latin-1").strip()
    if not _HOST.match(text) or text.rsplit(":", 1)[0] in WILDCARD_HOSTS:
        return None
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{text}"


def public_base_url(settings: Settings) -> str:
    """Where clients reach this server, for the URLs it writes (signed storage URLs).

    `PUBLIC_BASE_URL` when set; else the origin of the request being served (through a
    trusted proxy, as the proxy received it); outside a request, HOST:PORT, with loopback
    standing in for a wildcard address such as 0.0.0.0, which no client can reach.
    """
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    return request_origin() or settings.base_url
